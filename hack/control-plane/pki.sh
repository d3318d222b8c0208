# shellcheck shell=bash
# Certificates of the test control plane, made with openssl (sourced by hack/control-plane.sh).
# One CA signs the apiserver's serving cert, the admin client cert (O=system:masters), the
# apiserver's client cert for kubelets, and the certs of the real node (hack/node.sh): the
# kubelet's client (CN=system:node:<name>, O=system:nodes) and serving certs, and kube-proxy's
# client cert (CN=system:kube-proxy, bound to system:node-proxier by the default RBAC policy).
# The service-account key pair signs and verifies tokens. Made once and kept, so kubeconfigs stay
# valid; a certificate added here later is issued into an existing directory by the next `up`.

PKI_DAYS=3650
# The real node's name (hack/node.sh uses the same).
PKI_NODE_NAME="${PKI_NODE_NAME:-flashsale-node-0}"
# Its IP (hack/node.sh: the gateway of its pod bridge).
PKI_NODE_IP="${PKI_NODE_IP:-198.18.0.1}"
# The first IP of --service-cluster-ip-range (control-plane.sh): the `kubernetes` Service.
PKI_KUBERNETES_SERVICE_IP="${PKI_KUBERNETES_SERVICE_IP:-198.19.0.1}"

# ensure_pki DIR: create DIR/ca.{crt,key}, DIR/sa.{key,pub} and every certificate below that is
# missing (or, for the apiserver's, made for another Service IP).
ensure_pki() {
  local dir="$1"
  command -v openssl >/dev/null || die "openssl is needed to make the control plane's certificates"
  if [[ ! -f "$dir/.complete" ]]; then
    log "generating certificates in $dir"
    rm -rf "$dir"; mkdir -p "$dir"; chmod 700 "$dir"
    (
      cd "$dir"
      openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days "$PKI_DAYS" \
        -subj "/CN=flashsale-test-ca" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
      openssl genrsa -out sa.key 2048 2>/dev/null
      openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
      chmod 600 ./*.key
    ) || die "certificate generation failed"
    touch "$dir/.complete"
  fi
  (
    cd "$dir"
    # In-cluster clients reach the apiserver as kubernetes.default.svc or the Service's first IP;
    # host clients use 127.0.0.1. Reissued when the Service range (so that IP) changed.
    local sans="IP:127.0.0.1,IP:$PKI_KUBERNETES_SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default"
    sans+=",DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    issue_missing apiserver "/CN=kube-apiserver" serverAuth "$sans"
    issue_missing admin "/O=system:masters/CN=flashsale-admin" clientAuth ""
    # What the apiserver presents to kubelets (logs, exec, port-forward).
    issue_missing apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth ""
    issue_missing kubelet-client "/O=system:nodes/CN=system:node:$PKI_NODE_NAME" clientAuth ""
    # The kubelet serves on the node's IP, the bridge's gateway (a kubelet refuses a loopback one).
    issue_missing kubelet-serving "/O=system:nodes/CN=system:node:$PKI_NODE_NAME" serverAuth \
      "IP:$PKI_NODE_IP,IP:127.0.0.1,DNS:$PKI_NODE_NAME,DNS:localhost"
    issue_missing kube-proxy "/CN=system:kube-proxy" clientAuth ""
  ) || die "certificate generation failed"
}

# issue_missing NAME SUBJECT EXTENDED_KEY_USAGE SANS: issue NAME unless its certificate exists
# with these SANs (a changed Service range or node IP reissues it).
issue_missing() {
  if [[ -f "$1.crt" && -f "$1.key" && "$(cat "$1.sans" 2>/dev/null)" == "$4" ]]; then return 0; fi
  log "issuing certificate $1 ($2)"
  issue "$@"
  printf '%s\n' "$4" >"$1.sans"
}

# issue NAME SUBJECT EXTENDED_KEY_USAGE SANS: a key and a CA-signed certificate in the current dir.
issue() {
  local name="$1" subject="$2" eku="$3" sans="$4"
  openssl req -new -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.csr" -subj "$subject" 2>/dev/null
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [[ -n "$sans" ]] && echo "subjectAltName=$sans"
  } >"$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -set_serial "0x$(openssl rand -hex 16)" \
    -days "$PKI_DAYS" -sha256 -extfile "$name.ext" -out "$name.crt" 2>/dev/null
  chmod 600 "$name.key"
  rm -f "$name.csr" "$name.ext"
}
