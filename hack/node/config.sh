# shellcheck shell=bash
# hack/node.sh, the node's configuration files (sourced): containerd, the kubelet's kubeconfig and
# KubeletConfiguration, kube-proxy, CoreDNS's Corefile. Reads node.sh's settings.
# shellcheck disable=SC2154  # the settings are node.sh's
write_containerd_config() {
  mkdir -p "$CTRD_ROOT" "$CTRD_STATE" "$CNI_CONF_DIR" "$CNI_IPAM_DIR"
  cat >"$CONF/containerd.toml.tmp" <<EOF
# Written by hack/node.sh: containerd for the test node only (its own root, state and socket).
version = 2
root = "$CTRD_ROOT"
state = "$CTRD_STATE"
oom_score = 0

[grpc]
  address = "$CTRD_SOCK"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # This VM forbids lowering oom_score_adj: without this every sandbox fails to start
  # ("runc create failed: can't get final child's PID from pipe: EOF").
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  max_container_log_line_size = 16384

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$CNI_CONF_DIR"
    max_conf_num = 1

  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$NODE/containerd/opt"
EOF
  mv "$CONF/containerd.toml.tmp" "$CONF/containerd.toml"

  # Routes only inside 198.18.0.0/15: no default route, so a pod cannot even try the outside.
  cat >"$CNI_CONF_DIR/10-$CNI_NAME.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "$CNI_NAME",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "$POD_CIDR", "gateway": "$GATEWAY" }]],
        "routes": [{ "dst": "$RESERVED_CIDR" }],
        "dataDir": "$CNI_IPAM_DIR"
      }
    }
  ]
}
EOF
  # The CNI config is read by containerd at each pod: part of its stamp all the same.
  cp "$CNI_CONF_DIR/10-$CNI_NAME.conflist" "$CONF/containerd.cni"
}

# kubeconfig FILE USER CERT KEY: a kubeconfig for the control plane with a client certificate.
write_kubeconfig() {
  local file="$1" user="$2" cert="$3" key="$4" server
  server="$("$FLASHSALE_BIN/kubectl" --kubeconfig="$ADMIN_KUBECONFIG" config view --minify -o jsonpath='{.clusters[0].cluster.server}')"
  local k=("$FLASHSALE_BIN/kubectl" --kubeconfig="$file.tmp")
  rm -f "$file.tmp"
  "${k[@]}" config set-cluster flashsale-test --server="$server" \
    --certificate-authority="$PKI/ca.crt" --embed-certs=true >/dev/null
  "${k[@]}" config set-credentials "$user" --client-certificate="$cert" --client-key="$key" --embed-certs=true >/dev/null
  "${k[@]}" config set-context flashsale-test --cluster=flashsale-test --user="$user" >/dev/null
  "${k[@]}" config use-context flashsale-test >/dev/null
  chmod 600 "$file.tmp"; mv "$file.tmp" "$file"
}

write_kubelet_config() {
  mkdir -p "$KUBELET_DIR" "$LOGS/pods"
  write_kubeconfig "$CONF/kubelet.kubeconfig" "system:node:$NODE_NAME" "$PKI/kubelet-client.crt" "$PKI/kubelet-client.key"
  # dnsPolicy Default pods get this, not the VM's resolver (which is off the machine).
  printf 'nameserver %s\n' "$CLUSTER_DNS" >"$CONF/resolv.conf"
  cat >"$CONF/kubelet.yaml" <<EOF
# Written by hack/node.sh.
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
rotateCertificates: false
serverTLSBootstrap: false
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: $PKI/ca.crt
authorization:
  mode: Webhook
containerRuntimeEndpoint: unix://$CTRD_SOCK
# This VM has cgroup v1 hierarchies; kubelet 1.35+ refuses them unless told not to.
failCgroupV1: false
cgroupDriver: cgroupfs
enforceNodeAllocatable: []
failSwapOn: false
clusterDNS:
  - $CLUSTER_DNS
clusterDomain: cluster.local
resolvConf: $CONF/resolv.conf
podLogsDir: $LOGS/pods
volumePluginDir: $KUBELET_DIR/volume-plugins
registerNode: true
registerWithTaints:
  - key: $TAINT_KEY
    value: "true"
    effect: NoSchedule
maxPods: 110
serializeImagePulls: false
# Nothing can be pulled again here: never collect images, never evict for a nearly full disk.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
shutdownGracePeriod: 0s
EOF
}

write_proxy_config() {
  write_kubeconfig "$CONF/kube-proxy.kubeconfig" system:kube-proxy "$PKI/kube-proxy.crt" "$PKI/kube-proxy.key"
}

write_corefile() {
  cat >"$CONF/coredns.Corefile" <<EOF
# Written by hack/node.sh: cluster.local for the test node's pods and the host. No forward: no
# upstream resolver may be reached from here.
.:53 {
    bind $GATEWAY
    errors
    health 127.0.0.1:$COREDNS_HEALTH_PORT
    ready 127.0.0.1:$COREDNS_READY_PORT
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $ADMIN_KUBECONFIG flashsale-test
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }
    cache 5
    loadbalance
}
EOF
}

