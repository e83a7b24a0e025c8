# Certificates and kubeconfigs for one local cluster, made with openssl. Kept in
# $KX_PKI and reused by a later `up` until `down --purge`.

# issue_cert NAME CN ORG [SANS]: a client/server certificate signed by the cluster CA.
issue_cert() {
  local name="$1" cn="$2" org="$3" sans="${4:-}"
  [ -f "$KX_PKI/$name.crt" ] && return 0
  local subj="/CN=$cn"; [ -n "$org" ] && subj="/O=$org$subj"
  local ext="$KX_PKI/$name.ext"
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=clientAuth,serverAuth"
    [ -n "$sans" ] && echo "subjectAltName=$sans"
  } > "$ext"
  openssl genrsa -out "$KX_PKI/$name.key" 2048 2>/dev/null
  openssl req -new -key "$KX_PKI/$name.key" -subj "$subj" -out "$KX_PKI/$name.csr" 2>/dev/null
  openssl x509 -req -in "$KX_PKI/$name.csr" -CA "$KX_PKI/ca.crt" -CAkey "$KX_PKI/ca.key" \
    -CAcreateserial -days 3650 -extfile "$ext" -out "$KX_PKI/$name.crt" 2>/dev/null
  rm -f "$KX_PKI/$name.csr" "$ext"
}

# write_kubeconfig FILE CERT-NAME: a kubeconfig that authenticates with a client certificate.
write_kubeconfig() {
  local file="$1" name="$2"
  cat > "$file" <<KCFG
apiVersion: v1
kind: Config
clusters:
- name: kubexec-local
  cluster:
    certificate-authority: $KX_PKI/ca.crt
    server: https://$KX_NODE_IP:$KX_APISERVER_PORT
users:
- name: $name
  user:
    client-certificate: $KX_PKI/$name.crt
    client-key: $KX_PKI/$name.key
contexts:
- name: kubexec-local
  context:
    cluster: kubexec-local
    user: $name
    namespace: default
current-context: kubexec-local
KCFG
}

make_pki() {
  mkdir -p "$KX_PKI"
  chmod 700 "$KX_PKI"
  if [ ! -f "$KX_PKI/ca.crt" ]; then
    openssl genrsa -out "$KX_PKI/ca.key" 2048 2>/dev/null
    openssl req -x509 -new -nodes -key "$KX_PKI/ca.key" -subj "/CN=kubexec-local-ca" \
      -days 3650 -out "$KX_PKI/ca.crt" 2>/dev/null
  fi
  [ -f "$KX_PKI/sa.key" ] || {
    openssl genrsa -out "$KX_PKI/sa.key" 2048 2>/dev/null
    openssl rsa -in "$KX_PKI/sa.key" -pubout -out "$KX_PKI/sa.pub" 2>/dev/null
  }
  issue_cert apiserver kube-apiserver "" \
    "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:127.0.0.1,IP:$KX_NODE_IP,IP:$KX_SERVICE_IP"
  issue_cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
  issue_cert admin kubernetes-admin system:masters
  issue_cert controller-manager system:kube-controller-manager ""
  issue_cert scheduler system:kube-scheduler ""
  issue_cert kube-proxy system:kube-proxy ""
  issue_cert kubelet "system:node:$KX_NODE_NAME" system:nodes "DNS:$KX_NODE_NAME,IP:$KX_NODE_IP"
  local c
  for c in admin controller-manager scheduler kube-proxy kubelet; do
    write_kubeconfig "$KX_STATE/$c.kubeconfig" "$c"
  done
  write_encryption_config
}

# Secrets are encrypted at rest in etcd (AES-CBC with a key made once per cluster state): env
# values that kubexec stores in Secrets never sit in etcd as plaintext. Secrets written before
# the key existed stay readable through the identity provider until rewritten.
KX_ENCRYPTION_CONFIG="$KX_PKI/encryption-config.yaml"
write_encryption_config() {
  [ -f "$KX_ENCRYPTION_CONFIG" ] && return 0
  local key; key=$(head -c 32 /dev/urandom | base64)
  (umask 077; cat > "$KX_ENCRYPTION_CONFIG.tmp" <<YAML
apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - aescbc:
          keys:
            - name: key1
              secret: $key
      - identity: {}
YAML
  )
  mv "$KX_ENCRYPTION_CONFIG.tmp" "$KX_ENCRYPTION_CONFIG"
}
