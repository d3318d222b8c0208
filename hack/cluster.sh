#!/usr/bin/env bash
# The kind quickstart behind `make up|down|images|deploy|stress`: a kind cluster (kind-config.yaml),
# the two images built and loaded into it, the operator installed by Helm, an example FlashSale
# applied and waited for, and loadgen pointed at it. Needs a container engine (docker or podman),
# kind, helm and kubectl; each is checked first, with how to get it.
#
#   hack/cluster.sh up | down | images | deploy | stress | check
#
# Knobs (environment): CONTAINER_ENGINE (docker|podman, default: the first that answers),
# IMAGE_TAG (the workspace's Cargo version), EXAMPLE (examples/redis.yaml), READY_TIMEOUT (900 s), OPERATOR_NAMESPACE
# (flashsale-system), HELM_ARGS (more `helm upgrade` flags, split on spaces, e.g.
# "--set observeLoad=false"); stress: STRESS_URL (http://localhost:8080), STRESS_RATE (open loop,
# req/s; unset: closed loop), STRESS_CONCURRENCY (64), STRESS_DURATION (30s), STRESS_TICKETS.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CLUSTER_NAME=flashsale # kind-config.yaml's `name`
KIND_CONFIG="$REPO_ROOT/kind-config.yaml"
CHART="$REPO_ROOT/charts/flashsale-operator"
RELEASE=flashsale-operator
OPERATOR_NAMESPACE="${OPERATOR_NAMESPACE:-flashsale-system}"
# The workspace's Cargo version: the chart's appVersion and the operator's default booking-app tag.
IMAGE_TAG="${IMAGE_TAG:-$(workspace_version)}"
# Fully qualified: podman would otherwise store `localhost/flashsale/...`, a name the cluster's
# containerd never asks for; docker and containerd both normalise `flashsale/x` to this.
OPERATOR_IMAGE="docker.io/flashsale/operator:$IMAGE_TAG"
BOOKING_IMAGE="docker.io/flashsale/booking-app:$IMAGE_TAG"
EXAMPLE="${EXAMPLE:-examples/redis.yaml}"
READY_TIMEOUT="${READY_TIMEOUT:-900}"
# kind-config.yaml maps node port 30080 (the examples' spec.bookingApp.service.nodePort) here.
BOOKING_URL="http://localhost:8080"

# The engine that answers, not merely one whose CLI is installed: a docker CLI without a
# running daemon cannot build or run anything.
engine() {
  local candidates=(docker podman) e
  [[ -n "${CONTAINER_ENGINE:-}" ]] && candidates=("$CONTAINER_ENGINE")
  for e in "${candidates[@]}"; do
    if command -v "$e" >/dev/null && "$e" info >/dev/null 2>&1; then
      echo "$e"
      return 0
    fi
  done
  return 1
}

no_engine() {
  local why="no container engine found (docker or podman)"
  if command -v docker >/dev/null; then why="the docker CLI is installed but its daemon does not answer (docker info)"; fi
  if command -v podman >/dev/null; then why="podman is installed but does not answer (podman info)"; fi
  cat >&2 <<EOF

  make up needs a container engine for kind: $why.

  Install and start Docker or Podman (CONTAINER_ENGINE=podman to pick Podman), then run make up again.
  Without one, run the same sale on local services, no cluster involved:

      make demo

EOF
  exit 2
}

# check [engine]: every tool the quickstart needs, each with how to get it; all missing ones at once.
check_tools() {
  local missing=()
  if [[ "${1:-}" == engine ]] && ! engine >/dev/null; then no_engine; fi
  command -v kind >/dev/null ||
    missing+=("kind: go install sigs.k8s.io/kind@v0.33.0 (then put \$(go env GOPATH)/bin on PATH), or your package manager")
  command -v helm >/dev/null ||
    missing+=("helm (v3): hack/tools.sh builds it into $FLASHSALE_BIN (on PATH for make), or your package manager")
  command -v kubectl >/dev/null ||
    missing+=("kubectl: hack/tools.sh builds it into $FLASHSALE_BIN, or your package manager")
  if ((${#missing[@]})); then
    printf '\n  Missing tools:\n' >&2
    printf '    - %s\n' "${missing[@]}" >&2
    printf '\n' >&2
    exit 2
  fi
}

kube() { kubectl --context "kind-$CLUSTER_NAME" "$@"; }

cluster_exists() { kind get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; }

# use_engine: pick the engine once; kind must be told when it is podman.
use_engine() {
  ENGINE="$(engine)" || no_engine
  if [[ "$ENGINE" == podman ]]; then export KIND_EXPERIMENTAL_PROVIDER=podman; fi
}

cmd_images() {
  use_engine
  local e="$ENGINE"
  log "building $BOOKING_IMAGE and $OPERATOR_IMAGE with $e (a cold Rust release build: several minutes)"
  # One Dockerfile (hack/Dockerfile), one target per image; the second reuses the first's build stage.
  "$e" build -f "$REPO_ROOT/hack/Dockerfile" --target booking-app -t "$BOOKING_IMAGE" "$REPO_ROOT"
  "$e" build -f "$REPO_ROOT/hack/Dockerfile" --target operator -t "$OPERATOR_IMAGE" "$REPO_ROOT"
}

# Through an archive: `kind load docker-image` asks the docker CLI, which podman users lack.
load_images() {
  use_engine
  local e="$ENGINE" img archive
  archive="$(mktemp -d)"
  for img in "$BOOKING_IMAGE" "$OPERATOR_IMAGE"; do
    log "loading $img into kind cluster $CLUSTER_NAME"
    "$e" save -o "$archive/image.tar" "$img"
    kind load image-archive "$archive/image.tar" --name "$CLUSTER_NAME"
    rm -f "$archive/image.tar"
  done
  rmdir "$archive"
}

create_cluster() {
  if cluster_exists; then
    log "kind cluster $CLUSTER_NAME exists; reusing it"
  else
    log "creating kind cluster $CLUSTER_NAME ($KIND_CONFIG)"
    kind create cluster --config "$KIND_CONFIG" --wait 120s
  fi
}

install_chart() {
  local extra=()
  read -r -a extra <<<"${HELM_ARGS:-}"
  log "installing the operator: helm upgrade --install $RELEASE -n $OPERATOR_NAMESPACE"
  helm upgrade --install "$RELEASE" "$CHART" --kube-context "kind-$CLUSTER_NAME" \
    --namespace "$OPERATOR_NAMESPACE" --create-namespace \
    --set image.repository="${OPERATOR_IMAGE%:*}" --set image.tag="$IMAGE_TAG" \
    --set bookingAppImage="$BOOKING_IMAGE" --wait --timeout 5m "${extra[@]}"
}

# The images built last (make images) into the running cluster, and the chart upgraded. The tag
# stays the Cargo version, so a changed image needs a restart to be used: the operator gets one here.
cmd_deploy() {
  check_tools engine
  cluster_exists || die "no kind cluster $CLUSTER_NAME: run make up"
  load_images
  local existed=false
  helm status "$RELEASE" --kube-context "kind-$CLUSTER_NAME" -n "$OPERATOR_NAMESPACE" >/dev/null 2>&1 && existed=true
  install_chart
  if $existed; then
    kube -n "$OPERATOR_NAMESPACE" rollout restart "deployment/$RELEASE"
    kube -n "$OPERATOR_NAMESPACE" rollout status "deployment/$RELEASE" --timeout 5m
  fi
  log "booking-app pods pick up a rebuilt image when they restart: kubectl delete pod -l app.kubernetes.io/name=booking-app"
}

# Waits for the Ready condition, printing each phase change; on timeout, shows why it is not Ready.
wait_ready() {
  local name="$1" start=$SECONDS phase last="" ready
  while :; do
    phase="$(kube get flashsale "$name" -o jsonpath='{.status.phase}' 2>/dev/null || true)"
    ready="$(kube get flashsale "$name" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)"
    if [[ "$phase" != "$last" ]]; then
      log "FlashSale $name: phase ${phase:-<none yet>} after $((SECONDS - start))s"
      last="$phase"
    fi
    [[ "$ready" == True ]] && return 0
    if ((SECONDS - start >= READY_TIMEOUT)); then
      kube describe flashsale "$name" >&2 || true
      kube get pods -o wide >&2 || true
      die "FlashSale $name not Ready after ${READY_TIMEOUT}s (conditions above; make down to start over)"
    fi
    sleep 5
  done
}

cmd_up() {
  check_tools engine
  create_cluster
  cmd_images
  load_images
  install_chart
  log "applying $EXAMPLE"
  local name
  name="$(kube apply -f "$REPO_ROOT/$EXAMPLE" -o name | sed -n 's|^flashsale\.flashsale\.dev/||p')"
  [[ -n "$name" ]] || die "$EXAMPLE holds no FlashSale"
  wait_ready "$name"
  kube get flashsale "$name"
  local event; event="$(kube get flashsale "$name" -o jsonpath='{.status.eventId}')"
  fetch_auth_secret
  cat <<EOF

  FlashSale $name is Ready. The booking API answers at $BOOKING_URL; the sale's event
  (spec.event) is $event. Tokens are signed with the sale's secret, copied to hack/.auth-secret:

    curl -s $BOOKING_URL/events/$event
    alice=\$(AUTH_HS256_SECRET_FILE=hack/.auth-secret cargo run -q -p booking-app -- token --user alice)
    curl -s -XPOST $BOOKING_URL/events/$event/bookings -H "authorization: Bearer \$alice" \\
         -H 'content-type: application/json' -H 'Idempotency-Key: order-1' -d '{"quantity":2}'

  Load it:      make stress            (loadgen against $BOOKING_URL, on an event of its own)
  Watch it:     kubectl get fs -w      (context kind-$CLUSTER_NAME)
  Tear down:    make down

EOF
}

cmd_down() {
  command -v kind >/dev/null || die "kind is not installed, so there is no kind cluster to delete"
  if cluster_exists; then
    kind delete cluster --name "$CLUSTER_NAME"
  else
    log "no kind cluster $CLUSTER_NAME"
  fi
}

# The example sale's token signing secret (the operator generates it into <sale>-credentials),
# copied to the git-ignored hack/.auth-secret: loadgen and `booking-app token` sign with it.
fetch_auth_secret() {
  local sale ns name
  sale="$(kube get -f "$REPO_ROOT/$EXAMPLE" -o jsonpath='{.metadata.namespace} {.metadata.name}')"
  read -r ns name <<<"$sale"
  kube -n "${ns:-default}" get secret "$name-credentials" -o jsonpath='{.data.auth-hs256-secret}' |
    base64 -d >"$REPO_ROOT/hack/.auth-secret" || die "no signing secret in $name-credentials"
  export AUTH_HS256_SECRET_FILE="$REPO_ROOT/hack/.auth-secret"
}

cmd_stress() {
  curl -sf --max-time 5 "$STRESS_URL/readyz" >/dev/null ||
    die "nothing Ready answers at $STRESS_URL/readyz: run make up first (or set STRESS_URL)"
  [[ -n "${AUTH_HS256_SECRET_FILE:-}" ]] || fetch_auth_secret
  # An event of loadgen's own, as large as the API accepts, so the run measures booking work and
  # not sold-out answers.
  local args=(loadgen --url "$STRESS_URL" --tickets "${STRESS_TICKETS:-100000000}" --users 1000000
    --concurrency "${STRESS_CONCURRENCY:-64}" --duration "${STRESS_DURATION:-30s}")
  [[ -n "${STRESS_RATE:-}" ]] && args+=(--rate "$STRESS_RATE")
  log "booking-app ${args[*]} (cargo builds the release binary first: minutes when cold)"
  (cd "$REPO_ROOT" && cargo run --release -q -p booking-app -- "${args[@]}")
}

STRESS_URL="${STRESS_URL:-$BOOKING_URL}"
case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  images) cmd_images ;;
  deploy) cmd_deploy ;;
  stress) cmd_stress ;;
  check) check_tools engine && log "container engine $(engine), kind, helm and kubectl found" ;;
  *) echo "usage: $0 up|down|images|deploy|stress|check" >&2; exit 2 ;;
esac
