# Builds the Kubernetes binaries (and etcd) from Go modules pinned to $K8S_VERSION.
# The staging modules (k8s.io/api, client-go, ...) are replaced by their matching v0.x
# releases, which is what makes k8s.io/kubernetes buildable outside its own repository.
# etcd is built from the same module graph, so it is the version Kubernetes was tested with.
KX_K8S_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)

k8s_module_dir() { echo "$KX_CACHE/k8s-$K8S_VERSION/module"; }

prepare_k8s_module() {
  local mod; mod=$(k8s_module_dir)
  [ -f "$mod/go.sum" ] && grep -q etcdmain "$mod/.ready" 2>/dev/null && return 0
  mkdir -p "$mod"
  local staging="v0.${K8S_VERSION#v1.}"
  log "    resolving k8s.io/kubernetes@$K8S_VERSION (staging modules at $staging)"
  (
    cd "$mod"
    local gomod
    gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    [ -f "$gomod" ] || die "could not download k8s.io/kubernetes@$K8S_VERSION"
    {
      printf 'module kubexec.dev/localcluster\n\ngo 1.24.0\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$K8S_VERSION"
      sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\t\1 => \1 '"$staging"'#p' "$gomod"
      printf ')\n'
    } > go.mod
    # A throwaway main that imports every command's packages, so that `go mod tidy`
    # records the whole dependency graph in go.sum.
    {
      echo 'package main'
      echo 'import ('
      local b
      for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
        echo "  _ \"k8s.io/kubernetes/cmd/$b/app\""
      done
      echo '  _ "k8s.io/kubectl/pkg/cmd"'
      echo '  _ "k8s.io/component-base/cli"'
      echo '  _ "go.etcd.io/etcd/server/v3/etcdmain"'
      echo ')'
      echo 'func main() {}'
    } > tools.go
    log "    downloading modules (go mod tidy)"
    go mod tidy 2>&1 | grep -v '^go: downloading' || true
    rm -f tools.go
    echo etcdmain > .ready
  )
}

build_k8s() {
  local missing=() b
  for b in "${KX_K8S_BINARIES[@]}" etcd; do [ -x "$KX_BIN/$b" ] || missing+=("$b"); done
  if [ "${#missing[@]}" = 0 ]; then log "    binaries cached in $KX_BIN"; return 0; fi
  prepare_k8s_module
  mkdir -p "$KX_BIN"
  local ldflags="-s -w" pkg minor
  minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  local pkgs=()
  for b in "${missing[@]}"; do [ "$b" = etcd ] || pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  (
    cd "$(k8s_module_dir)"
    if [ "${#pkgs[@]}" -gt 0 ]; then
      log "    compiling ${pkgs[*]##*/} (the slow part of a cold start: 5–8 min on 2 cores)"
      go build -trimpath -ldflags "$ldflags" -o "$KX_BIN/" "${pkgs[@]}"
    fi
    if [ ! -x "$KX_BIN/etcd" ]; then
      log "    compiling etcd"
      go build -trimpath -ldflags "-s -w" -o "$KX_BIN/etcd" go.etcd.io/etcd/server/v3
    fi
  )
}
