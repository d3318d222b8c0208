#!/usr/bin/env bash
# The Helm chart's checks, run by `make test` against the control plane of hack/control-plane.sh:
#   1. helm lint; values.schema.json refuses what the chart cannot run (2 replicas)
#   2. the chart's CRD is crds/flashsale.yaml (plus Helm's annotation and labels)
#   3. the Deployment's env is what `flashsale-operator run` reads
#   4. README's FlashSale reference lists exactly the CRD's fields
#   5. helm template output, under several value sets, accepted by a server-side dry run
#   6. every file in examples/ accepted by a server-side dry run once the CRD is installed
#      (and a broken FlashSale refused: the dry run does validate)
#   7. RBAC: the chart installed (operator scaled to 0), the real operator run locally with its
#      ServiceAccount's token reconciles sales (children, status, calibration, a stage change)
#      with no "forbidden"; the same run with a ServiceAccount without the chart's role is refused.
#   8. a namespaced install (watchNamespaces): Roles only, `kubectl auth can-i` says no outside its
#      namespace, its operator reconciles a sale there, leaves one elsewhere alone, and is refused
#      (forbidden) when pointed at another namespace.
#   9. monitoring: with every monitor on, ServiceMonitor, PodMonitor, PrometheusRule and the Grafana
#      dashboard render and pass a server-side dry run against the Prometheus Operator's CRDs
#      (from its Go module, PROMETHEUS_OPERATOR_VERSION; they stay installed, like the FlashSale CRD);
#      every metric name they use is one the operator serves or booking-app registers, and every
#      expression parses as PromQL (hack/promql-check, Prometheus's parser).
#  10. the chart as a subchart of a throwaway parent chart (file:// dependency, `global` set) renders;
#      appVersion is the workspace's Cargo version and the image tags default to it.
# Each check says what it checks; the first failure stops the script. Everything it creates (a
# namespace, a Helm release, the operator process) is removed on exit.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CHART="$REPO_ROOT/charts/flashsale-operator"
CRD="$REPO_ROOT/crds/flashsale.yaml"
CP_ENV="$REPO_ROOT/hack/.control-plane.env"
# FLASHSALE_OPERATOR: an operator binary to use instead of building target/debug's.
OPERATOR="${FLASHSALE_OPERATOR:-${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug/flashsale-operator}"
# The Prometheus Operator whose CRDs the monitoring objects are checked against.
PROMETHEUS_OPERATOR_VERSION=v0.85.0
MONITORING_VALUES="metrics.serviceMonitor.enabled=true,metrics.podMonitor.enabled=true,metrics.prometheusRule.enabled=true,metrics.dashboard.enabled=true"
# Deadlines for the operator's work on the fake (kwok) nodes, generous for a busy 2-core machine.
RECONCILE_TIMEOUT=180

[[ -f "$CP_ENV" ]] || die "$CP_ENV missing: start the control plane first (hack/control-plane.sh up)"
# shellcheck source=/dev/null
. "$CP_ENV"
[[ -n "${KUBECONFIG:-}" && -f "$KUBECONFIG" ]] || die "KUBECONFIG from $CP_ENV does not exist: hack/control-plane.sh up"
ADMIN_KUBECONFIG="$KUBECONFIG"
for tool in kubectl helm; do
  [[ -x "$FLASHSALE_BIN/$tool" ]] || die "$tool missing from $FLASHSALE_BIN: hack/tools.sh builds it"
done
command -v jq >/dev/null || apt_install jq
kubectl() { "$FLASHSALE_BIN/kubectl" --kubeconfig="$ADMIN_KUBECONFIG" --request-timeout=30s "$@"; }
helm() { "$FLASHSALE_BIN/helm" --kubeconfig="$ADMIN_KUBECONFIG" "$@"; }
kubectl get --raw /readyz >/dev/null || die "the API server in $ADMIN_KUBECONFIG does not answer: hack/control-plane.sh up"

# One namespace (and Helm release of the same name) per run, so runs and other tests never meet.
NS="chart-test-$(date +%s)-$$"
RELEASE="$NS"
FULLNAME="$RELEASE-flashsale-operator"
WORK="$(mktemp -d)"
OPERATOR_PID=""
# The namespaced install of check 8: its release (in $NS), the namespace it watches, another one.
RELEASE_NSD="$NS-nsd"
FULLNAME_NSD="$RELEASE_NSD-flashsale-operator"
NS_WATCHED="$NS-watched"
NS_OTHER="$NS-other"
OPERATOR_NSD_PID=""
STEP=0

cleanup() {
  local rc=$?
  set +e
  for pid in "$OPERATOR_PID" "$OPERATOR_NSD_PID"; do
    if [[ -n "$pid" ]] && pid_alive "$pid"; then
      kill "$pid"
      wait_gone 10 "$pid" || kill -9 "$pid"
    fi
  done
  if ((rc != 0)) && [[ -f "$WORK/operator.log" ]]; then
    log "last lines of the operator's log:"
    tail -n 30 "$WORK/operator.log" >&2
  fi
  helm uninstall "$RELEASE" --namespace "$NS" >/dev/null 2>&1
  helm uninstall "$RELEASE_NSD" --namespace "$NS" >/dev/null 2>&1
  # The operators are stopped, so nobody would take the sales' drain finalizers off: do it here,
  # then the namespace controller deletes the sales and their children.
  for ns in "$NS" "$NS_WATCHED" "$NS_OTHER"; do
    for fs in $(kubectl get flashsales --namespace "$ns" -o name 2>/dev/null); do
      kubectl patch "$fs" --namespace "$ns" --type merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1
    done
  done
  kubectl delete namespace "$NS" "$NS_WATCHED" "$NS_OTHER" --ignore-not-found --wait=false >/dev/null 2>&1
  rm -rf "$WORK"
  if ((rc == 0)); then log "all chart checks passed"; else log "FAILED (exit $rc)"; fi
}
trap cleanup EXIT

check() { STEP=$((STEP + 1)); log "check $STEP: $*"; }
fail() { die "check $STEP failed: $*"; }

# ---------------------------------------------------------------------------------------------
check "helm lint --strict"
helm lint --strict "$CHART" >"$WORK/lint.out" 2>&1 || { cat "$WORK/lint.out" >&2; fail "helm lint"; }

check "values.schema.json refuses replicaCount=-1 and leaderElection.leaseDurationSeconds=0"
if helm template x "$CHART" --set replicaCount=-1 >/dev/null 2>"$WORK/schema.err"; then
  fail "helm template accepted replicaCount=-1"
fi
grep -q replicaCount "$WORK/schema.err" || { cat "$WORK/schema.err" >&2; fail "refused, but not for replicaCount"; }
if helm template x "$CHART" --set leaderElection.leaseDurationSeconds=0 >/dev/null 2>"$WORK/schema.err"; then
  fail "helm template accepted leaderElection.leaseDurationSeconds=0"
fi

check "values.schema.json takes a parent chart's global values and still refuses an unknown key"
helm template x "$CHART" --set global.imageRegistry=registry.corp.example >/dev/null 2>"$WORK/schema.err" ||
  { cat "$WORK/schema.err" >&2; fail "helm template refused global.imageRegistry"; }
if helm template x "$CHART" --set replicaCont=1 >/dev/null 2>"$WORK/schema.err"; then
  fail "helm template accepted the unknown key replicaCont"
fi
grep -q replicaCont "$WORK/schema.err" || { cat "$WORK/schema.err" >&2; fail "refused, but not for replicaCont"; }

check "appVersion is the workspace's Cargo version; both images default to it"
CARGO_VERSION="$(workspace_version)"
APP_VERSION="$(awk -F'"' '/^appVersion:/{print $2}' "$CHART/Chart.yaml")"
[[ -n "$CARGO_VERSION" && "$APP_VERSION" == "$CARGO_VERSION" ]] ||
  fail "Chart.yaml appVersion '$APP_VERSION' is not the workspace's Cargo version '$CARGO_VERSION'"
helm template x "$CHART" --show-only templates/deployment.yaml >"$WORK/images.yaml"
grep -q "image: \"flashsale/operator:$CARGO_VERSION\"" "$WORK/images.yaml" || fail "the operator image is not flashsale/operator:$CARGO_VERSION"
grep -q "value: \"flashsale/booking-app:$CARGO_VERSION\"" "$WORK/images.yaml" || fail "BOOKING_APP_IMAGE is not flashsale/booking-app:$CARGO_VERSION"
helm template x "$CHART" --show-only templates/deployment.yaml --set image.tag=1.2.3,fullnameOverride=shop-op \
  --set 'imagePullSecrets[0].name=regcred,podLabels.team=checkout' >"$WORK/overrides.yaml"
for want in 'image: "flashsale/operator:1.2.3"' 'name: shop-op' '- name: regcred' 'team: checkout'; do
  grep -qF -- "$want" "$WORK/overrides.yaml" || fail "image.tag/fullnameOverride/imagePullSecrets/podLabels: no '$want' in the Deployment"
done

# ---------------------------------------------------------------------------------------------
check "the chart's CRD is crds/flashsale.yaml (make crds keeps the copy in sync)"
[[ -s "$CRD" ]] || fail "$CRD is empty or missing: make crds"
cmp -s "$CRD" "$CHART/files/flashsale.yaml" || fail "charts/flashsale-operator/files/flashsale.yaml differs from $CRD: make crds"
helm template "$RELEASE" "$CHART" --namespace "$NS" --show-only templates/crd.yaml >"$WORK/chart-crd.yaml"
# as_json FILE: its objects as a stream of JSON documents, without the namespace kubectl fills in.
as_json() { kubectl create --dry-run=client -o json -f "$1" | jq 'del(.metadata.namespace)'; }
as_json "$WORK/chart-crd.yaml" >"$WORK/chart-crd.json"
as_json "$CRD" >"$WORK/crd.json"
[[ "$(jq -r '.metadata.annotations["helm.sh/resource-policy"]' "$WORK/chart-crd.json")" == keep ]] ||
  fail "the chart's CRD lacks helm.sh/resource-policy: keep (helm uninstall would delete every sale)"
strip='del(.metadata.annotations["helm.sh/resource-policy"]) | del(.metadata.labels)
       | if .metadata.annotations == {} then del(.metadata.annotations) else . end'
if ! diff <(jq -S "$strip" "$WORK/chart-crd.json") <(jq -S "$strip" "$WORK/crd.json") >"$WORK/crd.diff"; then
  head -40 "$WORK/crd.diff" >&2
  fail "the CRD rendered by the chart differs from $CRD (beyond Helm's annotation and labels)"
fi

# ---------------------------------------------------------------------------------------------
check "the Deployment's env is what \`flashsale-operator run\` reads"
if [[ -z "${FLASHSALE_OPERATOR:-}" ]]; then
  log "  building the operator (cargo build -p flashsale-operator; a no-op when make test built it)"
  (cd "$REPO_ROOT" && cargo build -q -p flashsale-operator) || fail "cargo build -p flashsale-operator"
fi
"$OPERATOR" run --help >"$WORK/run-help.txt"
helm template "$RELEASE" "$CHART" --namespace "$NS" --show-only templates/deployment.yaml >"$WORK/deployment.yaml"
as_json "$WORK/deployment.yaml" >"$WORK/deployment.json"
[[ "$(jq -c '.spec.template.spec.containers[0].args' "$WORK/deployment.json")" == '["run"]' ]] ||
  fail "the operator container's args are not [\"run\"]"
# RUST_LOG is read by tracing's EnvFilter and POD_NAME by the event recorder, not by clap.
while read -r var; do
  case "$var" in RUST_LOG | POD_NAME) continue ;; esac
  grep -q "\[env: $var=" "$WORK/run-help.txt" || fail "the chart sets $var, which flashsale-operator run does not read"
done < <(jq -r '.spec.template.spec.containers[0].env[].name' "$WORK/deployment.json")

check "README's FlashSale reference lists exactly the CRD's fields"
# Every spec path (ResourceRequirements counted as one field) and every top-level status field.
jq -r 'def fields($p): $p, if .properties and ($p | endswith(".resources") | not)
          then .properties | to_entries[] | .key as $k | .value | fields($p + "." + $k) else empty end;
       .spec.versions[0].schema.openAPIV3Schema.properties
       | (.spec.properties | to_entries[] | .key as $k | .value | fields("spec." + $k)),
         (.status.properties | keys[] | "status." + .)' "$WORK/crd.json" | sort -u >"$WORK/crd-fields"
# The table rows of README's "## The FlashSale resource" section: first cell, backticked paths.
awk '/^## The FlashSale resource/{on=1; next} /^## /{on=0} on && /^\| `(spec|status)\./' "$REPO_ROOT/README.md" |
  cut -d'|' -f2 | grep -o '[a-zA-Z0-9.]*' | grep -E '^(spec|status)\.' | sort -u >"$WORK/readme-fields"
if ! diff "$WORK/crd-fields" "$WORK/readme-fields" >"$WORK/fields.diff"; then
  sed 's/^</  in the CRD, not in README:/; s/^>/  in README, not in the CRD:/' "$WORK/fields.diff" | grep 'README' >&2
  fail "README.md's FlashSale tables and crds/flashsale.yaml disagree (lines above)"
fi

check "watchNamespaces renders a Role and RoleBinding per listed namespace, no cluster-wide RBAC"
helm template "$RELEASE" "$CHART" --namespace "$NS" --set 'watchNamespaces={team-a,team-b}' >"$WORK/nsd.yaml"
# objects_json FILE: its objects as one JSON array, namespaces kept.
objects_json() { kubectl create --dry-run=client -o json -f "$1" | jq -s '[.[] | if .kind == "List" then .items[] else . end]'; }
objects_json "$WORK/nsd.yaml" >"$WORK/nsd.json"
kinds_in() { jq -r --arg k "$1" '[.[] | select(.kind == $k) | .metadata.namespace // "-"] | sort | join(",")' "$WORK/nsd.json"; }
[[ "$(kinds_in ClusterRole)$(kinds_in ClusterRoleBinding)" == "" ]] || fail "a namespaced install renders a ClusterRole or ClusterRoleBinding"
# The Role in the release namespace is the leader election's (leases only).
[[ "$(kinds_in Role)" == "$NS,team-a,team-b" ]] || fail "Roles not in exactly $NS (Lease), team-a and team-b: $(kinds_in Role)"
[[ "$(kinds_in RoleBinding)" == "$NS,team-a,team-b" ]] || fail "RoleBindings not in exactly $NS, team-a and team-b: $(kinds_in RoleBinding)"
[[ "$(jq -r '.[] | select(.kind == "Deployment") | .spec.template.spec.containers[0].env[] | select(.name == "WATCH_NAMESPACE") | .value' "$WORK/nsd.json")" == "team-a,team-b" ]] ||
  fail "the Deployment does not set WATCH_NAMESPACE=team-a,team-b"
helm template "$RELEASE" "$CHART" --namespace "$NS" >"$WORK/cluster.yaml"
objects_json "$WORK/cluster.yaml" >"$WORK/nsd.json"
[[ "$(kinds_in ClusterRole)" == "-" && "$(kinds_in Role)" == "$NS" ]] ||
  fail "the default (cluster-wide) install: ClusterRoles in '$(kinds_in ClusterRole)', Roles in '$(kinds_in Role)' (want one ClusterRole, the Lease's Role in $NS)"
[[ "$(jq -c '[.[] | select(.kind == "Role") | .rules[] | .resources[]] | unique' "$WORK/nsd.json")" == '["leases"]' ]] ||
  fail "the release namespace's Role grants more than leases"
if helm template x "$CHART" --set 'watchNamespaces={Not_A_Namespace}' >/dev/null 2>"$WORK/schema.err"; then
  fail "helm template accepted watchNamespaces={Not_A_Namespace}"
fi

# ---------------------------------------------------------------------------------------------
kubectl create namespace "$NS" >/dev/null
VALUE_SETS=(
  ""
  "crds.install=false,replicaCount=0,logFormat=text,logLevel=debug"
  "rbac.create=false,serviceAccount.create=false,serviceAccount.name=custom,metrics.service.enabled=false"
  "watchNamespaces={$NS},imageAllowlist={registry.corp.example/,ghcr.io/flashsale/}"
)
for values in "${VALUE_SETS[@]}"; do
  check "helm template ${values:-(default values)} accepted by the API server (server-side dry run)"
  helm template "$RELEASE" "$CHART" --namespace "$NS" ${values:+--set "$values"} >"$WORK/rendered.yaml"
  # Server-side apply with --force-conflicts: the CRD may already exist, applied by other tests.
  kubectl apply --dry-run=server --server-side --force-conflicts --field-manager=chart-test \
    --namespace "$NS" -f "$WORK/rendered.yaml" >"$WORK/dry-run.out" 2>&1 ||
    { cat "$WORK/dry-run.out" >&2; fail "the API server refused the rendered chart"; }
  sed 's/^/    /' "$WORK/dry-run.out" >&2
done

# ---------------------------------------------------------------------------------------------
check "default values render no monitoring object (they need the Prometheus Operator's CRDs)"
helm template "$RELEASE" "$CHART" --namespace "$NS" >"$WORK/default.yaml"
if grep -Eq '^kind: (ServiceMonitor|PodMonitor|PrometheusRule)$|grafana_dashboard' "$WORK/default.yaml"; then
  fail "a monitoring object renders with the default values"
fi

check "the Prometheus Operator's CRDs ($PROMETHEUS_OPERATOR_VERSION, from its Go module) installed and Established"
command -v go >/dev/null || die "go is not installed: hack/tools.sh needs it too"
PROM_SCRATCH="$WORK/prom-mod"
mkdir -p "$PROM_SCRATCH"
PROM_DIR="$(cd "$PROM_SCRATCH" && go mod init scratch >/dev/null 2>&1 &&
  GOTOOLCHAIN=local GOFLAGS=-mod=mod GOMODCACHE="$FLASHSALE_CACHE/go/mod" \
    go mod download -json "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" | jq -r .Dir)" ||
  fail "go mod download github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION (is the Go module proxy reachable?)"
for crd in servicemonitors podmonitors prometheusrules; do
  f="$PROM_DIR/example/prometheus-operator-crd/monitoring.coreos.com_$crd.yaml"
  [[ -s "$f" ]] || fail "$f missing from the module"
  kubectl apply --server-side --force-conflicts --field-manager=chart-test -f "$f" >/dev/null
  kubectl wait --for=condition=Established --timeout=60s "crd/$crd.monitoring.coreos.com" >/dev/null
done

check "helm template with every monitor on: ServiceMonitor, PodMonitor, PrometheusRule, dashboard, accepted by a server-side dry run"
helm template "$RELEASE" "$CHART" --namespace "$NS" --set "$MONITORING_VALUES" >"$WORK/monitoring.yaml"
objects_json "$WORK/monitoring.yaml" >"$WORK/monitoring.json"
for kind in ServiceMonitor PodMonitor PrometheusRule; do
  [[ "$(jq --arg k "$kind" '[.[] | select(.kind == $k)] | length' "$WORK/monitoring.json")" == 1 ]] || fail "not one $kind rendered"
done
jq -e '.[] | select(.kind == "ConfigMap" and .metadata.labels.grafana_dashboard == "1") | .data["flashsale.json"] | fromjson | .panels | length >= 6' \
  "$WORK/monitoring.json" >/dev/null || fail "no dashboard ConfigMap (label grafana_dashboard: \"1\") with a dashboard JSON of 6+ panels"
jq -e '.[] | select(.kind == "PodMonitor") | .spec.podMetricsEndpoints[0].port == "metrics" and .spec.namespaceSelector.any == true' \
  "$WORK/monitoring.json" >/dev/null || fail "the PodMonitor does not scrape port metrics in every namespace"
kubectl apply --dry-run=server --server-side --force-conflicts --field-manager=chart-test \
  --namespace "$NS" -f "$WORK/monitoring.yaml" >"$WORK/dry-run.out" 2>&1 ||
  { cat "$WORK/dry-run.out" >&2; fail "the API server refused the monitoring objects"; }
grep -E 'servicemonitor|podmonitor|prometheusrule|configmap' "$WORK/dry-run.out" | sed 's/^/    /' >&2
helm template "$RELEASE" "$CHART" --namespace "$NS" --set "$MONITORING_VALUES" --set "watchNamespaces={team-a}" \
  --show-only templates/monitoring/podmonitor.yaml >"$WORK/podmonitor-nsd.yaml"
grep -q -- '- team-a' "$WORK/podmonitor-nsd.yaml" || fail "with watchNamespaces the PodMonitor does not look in exactly them"

check "every metric the PrometheusRule and the dashboard use is registered by booking-app or the operator"
# Names, without the type suffixes Prometheus adds (_bucket of a histogram; counters keep _total).
jq -r '.[] | select(.kind == "PrometheusRule") | .spec.groups[].rules[].expr' "$WORK/monitoring.json" >"$WORK/promql.txt"
jq -r '.[] | select(.kind == "ConfigMap" and .metadata.labels.grafana_dashboard == "1") | .data["flashsale.json"] | fromjson
       | .panels[].targets[].expr' "$WORK/monitoring.json" >>"$WORK/promql.txt"
grep -oE '\b(booking|flashsale_operator)_[a-z0-9_]+' "$WORK/promql.txt" | sort -u >"$WORK/metric-names"
[[ -s "$WORK/metric-names" ]] || fail "no metric name found in the rule and the dashboard"
while read -r name; do
  case "$name" in
    flashsale_operator_*)
      base="${name#flashsale_operator_}"
      grep -rqE "\"${base%_total}\"" "$REPO_ROOT/operator/src" "$REPO_ROOT/contract/src" || fail "$name: the operator registers no \"${base%_total}\"" ;;
    booking_*)
      base="${name#booking_}"; base="${base%_bucket}"
      grep -rqE "\"(${base}|${base%_total})\"" "$REPO_ROOT/booking-app/src" "$REPO_ROOT/contract/src" || fail "$name: booking-app registers no \"$base\"" ;;
  esac
done <"$WORK/metric-names"
log "  $(wc -l <"$WORK/metric-names") metric names checked: $(tr '\n' ' ' <"$WORK/metric-names")"

check "every expression of the PrometheusRule and the dashboard parses as PromQL (Prometheus's parser, hack/promql-check)"
(cd "$REPO_ROOT/hack/promql-check" && GOTOOLCHAIN=local GOFLAGS=-mod=readonly GOMODCACHE="$FLASHSALE_CACHE/go/mod" \
  GOCACHE="$FLASHSALE_CACHE/go/cache" go build -o "$WORK/promql-check" .) || fail "go build hack/promql-check"
jq '[.[] | select(.kind == "PrometheusRule") | .spec.groups[].rules[].expr]
    + [.[] | select(.kind == "ConfigMap" and .metadata.labels.grafana_dashboard == "1") | .data["flashsale.json"] | fromjson | .panels[].targets[].expr]' \
  "$WORK/monitoring.json" >"$WORK/promql.json"
"$WORK/promql-check" <"$WORK/promql.json" >"$WORK/promql.out" 2>&1 || { cat "$WORK/promql.out" >&2; fail "an expression does not parse"; }
log "  $(cat "$WORK/promql.out")"

check "the chart as a subchart of a throwaway parent (file:// dependency, global values) renders"
PARENT="$WORK/parent"
mkdir -p "$PARENT"
cat >"$PARENT/Chart.yaml" <<YAML
apiVersion: v2
name: shop-platform
version: 0.0.1
dependencies:
  - name: flashsale-operator
    version: "$(awk '/^version:/{print $2}' "$CHART/Chart.yaml")"
    repository: "file://$CHART"
YAML
cat >"$PARENT/values.yaml" <<'YAML'
global:
  imageRegistry: registry.corp.example
flashsale-operator:
  replicaCount: 1
  metrics:
    serviceMonitor: {enabled: true}
YAML
helm dependency update "$PARENT" >"$WORK/dep.out" 2>&1 || { cat "$WORK/dep.out" >&2; fail "helm dependency update of the parent"; }
helm template shop "$PARENT" --namespace "$NS" >"$WORK/parent.yaml" 2>"$WORK/parent.err" ||
  { cat "$WORK/parent.err" >&2; fail "helm template of the parent chart"; }
objects_json "$WORK/parent.yaml" >"$WORK/parent.json"
jq -e '[.[] | select(.kind == "Deployment" and .spec.replicas == 1)] | length == 1' "$WORK/parent.json" >/dev/null ||
  fail "the parent's value (replicaCount=1) did not reach the subchart's Deployment"
jq -e '[.[] | select(.kind == "ServiceMonitor")] | length == 1' "$WORK/parent.json" >/dev/null || fail "no ServiceMonitor through the parent"
kubectl apply --dry-run=server --server-side --force-conflicts --field-manager=chart-test \
  --namespace "$NS" -f "$WORK/parent.yaml" >"$WORK/dry-run.out" 2>&1 ||
  { cat "$WORK/dry-run.out" >&2; fail "the API server refused the parent chart's objects"; }
log "  $(jq length "$WORK/parent.json") objects rendered through the parent, accepted by a server-side dry run"

# ---------------------------------------------------------------------------------------------
check "install crds/flashsale.yaml and wait until it is Established"
kubectl apply --server-side --force-conflicts --field-manager=chart-test -f "$CRD" >/dev/null
kubectl wait --for=condition=Established --timeout=60s crd/flashsales.flashsale.dev >/dev/null

for example in "$REPO_ROOT"/examples/*.yaml; do
  check "examples/$(basename "$example") accepted by the API server (server-side dry run)"
  kubectl apply --dry-run=server --namespace "$NS" -f "$example" >"$WORK/dry-run.out" 2>&1 ||
    { cat "$WORK/dry-run.out" >&2; fail "the API server refused $example"; }
  sed 's/^/    /' "$WORK/dry-run.out" >&2
done

check "a FlashSale breaking a CEL rule (minReplicas > maxReplicas) is refused by the same dry run"
jq '.spec.capacity.minReplicas = 9 | .spec.capacity.maxReplicas = 3' \
  <(as_json "$REPO_ROOT/examples/redis.yaml") >"$WORK/broken.json"
if kubectl apply --dry-run=server --namespace "$NS" -f "$WORK/broken.json" >"$WORK/broken.out" 2>&1; then
  fail "the API server accepted minReplicas > maxReplicas"
fi
grep -q "minReplicas must not exceed" "$WORK/broken.out" || { cat "$WORK/broken.out" >&2; fail "refused for another reason"; }

# ---------------------------------------------------------------------------------------------
# token_kubeconfig SERVICEACCOUNT FILE: a kubeconfig that authenticates as that ServiceAccount only.
token_kubeconfig() {
  local token server ca
  token="$(kubectl create token "$1" --namespace "$NS" --duration=1h)"
  server="$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.server}')"
  ca="$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')"
  [[ -n "$ca" ]] || ca="$(base64 -w0 <"$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority}')")"
  cat >"$2" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: "$server", certificate-authority-data: "$ca"}}]
users: [{name: $1, user: {token: "$token"}}]
contexts: [{name: test, context: {cluster: test, user: $1, namespace: $NS}}]
current-context: test
EOF
}

# start_operator NAME SERVICEACCOUNT WATCH_NAMESPACE PID_VAR PORT_VAR: the real operator in the
# background, authenticated as SERVICEACCOUNT ($WORK/NAME.kubeconfig; its lease named after it),
# watching WATCH_NAMESPACE, logging to $WORK/NAME.log; sets PID_VAR (before the wait, so cleanup
# stops it whatever happens) and PORT_VAR, and waits for its /readyz.
start_operator() {
  local name="$1" sa="$2" watch="$3" pid_var="$4" port_var="$5" port
  token_kubeconfig "$sa" "$WORK/$name.kubeconfig"
  port="$(free_port)"
  printf -v "$port_var" '%s' "$port"
  KUBECONFIG="$WORK/$name.kubeconfig" WATCH_NAMESPACE="$watch" LISTEN_ADDR="127.0.0.1:$port" LOG_FORMAT=text NO_COLOR=1 \
    LEASE_NAME="$sa" LEASE_NAMESPACE="$NS" \
    RUST_LOG="info,flashsale_operator=debug" "$OPERATOR" run >"$WORK/$name.log" 2>&1 &
  printf -v "$pid_var" '%s' "$!"
  wait_until 60 "$name /readyz on 127.0.0.1:$port" "${!pid_var}" curl -sf "http://127.0.0.1:$port/readyz"
}

free_port() {
  local p
  for p in $(seq 18480 18499); do port_busy "$p" || { echo "$p"; return 0; }; done
  die "no free port in 18480-18499 for the operator's HTTP endpoints"
}

check "negative control: the operator with a ServiceAccount the chart did not bind is refused (forbidden)"
kubectl create serviceaccount nobody --namespace "$NS" >/dev/null
token_kubeconfig nobody "$WORK/nobody.kubeconfig"
if KUBECONFIG="$WORK/nobody.kubeconfig" WATCH_NAMESPACE="$NS" LISTEN_ADDR="127.0.0.1:$(free_port)" \
  timeout 60 "$OPERATOR" run >"$WORK/nobody.log" 2>&1; then
  fail "the operator ran without any permission"
fi
grep -qi forbidden "$WORK/nobody.log" || { cat "$WORK/nobody.log" >&2; fail "it failed, but not with forbidden"; }

check "helm install (RBAC, ServiceAccount; operator Deployment at 0 replicas, CRD already installed)"
helm install "$RELEASE" "$CHART" --namespace "$NS" --set replicaCount=0 --set crds.install=false \
  --wait --timeout 2m >"$WORK/install.out" 2>&1 || { cat "$WORK/install.out" >&2; fail "helm install"; }

check "the real operator, authenticated as the chart's ServiceAccount, reconciles sales without a forbidden"
# Limited to the test namespace: other tests' sales are not this operator's business.
start_operator operator "$FULLNAME" "$NS" OPERATOR_PID PORT

# The examples as they are, but with ClusterIP Services: node port 30080 is cluster-wide and
# not this test's to take.
apply_example() {
  as_json "$REPO_ROOT/examples/$1" | jq 'if .kind == "FlashSale" then del(.spec.bookingApp.service) else . end' |
    kubectl apply --namespace "$NS" -f - >/dev/null
}
sale() { kubectl get flashsale "$1" --namespace "$NS" -o json; }
no_forbidden() {
  if grep -i forbidden "$WORK/operator.log" >&2; then fail "the operator was forbidden something (lines above)"; fi
  pid_alive "$OPERATOR_PID" || fail "the operator exited"
}
# wait_for SECONDS DESCRIPTION CMD...: like wait_until, but also stops at the first forbidden.
wait_for() {
  local timeout="$1" what="$2" start=$SECONDS; shift 2
  until "$@" >/dev/null 2>&1; do
    no_forbidden
    ((SECONDS - start < timeout)) || fail "$what: not after ${timeout}s"
    sleep 1
  done
  log "  $what (${timeout}s allowed, took $((SECONDS - start))s)"
}
status_written() { sale "$1" | jq -e '.status.observedGeneration == .metadata.generation and .status.phase != null'; }
phase_is() { sale "$1" | jq -e --arg p "$2" '.status.phase == $p'; }
has() { # KIND NAME: the object exists in the test namespace
  kubectl get "$1" "$2" --namespace "$NS"
}
children_of() { # SALE: kinds of the sale's children present, sorted, comma-joined
  kubectl get secrets,services,statefulsets,deployments,poddisruptionbudgets,networkpolicies --namespace "$NS" \
    -l "app.kubernetes.io/instance=$1" -o json | jq -r '[.items[].kind] | unique | join(",")'
}
children_complete() { [[ "$(children_of "$1")" == "Deployment,NetworkPolicy,PodDisruptionBudget,Secret,Service,StatefulSet" ]]; }

apply_example redis.yaml
apply_example external-postgres.yaml
apply_example postgres.yaml
wait_for "$RECONCILE_TIMEOUT" "tour-redis: Secret, Services, StatefulSets, PDB, Deployments, NetworkPolicies created" children_complete tour-redis
wait_for "$RECONCILE_TIMEOUT" "tour-redis: status written for the current generation" status_written tour-redis
wait_for "$RECONCILE_TIMEOUT" "tour-redis: Ready (pods Ready on the kwok nodes)" phase_is tour-redis Ready
wait_for "$RECONCILE_TIMEOUT" "tour-external-db: status written (reads the external store's Secret)" status_written tour-external-db
# The per-sale gauges the dashboard and the alerts read, from the controller's cache.
sale_gauges_served() {
  local text
  text="$(curl -sf "http://127.0.0.1:$PORT/metrics")" || return 1
  grep -qF "flashsale_operator_sale_phase{namespace=\"$NS\",sale=\"tour-redis\",phase=\"Ready\"} 1" <<<"$text" &&
    grep -qE "^flashsale_operator_sale_desired_replicas\{namespace=\"$NS\",sale=\"tour-redis\"\} [1-9]" <<<"$text" &&
    grep -qE "^flashsale_operator_sale_target_rps\{namespace=\"$NS\",sale=\"tour-external-db\"\} " <<<"$text"
}
wait_for 60 "the operator's /metrics: tour-redis's phase (Ready) and desired replicas, tour-external-db's target rps" sale_gauges_served
curl -sf "http://127.0.0.1:$PORT/metrics" | grep -E "^flashsale_operator_sale_[a-z_]+\{namespace=\"$NS\",sale=\"tour-redis\"" | sed 's/^/    /' >&2

# tour-postgres pins no perPodRps: the operator calibrates (a scratch Deployment and Service, a
# loadgen Job, its pod's termination message read back). kwok completes the Job's pod without a
# result, so the attempt fails, is recorded, and its objects are deleted until the retry. It all
# happens within a second or two, so the evidence is the status and the operator's log.
attempt_failed() { sale "$1" | jq -e '.status.calibrationAttempt.failures >= 1'; }
attempt_deleted() { grep -Eq "deleted, no longer part of the sale.* kind=Job name=$1-cal-" "$WORK/operator.log"; }
wait_for "$RECONCILE_TIMEOUT" "tour-postgres: calibration Job's pod read back, the attempt recorded as failed" attempt_failed tour-postgres
log "    status.calibrationAttempt.lastError: $(sale tour-postgres | jq -r .status.calibrationAttempt.lastError)"
wait_for "$RECONCILE_TIMEOUT" "tour-postgres: the failed attempt's Job deleted until the retry" attempt_deleted tour-postgres

# A stage change drains the old stage with a Job and deletes what the new stage does not use:
# the create and delete verbs the steps above never needed.
kubectl patch flashsale tour-redis --namespace "$NS" --type=merge -p '{"spec":{"stage":"postgres"}}' >/dev/null
stage_is() { sale "$1" | jq -e --arg s "$2" '.status.stage == $s'; }
redis_gone() { ! has statefulset tour-redis-redis; }
wait_for "$RECONCILE_TIMEOUT" "tour-redis moved to stage postgres (drain Job ran)" stage_is tour-redis postgres
wait_for "$RECONCILE_TIMEOUT" "tour-redis: its Redis StatefulSet deleted" redis_gone
wait_for "$RECONCILE_TIMEOUT" "tour-redis: Ready again" phase_is tour-redis Ready

# Deleting a sale: the finalizer is taken off (patch of flashsales) once there is nothing to
# drain, after the credentials are handed to the kept Postgres claim (get of PVCs, patch of Secrets).
kubectl delete flashsale tour-redis --namespace "$NS" --wait=false >/dev/null
sale_gone() { ! has flashsale tour-redis; }
wait_for "$RECONCILE_TIMEOUT" "tour-redis deleted: its drain finalizer removed by the operator" sale_gone
no_forbidden
log "  the operator's log has no \"forbidden\" ($(wc -l <"$WORK/operator.log") lines)"

# ---------------------------------------------------------------------------------------------
check "a namespaced install: Roles in $NS_WATCHED only, no cluster-wide permission"
kubectl create namespace "$NS_WATCHED" >/dev/null
kubectl create namespace "$NS_OTHER" >/dev/null
helm install "$RELEASE_NSD" "$CHART" --namespace "$NS" --set replicaCount=0 --set crds.install=false \
  --set metrics.service.enabled=false --set "watchNamespaces={$NS_WATCHED}" \
  --wait --timeout 2m >"$WORK/install-nsd.out" 2>&1 || { cat "$WORK/install-nsd.out" >&2; fail "helm install (namespaced)"; }
SA_NSD="system:serviceaccount:$NS:$FULLNAME_NSD"
# can_i VERB RESOURCE SCOPE...: kubectl auth can-i's answer for the namespaced install's ServiceAccount.
can_i() { kubectl auth can-i "$1" "$2" "${@:3}" --as "$SA_NSD" 2>/dev/null || true; }
for q in "list secrets -A" "list secrets --namespace $NS_OTHER" "create statefulsets --namespace $NS_OTHER" \
  "list flashsales.flashsale.dev -A" "get secrets --namespace kube-system"; do
  # shellcheck disable=SC2086
  answer="$(can_i $q)"
  log "  kubectl auth can-i $q --as $SA_NSD: $answer"
  [[ "$answer" == no ]] || fail "the namespaced install may $q"
done
for q in "list secrets --namespace $NS_WATCHED" "patch statefulsets --namespace $NS_WATCHED" "list flashsales.flashsale.dev --namespace $NS_WATCHED"; do
  # shellcheck disable=SC2086
  answer="$(can_i $q)"
  log "  kubectl auth can-i $q --as $SA_NSD: $answer"
  [[ "$answer" == yes ]] || fail "the namespaced install may not $q"
done

check "the namespaced operator reconciles a sale in $NS_WATCHED and leaves one in $NS_OTHER alone"
helm get manifest "$RELEASE_NSD" --namespace "$NS" >"$WORK/nsd-manifest.yaml"
WATCH_NSD="$(objects_json "$WORK/nsd-manifest.yaml" |
  jq -r '.[] | select(.kind == "Deployment") | .spec.template.spec.containers[0].env[] | select(.name == "WATCH_NAMESPACE") | .value')"
[[ "$WATCH_NSD" == "$NS_WATCHED" ]] || fail "the namespaced Deployment sets WATCH_NAMESPACE=$WATCH_NSD, not $NS_WATCHED"
start_operator operator-nsd "$FULLNAME_NSD" "$WATCH_NSD" OPERATOR_NSD_PID PORT_NSD
for ns in "$NS_WATCHED" "$NS_OTHER"; do
  as_json "$REPO_ROOT/examples/postgres.yaml" | jq 'if .kind == "FlashSale" then del(.spec.bookingApp.service) else . end' |
    kubectl apply --namespace "$ns" -f - >/dev/null
done
nsd_status_written() {
  kubectl get flashsale tour-postgres --namespace "$NS_WATCHED" -o json | jq -e '.status.observedGeneration == .metadata.generation'
}
nsd_no_forbidden() {
  if grep -i forbidden "$WORK/operator-nsd.log" >&2; then fail "the namespaced operator was forbidden something (lines above)"; fi
  pid_alive "$OPERATOR_NSD_PID" || fail "the namespaced operator exited"
}
start=$SECONDS
until nsd_status_written >/dev/null 2>&1; do
  nsd_no_forbidden
  ((SECONDS - start < RECONCILE_TIMEOUT)) || fail "tour-postgres in $NS_WATCHED: no status after ${RECONCILE_TIMEOUT}s"
  sleep 1
done
log "  tour-postgres in $NS_WATCHED reconciled (status written) after $((SECONDS - start))s"
# A new sale's first pass writes only its status; the next one, at once, creates the children.
until kubectl get statefulset tour-postgres-postgres --namespace "$NS_WATCHED" >/dev/null 2>&1; do
  nsd_no_forbidden
  ((SECONDS - start < RECONCILE_TIMEOUT)) || fail "no StatefulSet in $NS_WATCHED after ${RECONCILE_TIMEOUT}s"
  sleep 1
done
sleep 5
[[ "$(kubectl get flashsale tour-postgres --namespace "$NS_OTHER" -o json | jq -c '.status // null')" == null ]] ||
  fail "the sale in $NS_OTHER has a status: the namespaced operator reached it"
[[ "$(kubectl get statefulsets,deployments,secrets --namespace "$NS_OTHER" -l app.kubernetes.io/instance=tour-postgres -o name | wc -l)" == 0 ]] ||
  fail "children of the sale in $NS_OTHER exist"
nsd_no_forbidden
log "  tour-postgres in $NS_OTHER: no status, no children"

check "the namespaced operator pointed at $NS_OTHER is refused (forbidden)"
if KUBECONFIG="$WORK/operator-nsd.kubeconfig" WATCH_NAMESPACE="$NS_OTHER" LISTEN_ADDR="127.0.0.1:$(free_port)" LEASE_NAME="$FULLNAME_NSD" \
  timeout 60 "$OPERATOR" run >"$WORK/nsd-other.log" 2>&1; then
  fail "the namespaced operator ran in $NS_OTHER"
fi
grep -qi forbidden "$WORK/nsd-other.log" || { cat "$WORK/nsd-other.log" >&2; fail "it failed, but not with forbidden"; }
log "  $(grep -i -m1 -o 'cannot list.*forbidden[^"]*' "$WORK/nsd-other.log" | head -c 240)"
