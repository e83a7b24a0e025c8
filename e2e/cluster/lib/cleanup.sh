# Removing what a cluster left behind, whether it was stopped by `down` or killed. Every
# step is safe to run when there is nothing to remove.

kill_leftover_processes() {
  local name
  for name in "${KX_COMPONENTS[@]}" hostpath-permissions; do stop_component "$name"; done
  # Processes of ours whose pid file was lost: our binaries, and shims serving our socket.
  pkill -KILL -f "^$KX_BIN/" 2>/dev/null || true
  pkill -KILL -f "^$KX_CACHE/kube-router-" 2>/dev/null || true
  pkill -KILL -f "containerd-shim.*$KX_CONTAINERD_SOCK" 2>/dev/null || true
  pkill -KILL -f "containerd --config $KX_STATE/" 2>/dev/null || true
  stop_api_relay
  kill_pod_processes
}

# The api relay of e2e/deploy/up (make up, TARGET=local) forwards to a ClusterIP of this
# cluster, so it is useless once the cluster is down; and it inherits what its starter had
# open, such as a flock on the shared cluster lock, which it would hold after `make test`.
stop_api_relay() {
  local f="$KX_HOME/deploy-local-forward.pid"
  [ -f "$f" ] || return 0
  kill "$(cat "$f")" 2>/dev/null || true
  rm -f "$f"
}

# Container processes outlive a killed shim; they are found through the kubelet's cgroups.
kill_pod_processes() {
  local root pass d
  for pass in 1 2 3; do
    for root in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
      [ -d "$root" ] || continue
      find "$root" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
    done
    sleep 0.2
  done
  for root in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [ -d "$root" ] || continue
    find "$root" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}

unmount_under() {
  local prefix="$1" m
  # Deepest first; lazy, so a busy mount does not stop the rest.
  awk -v p="$prefix" '$2 == p || index($2, p "/") == 1 {print $2}' /proc/mounts | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
}

remove_network() {
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^cni-' || true); do
    ip netns delete "$ns" 2>/dev/null || true
  done
  ip link delete "$KX_BRIDGE" 2>/dev/null || true
  local save restore rules
  for save in iptables-save ip6tables-save; do
    restore=${save/-save/-restore}
    command -v "$save" >/dev/null || continue
    # Saved first: `save | grep -q` would end the pipe early, and with pipefail a SIGPIPE'd
    # save reads as "no rules".
    rules=$("$save" 2>/dev/null) || continue
    if grep -qE 'KUBE-|CNI-' <<<"$rules"; then
      grep -vE 'KUBE-|CNI-' <<<"$rules" | "$restore" || log "    warning: $restore failed"
    fi
  done
  rm -rf "$KX_STATE/cni/ipam"
}

remove_host_leftovers() {
  # The kubelet links container logs here whatever podLogsDir says.
  if [ -d /var/log/containers ]; then
    find /var/log/containers -maxdepth 1 -type l -lname "$KX_STATE/*" -delete 2>/dev/null || true
  fi
  rm -rf /run/containerd
}

cleanup_node() {
  kill_leftover_processes
  unmount_under "$KX_STATE"
  unmount_under /run/containerd
  unmount_under /run/netns
  remove_network
  remove_kube_router_sets
  remove_host_leftovers
  restore_sysctls
}
