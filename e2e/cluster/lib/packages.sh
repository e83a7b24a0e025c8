# Debian packages the local cluster needs. Installs only what is missing, so a warm `up`
# never touches apt. containerd and runc are not among them: they are built from their Go
# modules (lib/build-runtime.sh); runc's seccomp support needs libseccomp-dev and pkg-config.
KX_PACKAGES=(containernetworking-plugins umoci skopeo iptables ipset conntrack libseccomp-dev
  pkg-config debootstrap inotify-tools socat jq openssl curl iproute2 bc util-linux procps gcc
  libc6-dev)

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
  return 0
}
