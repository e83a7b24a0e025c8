# Builds the container runtime from Go modules, pinned, into the cache next to the Kubernetes
# build: containerd (with its runc shim and ctr) and runc. Nothing comes from Debian's
# containerd/runc packages any more; only libseccomp-dev is needed, for runc's seccomp support.
#   $KX_CACHE/containerd-$CONTAINERD_VERSION/bin/{containerd,containerd-shim-runc-v2,ctr}
#   $KX_CACHE/runc-$RUNC_VERSION/bin/runc     (built from a small module, see below)
# The variables are set in common.sh, so that every script finds the same binaries.

# The flags follow upstream's Makefiles: containerd without the btrfs snapshotter (it needs
# btrfs headers), the shim static and without cgo; runc with cgo and seccomp, without
# libpathrs (a Rust library Debian does not ship; runc then uses its Go path-safety code).
KX_CONTAINERD_TAGS="no_btrfs urfave_cli_no_docs"
KX_RUNC_TAGS="seccomp urfave_cli_no_docs"

containerd_built() {
  local b
  for b in containerd containerd-shim-runc-v2 ctr; do [ -x "$KX_CONTAINERD_BIN/$b" ] || return 1; done
}

build_containerd() {
  if containerd_built; then log "    containerd $CONTAINERD_VERSION cached in $KX_CONTAINERD_BIN"; return 0; fi
  local pkg=github.com/containerd/containerd/v2 tmp
  tmp=$(mktemp -d "$KX_CACHE/.containerd-build.XXXXXX")
  # Version as upstream's `make` sets it (git describe); the node reports it as
  # containerRuntimeVersion "containerd://$CONTAINERD_VERSION".
  local ldflags="-s -w -X $pkg/version.Version=$CONTAINERD_VERSION -X $pkg/version.Package=$pkg"
  log "    compiling containerd and ctr $CONTAINERD_VERSION from $pkg (about 2 min on 2 cores)"
  GOBIN="$tmp" go install -trimpath -tags "$KX_CONTAINERD_TAGS" -ldflags "$ldflags" \
    "$pkg/cmd/containerd@$CONTAINERD_VERSION" "$pkg/cmd/ctr@$CONTAINERD_VERSION" 2>&1 | grep -v '^go: downloading' >&2 || true
  log "    compiling containerd-shim-runc-v2 $CONTAINERD_VERSION (static, no cgo)"
  GOBIN="$tmp" CGO_ENABLED=0 go install -trimpath -tags "$KX_CONTAINERD_TAGS no_grpc" -ldflags "$ldflags" \
    "$pkg/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" 2>&1 | grep -v '^go: downloading' >&2 || true
  local b
  for b in containerd containerd-shim-runc-v2 ctr; do
    [ -x "$tmp/$b" ] || { rm -rf "$tmp"; die "could not build $b $CONTAINERD_VERSION"; }
  done
  mkdir -p "$KX_CONTAINERD_BIN"
  mv -f "$tmp"/* "$KX_CONTAINERD_BIN/"
  rm -rf "$tmp"
  log "    $("$KX_CONTAINERD_BIN/containerd" --version)"
}

# runc is built from a tiny module of our own that requires the pinned runc: some runc
# releases refuse `go install runc@version` because their go.mod has replace directives,
# and a requiring module builds any of them the same way. The version is embedded from
# runc's VERSION file, so `runc --version` reports the pin.
build_runc() {
  if [ -x "$KX_RUNC" ]; then log "    runc $RUNC_VERSION cached in $KX_RUNC"; return 0; fi
  local dir="$KX_CACHE/runc-$RUNC_VERSION" mod
  mod="$dir/module"
  mkdir -p "$mod" "$dir/bin"
  log "    compiling runc $RUNC_VERSION (cgo, libseccomp $(pkg-config --modversion libseccomp 2>/dev/null || echo '?'))"
  (
    cd "$mod"
    if [ ! -f go.sum ] || ! grep -q "^require github.com/opencontainers/runc $RUNC_VERSION\$" go.mod 2>/dev/null; then
      printf 'module kubexec.dev/runc-build\n\ngo 1.25.0\n\nrequire github.com/opencontainers/runc %s\n' "$RUNC_VERSION" > go.mod
      rm -f go.sum
      go mod download github.com/opencontainers/runc
      # go.sum entries for runc's whole build graph.
      go get "github.com/opencontainers/runc@$RUNC_VERSION" 2>&1 | grep -v '^go: downloading' >&2 || true
    fi
    CGO_ENABLED=1 go build -trimpath -buildmode=pie -tags "$KX_RUNC_TAGS" -ldflags "-s -w" \
      -o "$KX_RUNC.tmp" github.com/opencontainers/runc
  ) || { rm -f "$KX_RUNC.tmp"; die "could not build runc $RUNC_VERSION"; }
  mv -f "$KX_RUNC.tmp" "$KX_RUNC"
  log "    $("$KX_RUNC" --version | tr '\n' ' ')"
}

build_runtime() {
  mkdir -p "$KX_CACHE"
  build_containerd
  build_runc
}

# What the running node really uses, for status and the selftest.
# node_runtime_version: the node's containerRuntimeVersion, e.g. containerd://v2.4.2.
node_runtime_version() {
  kubectl --kubeconfig "$KX_KUBECONFIG" get node "$KX_NODE_NAME" \
    -o jsonpath='{.status.nodeInfo.containerRuntimeVersion}' 2>/dev/null
}

# shim_runtime_info: asks the running containerd for its runc shim's info, with the runc
# binary from containerd's config (BinaryName); the shim runs `runc features`. Prints
# "SHIM_VERSION RUNC_VERSION RUNC_PATH", or fails (containerd < 2.0 cannot answer).
shim_runtime_info() {
  local bin
  bin=$(sed -n "s/^ *BinaryName *= *['\"]\(.*\)['\"] *$/\1/p" "$KX_STATE/containerd/config.toml" 2>/dev/null | head -1)
  ctr --address "$KX_CONTAINERD_SOCK" plugins inspect-runtime --runtime io.containerd.runc.v2 \
    ${bin:+--runc-binary "$bin"} 2>/dev/null |
    jq -re '"\(.Version.Version) \(.Features.annotations["org.opencontainers.runc.version"] // "?") \(.Options.binary_name // "runc")"'
}

# running_shims: the executables of the shims that serve this cluster's containerd now.
running_shims() {
  local pid
  for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $KX_CONTAINERD_SOCK" || true); do
    readlink "/proc/$pid/exe" 2>/dev/null || true
  done | sort | uniq -c | awk '{print $2 " (" $1 " running)"}'
}

print_runtime_versions() {
  local info shim="?" runc="?" path="?"
  if info=$(shim_runtime_info); then read -r shim runc path <<<"$info"; fi
  printf '%-26s %s\n' "node runtime" "$(node_runtime_version || true)"
  printf '%-26s %s\n' "runc shim" "containerd-shim-runc-v2 $shim"
  printf '%-26s %s\n' "runc (used by the shim)" "$runc ($path)"
}
