# Starting each cluster component with the flags it needs on this kind of machine.

setup_host_network() {
  if ! ip link show "$KX_BRIDGE" >/dev/null 2>&1; then
    ip link add "$KX_BRIDGE" type bridge
  fi
  ip addr replace "$KX_NODE_IP/24" dev "$KX_BRIDGE"
  ip link set "$KX_BRIDGE" up
  save_sysctls
  sysctl -qw net.ipv4.ip_forward=1
  sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || true
}

start_containerd() {
  forget_other_runtime_state
  write_containerd_config
  write_cni_config
  # By path: Debian's containerd may still be installed. Its own folder first on PATH too, so
  # that the shim it resolves by name (ctr plugins inspect-runtime) is ours.
  PATH="$KX_CONTAINERD_BIN:$PATH" start_component containerd "$KX_CONTAINERD_BIN/containerd" \
    --config "$KX_STATE/containerd/config.toml"
  wait_until 30 "containerd socket" ctr --address "$KX_CONTAINERD_SOCK" version
}

# A containerd root written by another containerd version (Debian's 1.6 before this cluster
# built its own, or an older pin) is started afresh: images it imported are not all usable by
# the new one (an image volume of such an image fails with "not found"). Images are imported
# again from the cache; Pods are recreated by the kubelet; volumes live elsewhere.
forget_other_runtime_state() {
  local dir="$KX_STATE/containerd" stamp="$KX_STATE/containerd/made-by" made_by
  made_by=$(cat "$stamp" 2>/dev/null || true)
  if [ -d "$dir/root" ] && [ "$made_by" != "$CONTAINERD_VERSION" ]; then
    log "    containerd's root was made by ${made_by:-another version}; starting it afresh"
    unmount_under "$dir/root"
    rm -rf "$dir/root" "$dir"/imported-*
  fi
  mkdir -p "$dir"
  echo "$CONTAINERD_VERSION" > "$stamp"
}

start_etcd() {
  mkdir -p "$KX_STATE/etcd"
  chmod 700 "$KX_STATE/etcd"
  start_component etcd etcd --name kubexec --data-dir "$KX_STATE/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster kubexec=http://127.0.0.1:2380 --listen-metrics-urls http://127.0.0.1:2381 \
    --quota-backend-bytes 4294967296 --log-level warn
  wait_until 30 "etcd health" curl -fsS http://127.0.0.1:2381/health
}

start_apiserver() {
  start_component kube-apiserver kube-apiserver \
    --etcd-servers=http://127.0.0.1:2379 \
    --bind-address="$KX_NODE_IP" --advertise-address="$KX_NODE_IP" --secure-port="$KX_APISERVER_PORT" \
    --service-cluster-ip-range="$KX_SERVICE_CIDR" \
    --client-ca-file="$KX_PKI/ca.crt" \
    --tls-cert-file="$KX_PKI/apiserver.crt" --tls-private-key-file="$KX_PKI/apiserver.key" \
    --kubelet-client-certificate="$KX_PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$KX_PKI/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types=InternalIP \
    --service-account-key-file="$KX_PKI/sa.pub" \
    --service-account-signing-key-file="$KX_PKI/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NodeRestriction \
    --allow-privileged=true --profiling=false --event-ttl=1h \
    --encryption-provider-config="$KX_PKI/encryption-config.yaml" \
    --feature-gates="ImageVolume=$KX_IMAGE_VOLUME_GATE"
  wait_until 90 "kube-apiserver /readyz" kubectl --kubeconfig "$KX_KUBECONFIG" get --raw /readyz
}

start_control_loops() {
  local cm="$KX_STATE/controller-manager.kubeconfig" sc="$KX_STATE/scheduler.kubeconfig"
  mkdir -p /tmp/hostpath_pv
  start_component kube-controller-manager kube-controller-manager \
    --kubeconfig="$cm" --authentication-kubeconfig="$cm" --authorization-kubeconfig="$cm" \
    --bind-address=127.0.0.1 --leader-elect=false \
    --root-ca-file="$KX_PKI/ca.crt" --service-account-private-key-file="$KX_PKI/sa.key" \
    --cluster-signing-cert-file="$KX_PKI/ca.crt" --cluster-signing-key-file="$KX_PKI/ca.key" \
    --use-service-account-credentials=true --allocate-node-cidrs=false \
    --service-cluster-ip-range="$KX_SERVICE_CIDR" --cluster-cidr="$KX_POD_CIDR" \
    --enable-hostpath-provisioner=true --profiling=false \
    --feature-gates="ImageVolume=$KX_IMAGE_VOLUME_GATE"
  start_component kube-scheduler kube-scheduler \
    --kubeconfig="$sc" --authentication-kubeconfig="$sc" --authorization-kubeconfig="$sc" \
    --bind-address=127.0.0.1 --leader-elect=false --profiling=false \
    --feature-gates="ImageVolume=$KX_IMAGE_VOLUME_GATE"
  # The controller-manager's host-path provisioner makes each volume folder 0750 root, which
  # a non-root sandbox cannot write; real storage honours fsGroup instead. This watcher opens
  # the new folders up, on this local cluster only.
  start_component hostpath-permissions bash "$KX_CLUSTER_DIR/lib/helpers/hostpath-permissions.sh"
}

start_node() {
  write_kubelet_config
  write_kube_proxy_config
  start_component kubelet kubelet --config="$KX_STATE/kubelet/config.yaml" \
    --kubeconfig="$KX_STATE/kubelet.kubeconfig" --hostname-override="$KX_NODE_NAME" \
    --node-ip="$KX_NODE_IP" --root-dir="$KX_STATE/kubelet/root" --cert-dir="$KX_STATE/kubelet/pki"
  start_component kube-proxy kube-proxy --config="$KX_STATE/kube-proxy/config.yaml"
}

apply_cluster_addons() {
  kubectl --kubeconfig "$KX_KUBECONFIG" apply -f - >/dev/null <<'YAML'
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: kubernetes.io/host-path
reclaimPolicy: Delete
volumeBindingMode: Immediate
YAML
}

wait_for_node() {
  wait_until 120 "node $KX_NODE_NAME to register" kubectl --kubeconfig "$KX_KUBECONFIG" get node "$KX_NODE_NAME"
  # A node object kept from an earlier run may still say Ready: wait for a fresh heartbeat.
  local since; since=$(date -u -d "@$KX_UP_STARTED" +%Y-%m-%dT%H:%M:%SZ)
  wait_until 120 "node $KX_NODE_NAME to be Ready" node_ready_since "$since"
  wait_until 60 "the default ServiceAccount" kubectl --kubeconfig "$KX_KUBECONFIG" -n default get serviceaccount default
}

node_ready_since() {
  local jp='{range .status.conditions[?(@.type=="Ready")]}{.status} {.lastHeartbeatTime}{end}'
  local status beat
  read -r status beat < <(kubectl --kubeconfig "$KX_KUBECONFIG" get node "$KX_NODE_NAME" -o jsonpath="$jp")
  [ "$status" = True ] && [[ ! "$beat" < "$1" ]]
}
