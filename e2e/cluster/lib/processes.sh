# Starting and stopping the cluster's processes. Each runs in its own session with its pid
# in $KX_PIDS/NAME.pid and its output in $KX_LOGS/NAME.log, so `down` stops exactly what
# `up` started.

start_component() {
  local name="$1"; shift
  mkdir -p "$KX_PIDS" "$KX_LOGS"
  if pid_alive "$name"; then log "    $name already running (pid $(cat "$KX_PIDS/$name.pid"))"; return 0; fi
  setsid "$@" >>"$KX_LOGS/$name.log" 2>&1 < /dev/null &
  echo $! > "$KX_PIDS/$name.pid"
  log "    started $name (pid $!), log $KX_LOGS/$name.log"
}

stop_component() {
  local name="$1" f="$KX_PIDS/$1.pid" pid i
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    # Each component leads its own process group (setsid): signal the whole group.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    log "    stopped $name (pid $pid)"
  fi
  rm -f "$f"
}

# wait_until SECONDS DESCRIPTION CMD...: polls CMD until it succeeds.
wait_until() {
  local timeout="$1" what="$2"; shift 2
  local deadline=$(( $(date +%s) + timeout ))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then die "timed out after ${timeout}s waiting for $what"; fi
    sleep 0.5
  done
}

# The kubelet and kube-proxy change a few host sysctls; remember the originals so that
# `down` puts them back.
KX_SYSCTLS=(net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables kernel.panic
  kernel.panic_on_oops vm.overcommit_memory vm.panic_on_oom)

save_sysctls() {
  local f="$KX_STATE/sysctl.orig" k
  [ -f "$f" ] && return 0
  for k in "${KX_SYSCTLS[@]}"; do
    sysctl -n "$k" >/dev/null 2>&1 && echo "$k=$(sysctl -n "$k")" >> "$f"
  done
  return 0
}

restore_sysctls() {
  local f="$KX_STATE/sysctl.orig" line
  [ -f "$f" ] || return 0
  while IFS= read -r line; do sysctl -qw "$line" >/dev/null 2>&1 || true; done < "$f"
  rm -f "$f"
}
