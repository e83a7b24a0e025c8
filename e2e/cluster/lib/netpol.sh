# The local cluster's NetworkPolicy engine: kube-router in firewall-only mode (no routing, no
# service proxy, no CNI), built from its Go module with the module in e2e/cluster/kube-router
# (which raises the dependencies that have security advisories against the served version).
# It enforces NetworkPolicy with iptables and ipsets on top of the bridge CNI and kube-proxy.
#
# Facts that shaped it (see docs/local-cluster.md):
# - Traffic from the node itself to a Pod is always accepted (kube-router puts a LOCAL-source
#   accept first in every Pod chain, as the NetworkPolicy API allows); Pod to node is filtered
#   by the Pod's egress policy.
# - Its --cleanup-config panics without IPVS and leaves its chains; `down` removes them with
#   every other KUBE- rule, and destroys its ipsets (KUBE-SRC-*, KUBE-DST-*) afterwards.
# - It does not set bridge-nf-call-iptables in this mode; without it bridged Pod-to-Pod traffic
#   skips iptables, so `up` refuses to start the engine if that sysctl cannot be set.

KUBE_ROUTER_VERSION=v2.1.0
KX_KUBE_ROUTER_MODULE="$KX_CLUSTER_DIR/kube-router"
KX_KUBE_ROUTER_HEALTH_PORT=20244

# The binary, cached by the build module's content: raising a dependency rebuilds it.
kube_router_bin() {
  local sum
  sum=$(cat "$KX_KUBE_ROUTER_MODULE/go.mod" "$KX_KUBE_ROUTER_MODULE/go.sum" | sha256sum | cut -c1-12)
  echo "$KX_CACHE/kube-router-$KUBE_ROUTER_VERSION-$sum/kube-router"
}

build_kube_router() {
  local bin; bin=$(kube_router_bin)
  if [ -x "$bin" ]; then log "    kube-router $KUBE_ROUTER_VERSION cached in $bin"; return 0; fi
  mkdir -p "$(dirname "$bin")"
  log "    compiling kube-router $KUBE_ROUTER_VERSION from its Go module (about 2 min on 2 cores)"
  (
    cd "$KX_KUBE_ROUTER_MODULE"
    GOFLAGS=-mod=readonly CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$bin.tmp" \
      github.com/cloudnativelabs/kube-router/v2/cmd/kube-router 2>&1 | grep -v '^go: downloading' >&2
    [ -x "$bin.tmp" ]
  ) || { rm -f "$bin.tmp"; die "could not build kube-router $KUBE_ROUTER_VERSION"; }
  mv -f "$bin.tmp" "$bin"
  log "    built $bin"
}

start_kube_router() {
  # Bridged traffic must pass iptables, or policies between Pods on the bridge do nothing.
  sysctl -qw net.bridge.bridge-nf-call-iptables=1 ||
    die "net.bridge.bridge-nf-call-iptables cannot be set: NetworkPolicy would not be enforced"
  start_component kube-router "$(kube_router_bin)" \
    --run-firewall=true --run-router=false --run-service-proxy=false --enable-cni=false \
    --kubeconfig="$KX_KUBECONFIG" --hostname-override="$KX_NODE_NAME" \
    --service-cluster-ip-range="$KX_SERVICE_CIDR" \
    --health-port="$KX_KUBE_ROUTER_HEALTH_PORT" --metrics-port=0
  wait_until 60 "kube-router /healthz" curl -fsS "http://127.0.0.1:$KX_KUBE_ROUTER_HEALTH_PORT/healthz"
}

# Its ipsets, once no rule refers to them any more (after remove_network).
remove_kube_router_sets() {
  command -v ipset >/dev/null || return 0
  local set
  for set in $(ipset list -n 2>/dev/null | grep -E '^KUBE-(SRC|DST)-' || true); do
    ipset destroy "$set" 2>/dev/null || log "    warning: ipset $set could not be destroyed"
  done
}
