# shellcheck shell=bash
# Certificates of the test control plane, made with openssl (sourced by hack/control-plane.sh).
# One CA signs the apiserver's serving cert and the admin client cert (O=system:masters); the
# service-account key pair signs and verifies tokens. Made once and kept, so kubeconfigs stay valid.

PKI_DAYS=3650

# ensure_pki DIR: create DIR/{ca,apiserver,admin}.{crt,key} and DIR/sa.{key,pub} unless complete.
ensure_pki() {
  local dir="$1"
  [[ -f "$dir/.complete" ]] && return 0
  command -v openssl >/dev/null || die "openssl is needed to make the control plane's certificates"
  log "generating certificates in $dir"
  rm -rf "$dir"; mkdir -p "$dir"; chmod 700 "$dir"
  (
    cd "$dir"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days "$PKI_DAYS" \
      -subj "/CN=flashsale-test-ca" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null

    # In-cluster clients reach the apiserver as kubernetes.default.svc or the Service's first
    # IP (10.96.0.1 in --service-cluster-ip-range); host clients use 127.0.0.1.
    issue apiserver "/CN=kube-apiserver" serverAuth \
      "IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    issue admin "/O=system:masters/CN=flashsale-admin" clientAuth ""

    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    chmod 600 ./*.key
  ) || die "certificate generation failed"
  touch "$dir/.complete"
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
  rm -f "$name.csr" "$name.ext"
}
