# Debian packages the local cluster needs. Installs only what is missing, so a warm `up`
# never touches apt.
KX_PACKAGES=(containerd runc containernetworking-plugins umoci skopeo iptables conntrack
  debootstrap inotify-tools socat jq openssl iproute2 bc util-linux procps gcc libc6-dev)

install_packages() {
  local missing=() p
  for p in "${KX_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" = 0 ]; then log "    all packages present"; return 0; fi
  log "    installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian's containerd package may start its own daemon through an init script; the
  # cluster runs a private instance with its own socket, so a stray one is harmless but
  # pointless.
  return 0
}
