# shellcheck shell=bash
# hack/node.sh, the node's network (sourced): the bridge, forwarding, our iptables guards, and
# their teardown. Reads node.sh's settings.
# shellcheck disable=SC2154  # the settings are node.sh's
saved_sysctl() { cat "$RUN/ip_forward.saved" 2>/dev/null || true; }

setup_network() {
  # Bridged pod-to-pod replies must pass through iptables, or ClusterIP replies are not un-DNATed.
  [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] || modprobe br_netfilter 2>/dev/null ||
    die "br_netfilter is not available (/proc/sys/net/bridge missing)"
  echo 1 >/proc/sys/net/bridge/bridge-nf-call-iptables
  # Pods reach ClusterIPs through the host (DNAT, then back into the bridge): forwarding is needed.
  # The FORWARD guard below keeps pod traffic inside the bridge; `down` restores the old value.
  [[ -f "$RUN/ip_forward.saved" ]] || cat /proc/sys/net/ipv4/ip_forward >"$RUN/ip_forward.saved"
  echo 1 >/proc/sys/net/ipv4/ip_forward

  # The bridge exists before any pod so CoreDNS can bind its gateway address; the CNI bridge
  # plugin adopts it.
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
  fi
  ip addr replace "$GATEWAY/${POD_CIDR#*/}" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # Host connections to ClusterIPs need a route before kube-proxy's DNAT: into the bridge, never
  # the default route.
  ip route replace "$SERVICE_CIDR" dev "$BRIDGE" src "$GATEWAY"

  local ipt=(iptables -w 5)
  "${ipt[@]}" -N "$FWD_CHAIN" 2>/dev/null || "${ipt[@]}" -F "$FWD_CHAIN"
  "${ipt[@]}" -A "$FWD_CHAIN" -i "$BRIDGE" -o "$BRIDGE" -j RETURN
  "${ipt[@]}" -A "$FWD_CHAIN" -i "$BRIDGE" -j DROP
  "${ipt[@]}" -C FORWARD -j "$FWD_CHAIN" 2>/dev/null || "${ipt[@]}" -I FORWARD 1 -j "$FWD_CHAIN"
  "${ipt[@]}" -N "$OUT_CHAIN" 2>/dev/null || "${ipt[@]}" -F "$OUT_CHAIN"
  "${ipt[@]}" -A "$OUT_CHAIN" -m conntrack --ctstate DNAT ! -d "$RESERVED_CIDR" ! -o lo -j REJECT
  "${ipt[@]}" -C OUTPUT -j "$OUT_CHAIN" 2>/dev/null || "${ipt[@]}" -I OUTPUT 1 -j "$OUT_CHAIN"
}

teardown_iptables() {
  local ipt=(iptables -w 5) table chain
  if [[ -x "$FLASHSALE_BIN/kube-proxy" ]]; then
    "$FLASHSALE_BIN/kube-proxy" --cleanup --proxy-mode=iptables >>"$LOGS/kube-proxy.log" 2>&1 ||
      log "kube-proxy --cleanup reported errors (see $LOGS/kube-proxy.log)"
  fi
  while "${ipt[@]}" -D FORWARD -j "$FWD_CHAIN" 2>/dev/null; do :; done
  while "${ipt[@]}" -D OUTPUT -j "$OUT_CHAIN" 2>/dev/null; do :; done
  for chain in "$FWD_CHAIN" "$OUT_CHAIN"; do
    if "${ipt[@]}" -F "$chain" 2>/dev/null; then "${ipt[@]}" -X "$chain" 2>/dev/null || true; fi
  done
  # The kubelet's KUBE-FIREWALL (drops outside connections to 127.0.0.0/8 when route_localnet is
  # on), and its canary chains (it watches them to notice a flushed firewall).
  while "${ipt[@]}" -D INPUT -j KUBE-FIREWALL 2>/dev/null; do :; done
  while "${ipt[@]}" -D OUTPUT -j KUBE-FIREWALL 2>/dev/null; do :; done
  if "${ipt[@]}" -F KUBE-FIREWALL 2>/dev/null; then "${ipt[@]}" -X KUBE-FIREWALL 2>/dev/null || true; fi
  for table in mangle nat filter; do
    for chain in KUBE-KUBELET-CANARY KUBE-PROXY-CANARY KUBE-IPTABLES-HINT; do
      if "${ipt[@]}" -t "$table" -F "$chain" 2>/dev/null; then
        "${ipt[@]}" -t "$table" -X "$chain" 2>/dev/null || true
      fi
    done
  done
}

teardown_network() {
  if command -v iptables >/dev/null; then teardown_iptables; fi
  if ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link del "$BRIDGE" && log "removed bridge $BRIDGE"
  fi
  local saved; saved="$(saved_sysctl)"
  if [[ -n "$saved" ]]; then
    echo "$saved" >/proc/sys/net/ipv4/ip_forward
    rm -f "$RUN/ip_forward.saved"
  fi
}

