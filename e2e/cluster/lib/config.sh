# Config files of the node components. Every path points into $KX_STATE, so nothing of the
# cluster is written to /etc or /var/lib.

write_containerd_config() {
  mkdir -p "$KX_STATE/containerd" "$KX_STATE/cni/net.d"
  # containerd 2.x, config version 4 (what `containerd config default` of the pinned build
  # writes). The CRI plugin is split in two: io.containerd.cri.v1.images (image store,
  # snapshotter, pause image) and io.containerd.cri.v1.runtime (runtimes, CNI, OOM, cgroups);
  # io.containerd.grpc.v1.cri keeps only the streaming server. The sockets are
  # io.containerd.server.v1.* plugins now.
  cat > "$KX_STATE/containerd/config.toml" <<CFG
version = 4
root = '$KX_STATE/containerd/root'
state = '/run/containerd'
oom_score = 0

[plugins]
  [plugins.'io.containerd.server.v1.grpc']
    address = '$KX_CONTAINERD_SOCK'
  [plugins.'io.containerd.server.v1.ttrpc']
    address = '$KX_CONTAINERD_SOCK.ttrpc'

  [plugins.'io.containerd.internal.v1.opt']
    path = '$KX_STATE/containerd/opt'

  # NRI would listen on /var/run/nri/nri.sock, outside the state folder; nothing uses it.
  [plugins.'io.containerd.nri.v1.nri']
    disable = true

  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      # Imported by up (lib/images.sh), never pulled; pinned so image GC keeps it.
      sandbox = 'localhost/pause:3.10'

  [plugins.'io.containerd.cri.v1.runtime']
    # Root here lacks CAP_SYS_RESOURCE: without this, runc fails to lower oom_score_adj
    # and every pod sandbox dies in nsexec.
    restrict_oom_score_adj = true
    disable_hugetlb_controller = true
    tolerate_missing_hugetlb_controller = true
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
        # Our shim by path: a shim found on PATH could be Debian's 1.6 one.
        runtime_path = '$KX_CONTAINERD_BIN/containerd-shim-runc-v2'
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          # The runc built by up (lib/build-runtime.sh), never whatever runc is on PATH.
          BinaryName = '$KX_RUNC'
          SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ['/usr/lib/cni']
      conf_dir = '$KX_STATE/cni/net.d'
      max_conf_num = 1

  [plugins.'io.containerd.grpc.v1.cri']
    stream_server_address = '127.0.0.1'
CFG
}

write_cni_config() {
  local dir="$KX_STATE/cni/net.d" tmp
  mkdir -p "$dir" "$KX_STATE/cni/ipam"
  tmp=$(mktemp "$dir/.tmp.XXXXXX")
  cat > "$tmp" <<CNI
{
  "cniVersion": "0.4.0",
  "name": "kubexec",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$KX_BRIDGE",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$KX_STATE/cni/ipam",
        "ranges": [[{"subnet": "$KX_POD_CIDR", "gateway": "$KX_NODE_IP"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
CNI
  # containerd watches this folder: a rename is atomic, a half-written file is not.
  mv -f "$tmp" "$dir/10-kubexec.conflist"
}

write_kubelet_config() {
  mkdir -p "$KX_STATE/kubelet" "$KX_STATE/pod-logs"
  cat > "$KX_STATE/kubelet/config.yaml" <<CFG
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$KX_CONTAINERD_SOCK
address: $KX_NODE_IP
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $KX_PKI/ca.crt}
authorization:
  mode: Webhook
tlsCertFile: $KX_PKI/kubelet.crt
tlsPrivateKeyFile: $KX_PKI/kubelet.key
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
podLogsDir: $KX_STATE/pod-logs
# Root here may not lower oom_score_adj below its own; -999 (the default) would fail.
oomScoreAdj: 0
# Every sandbox gets a process-count limit from the node.
podPidsLimit: 4096
maxPods: 110
serializeImagePulls: false
# Images are imported, never pulled: never garbage-collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# The node's disk is the build machine's: cargo's and Go's caches fill it while tests run. A
# percentage of a large disk (1% of 250 GB) could put the node under DiskPressure with
# gigabytes still free, and evict every sandbox; only a disk that is really full does here.
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "256Mi"
  imagefs.available: "256Mi"
  nodefs.inodesFree: "1%"
evictionPressureTransitionPeriod: 5s
nodeStatusReportFrequency: 10s
nodeStatusUpdateFrequency: 5s
syncFrequency: 10s
fileCheckFrequency: 10s
shutdownGracePeriod: 0s
featureGates:
  ImageVolume: $KX_IMAGE_VOLUME_GATE
# User namespaces (hostUsers: false; UserNamespacesSupport is on by default since 1.33) need
# no host set-up: without a "kubelet" user (and getsubids), the kubelet hands each such pod
# its own range of host IDs from 65536 up, idsPerPod at a time (110 pods fit easily).
userNamespaces:
  idsPerPod: 65536
CFG
}

write_kube_proxy_config() {
  mkdir -p "$KX_STATE/kube-proxy"
  cat > "$KX_STATE/kube-proxy/config.yaml" <<CFG
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clusterCIDR: $KX_POD_CIDR
hostnameOverride: $KX_NODE_NAME
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
oomScoreAdj: 0
clientConnection:
  kubeconfig: $KX_STATE/kube-proxy.kubeconfig
conntrack:
  # Leave the host's conntrack table size alone.
  maxPerCore: 0
  min: 0
iptables:
  # Needs route_localnet=1 on the host; NodePorts on 127.0.0.1 are not used here.
  localhostNodePorts: false
CFG
}
