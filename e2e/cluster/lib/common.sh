# Shared settings and helpers for the local cluster scripts. Sourced, never run.
# Everything the cluster makes lives under one folder, $KUBEXEC_CLUSTER_HOME:
#   cache/  build outputs that survive `down --purge` only if asked (binaries, images)
#   state/  certificates, kubeconfigs, data, logs and pids of one running cluster
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.34.4}"
KX_HOME="${KUBEXEC_CLUSTER_HOME:-/var/lib/kubexec-cluster}"
KX_CACHE="$KX_HOME/cache"
KX_STATE="$KX_HOME/state"
KX_BIN="$KX_CACHE/k8s-$K8S_VERSION/bin"
# The container runtime, built from Go modules next to Kubernetes (lib/build-runtime.sh).
CONTAINERD_VERSION="${CONTAINERD_VERSION:-v2.4.2}"
RUNC_VERSION="${RUNC_VERSION:-v1.5.3}"
KX_CONTAINERD_BIN="$KX_CACHE/containerd-$CONTAINERD_VERSION/bin"
KX_RUNC="$KX_CACHE/runc-$RUNC_VERSION/bin/runc"
# Image volumes (KEP-4639) are beta and off by default in 1.34; containerd >= 2.1 serves them.
KX_IMAGE_VOLUME_GATE=true
KX_LOGS="$KX_STATE/logs"
KX_PIDS="$KX_STATE/pids"
KX_PKI="$KX_STATE/pki"
KX_KUBECONFIG="$KX_STATE/admin.kubeconfig"
KX_CONTAINERD_SOCK="$KX_STATE/containerd/containerd.sock"
KX_CLUSTER_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Network plan. The bridge is made by `up` itself so that the apiserver can advertise an
# address that pods reach; nothing here is routed off the machine.
KX_NODE_NAME="kubexec-node"
KX_BRIDGE="kubexec0"
KX_POD_CIDR="10.244.0.0/24"
KX_NODE_IP="10.244.0.1"
KX_SERVICE_CIDR="10.96.0.0/24"
KX_SERVICE_IP="10.96.0.1"
KX_APISERVER_PORT=6443

export PATH="$KX_BIN:$KX_CONTAINERD_BIN:$PATH"
# ctr 2.x asks containerd for deprecations on every call and prints them; on this cgroup v1
# host that is one "cgroup v1 is deprecated" warning per call (docs/local-cluster.md).
export CONTAINERD_SUPPRESS_DEPRECATION_WARNINGS=1

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# step NAME CMD...: runs one step and prints how long it took.
step() {
  local name="$1"; shift
  local started; started=$(date +%s.%N)
  log "==> $name"
  "$@"
  local ended; ended=$(date +%s.%N)
  log "    $name done in $(printf '%.1f' "$(echo "$ended - $started" | bc)")s"
}

require_root() { [ "$(id -u)" = 0 ] || die "run as root (the cluster manages mounts, namespaces and iptables)"; }

pid_alive() { local f="$KX_PIDS/$1.pid"; [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; }

KX_COMPONENTS=(containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kube-router)

# load_libs: sources every library the cluster scripts share.
load_libs() {
  local lib
  for lib in packages build-k8s build-runtime pki config processes cleanup images components netpol; do
    # shellcheck source=/dev/null
    source "$KX_CLUSTER_DIR/lib/$lib.sh"
  done
}
