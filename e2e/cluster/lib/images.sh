# Offline OCI images: built with umoci from a root filesystem, packed with skopeo into an
# oci-archive named localhost/NAME:TAG, and imported into the cluster's containerd.
KX_IMAGES="$KX_CACHE/images"
BUN_VERSION="${BUN_VERSION:-1.4.5}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

# build_image_archive REF ROOTFS OUT [umoci config flags...]
# REF is NAME:TAG (localhost/ is prefixed); ROOTFS is a folder or a tarball.
build_image_archive() {
  local ref="$1" rootfs="$2" out="$3"; shift 3
  local work; work=$(mktemp -d "$KX_IMAGES/.build.XXXXXX")
  local tag="${ref##*:}"
  if [ -f "$rootfs" ]; then
    mkdir "$work/rootfs"
    tar -xf "$rootfs" -C "$work/rootfs"
    rootfs="$work/rootfs"
  fi
  [ -d "$rootfs" ] || die "rootfs $rootfs is neither a folder nor a tarball"
  umoci init --layout "$work/oci"
  umoci new --image "$work/oci:$tag"
  umoci insert --image "$work/oci:$tag" "$rootfs" /
  umoci config --image "$work/oci:$tag" --os linux --architecture amd64 "$@"
  rm -f "$out.tmp"
  skopeo --insecure-policy copy -q "oci:$work/oci:$tag" "oci-archive:$out.tmp:localhost/$ref"
  mv -f "$out.tmp" "$out"
  rm -rf "$work"
}

import_image_archive() {
  ctr --address "$KX_CONTAINERD_SOCK" -n k8s.io images import "$1" >/dev/null
}

image_imported() {
  local images
  images=$(ctr --address "$KX_CONTAINERD_SOCK" -n k8s.io images ls -q 2>/dev/null) || return 1
  grep -qx "localhost/$1" <<<"$images"
}

build_pause_image() {
  local out="$KX_IMAGES/pause-3.10.tar"
  [ -f "$out" ] && return 0
  mkdir -p "$KX_IMAGES"
  local root; root=$(mktemp -d "$KX_IMAGES/.pause.XXXXXX")
  chmod 0755 "$root"
  gcc -Os -static -o "$root/pause" "$KX_CLUSTER_DIR/lib/helpers/pause.c"
  strip "$root/pause"
  build_image_archive pause:3.10 "$root" "$out" --config.entrypoint /pause --config.user 65535:65535
  rm -rf "$root"
  log "    built pause image"
}

# A tiny image holding one static binary, /probe (lib/helpers/probe.c): the selftest mounts
# it as an image volume and runs it. Its archive name carries a hash of the source.
probe_image_archive() {
  echo "$KX_IMAGES/probe-$(sha256sum "$KX_CLUSTER_DIR/lib/helpers/probe.c" | cut -c1-12).tar"
}

build_probe_image() {
  local out; out=$(probe_image_archive)
  [ -f "$out" ] && return 0
  mkdir -p "$KX_IMAGES"
  local root; root=$(mktemp -d "$KX_IMAGES/.probe.XXXXXX")
  # The image's / is this folder (mktemp makes it 0700): mounted as an image volume, a
  # non-root user must be able to enter it.
  chmod 0755 "$root"
  gcc -Os -static -o "$root/probe" "$KX_CLUSTER_DIR/lib/helpers/probe.c"
  strip "$root/probe"
  build_image_archive kubexec-probe:dev "$root" "$out" --config.entrypoint /probe --config.user 65532:65532
  rm -rf "$root"
  find "$KX_IMAGES" -maxdepth 1 -name 'probe-*.tar' ! -path "$out" -delete
  log "    built probe image"
}

# The default sandbox image: a Debian userland (shell, coreutils, CA certificates) with Bun
# from the npm package @oven/bun-linux-x64. Its archive name carries a hash of what it is
# built from, so a change of recipe or Bun version rebuilds it.
sandbox_image_archive() {
  local key
  key=$(printf '%s %s %s %s' "$BUN_VERSION" "$DEBIAN_MIRROR" "$(declare -f build_sandbox_rootfs)" \
    "$(cat /usr/local/share/ca-certificates/*.crt 2>/dev/null)" | sha256sum | cut -c1-12)
  echo "$KX_IMAGES/sandbox-$key.tar"
}

build_sandbox_rootfs() {
  local root="$1"
  log "    debootstrap bookworm (minbase) into $root"
  debootstrap --variant=minbase --include=ca-certificates,procps,curl bookworm "$root" "$DEBIAN_MIRROR" \
    > "$KX_IMAGES/debootstrap.log" 2>&1 || { tail -20 "$KX_IMAGES/debootstrap.log"; die "debootstrap failed"; }
  log "    fetching bun $BUN_VERSION from the npm registry"
  local npmdir; npmdir=$(mktemp -d)
  (cd "$npmdir" && npm pack --silent "@oven/bun-linux-x64@$BUN_VERSION" >/dev/null && tar -xzf ./*.tgz)
  install -m 0755 "$npmdir/package/bin/bun" "$root/usr/local/bin/bun"
  ln -sf bun "$root/usr/local/bin/bunx"
  rm -rf "$npmdir"
  # Trust what the build host trusts: where egress passes a TLS-inspecting proxy, its CA is
  # installed locally, and sandboxes reach package registries through the same path.
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >/dev/null 2>&1
  fi
  echo 'sandbox:x:1000:1000:sandbox:/workspace:/bin/bash' >> "$root/etc/passwd"
  echo 'sandbox:x:1000:' >> "$root/etc/group"
  mkdir -p "$root/workspace"
  chown 1000:1000 "$root/workspace"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/*.log
}

build_sandbox_image() {
  local out; out=$(sandbox_image_archive)
  [ -f "$out" ] && return 0
  mkdir -p "$KX_IMAGES"
  local root; root=$(mktemp -d "$KX_IMAGES/.sandbox.XXXXXX")
  build_sandbox_rootfs "$root"
  build_image_archive kubexec-sandbox:dev "$root" "$out" \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --config.env HOME=/workspace --config.env NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt \
    --config.env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    --config.workingdir /workspace --config.cmd /bin/bash
  rm -rf "$root"
  find "$KX_IMAGES" -maxdepth 1 -name 'sandbox-*.tar' ! -path "$out" -delete
  log "    built sandbox image ($(du -h "$out" | cut -f1))"
}

build_base_images() {
  build_pause_image
  build_probe_image
  build_sandbox_image
}

# import_once REF ARCHIVE: imports unless this very archive was imported already.
import_once() {
  local ref="$1" archive="$2" marker="$KX_STATE/containerd/imported-$(basename "$2")"
  if [ -f "$marker" ] && image_imported "$ref"; then return 0; fi
  import_image_archive "$archive"
  touch "$marker"
}

import_base_images() {
  import_once pause:3.10 "$KX_IMAGES/pause-3.10.tar"
  import_once kubexec-sandbox:dev "$(sandbox_image_archive)"
  import_once kubexec-probe:dev "$(probe_image_archive)"
  log "    images: $(ctr --address "$KX_CONTAINERD_SOCK" -n k8s.io images ls -q | grep '^localhost/' | tr '\n' ' ')"
}
