# shellcheck shell=bash
# The steps of `hack/node.sh e2e` (sourced by hack/node/e2e.sh): waiting for a sale, checking
# its pods are real containers, booking through its Service, the Redis pod deleted under load,
# the calibration figure against loadgen's own, the stage switch with its drain Job, Pod
# Security. Each step fails the run with e2e_fail, naming what it saw.

fs_field() { kubectl get fs "$1" -n "$E2E_NS" -o jsonpath="$2" 2>/dev/null; }

# e2e_wait_ready SALE STAGE: until phase Ready at status.stage STAGE, printing each phase change.
e2e_wait_ready() {
  local sale="$1" stage="$2" start=$SECONDS seen="" now phase
  while :; do
    phase="$(fs_field "$sale" '{.status.phase}')"
    now="$phase/$(fs_field "$sale" '{.status.stage}')"
    if [[ $now != "$seen" ]]; then
      log "  $sale: phase ${phase:-<none>}, stage $(fs_field "$sale" '{.status.stage}') after $((SECONDS - start))s: $(fs_field "$sale" '{.status.conditions[?(@.type=="Ready")].message}')"
      seen="$now"
    fi
    [[ $now == "Ready/$stage" ]] && break
    ((SECONDS - start < E2E_TIMEOUT)) || e2e_fail "$sale not Ready at stage $stage within ${E2E_TIMEOUT}s (now $now)"
    sleep 3
  done
  log "ok: $sale Ready at stage $stage after $((SECONDS - start))s"
}

# e2e_check_pods SALE STAGE: every pod of the sale that is not a finished Job (or going) runs on the real
# node, every container ready with a containerd id that is a running task; the stage's API and
# (redis, kafka) worker and store pods are among them. Prints the pods.
e2e_check_pods() {
  local sale="$1" stage="$2" pods bad component start=$SECONDS
  # Ready counts the pods the sizing asks for; a rollout (a new measurement changes the pods'
  # settings) may still be replacing one: give it a minute to settle.
  while :; do
    pods="$(kubectl get pods -n "$E2E_NS" -l app.kubernetes.io/instance="$sale" -o json)"
    bad="$(e2e_pods_not_running "$pods")$(e2e_rollouts_unfinished "$sale")"
    [[ -n $bad ]] || break
    ((SECONDS - start < 60)) || e2e_fail "pods of $sale that are not running containers after 60s: $bad"
    sleep 2
  done
  for component in api database $( [[ $stage == redis ]] && echo inventory-cache worker) $( [[ $stage == kafka ]] && echo request-queue worker); do
    jq -e --arg c "$component" '[.items[] | select(.metadata.labels["app.kubernetes.io/component"] == $c and .status.phase == "Running")] | length > 0' <<<"$pods" >/dev/null ||
      e2e_fail "$sale at stage $stage has no running $component pod"
  done
  log "ok: every container of $sale (stage $stage) is a running containerd task on $NODE_NAME:"
  jq -r '["POD", "COMPONENT", "IP", "UID", "CONTAINER-ID"],
    (.items[] | select(.status.phase != "Succeeded" and .metadata.deletionTimestamp == null) | [.metadata.name, .metadata.labels["app.kubernetes.io/component"],
      .status.podIP, ((.spec.securityContext.runAsUser // .spec.containers[0].securityContext.runAsUser // "image") | tostring),
      (.status.containerStatuses[0].containerID | ltrimstr("containerd://") | .[0:13])]) | @tsv' <<<"$pods" |
    column -t | sed 's/^/    /' >&2
}

# e2e_rollouts_unfinished SALE: a line per Deployment of the sale still replacing pods (an old
# pod about to be stopped still sits behind the Service).
e2e_rollouts_unfinished() {
  kubectl get deployments -n "$E2E_NS" -l app.kubernetes.io/instance="$1" -o json | jq -r '.items[] |
    select(.status.observedGeneration != .metadata.generation or (.status.replicas // 0) != (.spec.replicas // 1)
      or (.status.updatedReplicas // 0) != (.spec.replicas // 1) or (.status.availableReplicas // 0) != (.spec.replicas // 1)) |
    "\(.metadata.name): rollout under way (\(.status.updatedReplicas // 0) updated, \(.status.replicas // 0) pods, \(.spec.replicas // 1) wanted)"'
}

# e2e_pods_not_running PODS_JSON: one line per pod or container that is not as it must be.
e2e_pods_not_running() {
  local tasks
  tasks="$(running_tasks | jq -R . | jq -s .)"
  jq -r --arg node "$NODE_NAME" --argjson tasks "$tasks" '
    .items[] | select(.status.phase != "Succeeded" and .metadata.deletionTimestamp == null) |
    . as $p | ($p.status.containerStatuses // []) as $cs |
    if $p.spec.nodeName != $node then "\($p.metadata.name): on node \($p.spec.nodeName)"
    elif ($cs | length) != ($p.spec.containers | length) then "\($p.metadata.name): \($cs | length) of \($p.spec.containers | length) containers started"
    else ($cs[] | select((.ready | not) or (.state.running == null) or ((.containerID // "") | startswith("containerd://") | not)
           or (((.containerID // "") | ltrimstr("containerd://")) as $id | [$tasks[] | select(. == $id)] | length == 0))
         | "\($p.metadata.name)/\(.name): ready=\(.ready) state=\(.state | keys[0]) id=\(.containerID // "none")")
    end' <<<"$1"
}

# e2e_secret SALE: the sale's generated token secret, in a file for `booking-app token`/loadgen.
e2e_secret() {
  local file="$E2E_WORK/$1.secret"
  [[ -s $file ]] || {
    kubectl get secret "$1-credentials" -n "$E2E_NS" -o jsonpath='{.data.auth-hs256-secret}' | base64 -d >"$file"
    chmod 600 "$file"
  }
  [[ -s $file ]] || e2e_fail "Secret $1-credentials has no auth-hs256-secret"
  echo "$file"
}

e2e_token() { AUTH_HS256_SECRET_FILE="$(e2e_secret "$1")" "$E2E_APP" token --user "$2"; }

# e2e_service_ip SALE: the ClusterIP of SALE's booking Service, its name resolved through CoreDNS.
e2e_service_ip() {
  local name="$1-booking-app.$E2E_NS.svc.cluster.local" ip out
  ip="$(kubectl get service "$1-booking-app" -n "$E2E_NS" -o jsonpath='{.spec.clusterIP}')"
  out="$(busybox nslookup "$name" "$GATEWAY" 2>&1)" || e2e_fail "nslookup $name: $out"
  grep -q "$ip" <<<"$out" || e2e_fail "$name resolved to something else than $ip: $out"
  echo "$ip"
}

# e2e_api SALE METHOD PATH [TOKEN] [KEY] [BODY]: "<status> <body>" of a call through the Service
# ("000 " when nothing answered).
e2e_api() {
  local sale="$1" method="$2" path="$3" token="${4:-}" key="${5:-}" body="${6:-}" args=() ip code
  ip="$(e2e_service_ip "$sale")"
  [[ -n $token ]] && args+=(-H "authorization: Bearer $token")
  [[ -n $key ]] && args+=(-H "Idempotency-Key: $key")
  [[ -n $body ]] && args+=(-H 'content-type: application/json' -d "$body")
  code="$(curl -s --max-time 10 -X "$method" -o "$E2E_WORK/answer" -w '%{http_code}' "${args[@]}" "http://$ip:8080$path")" || true
  echo "${code:-000} $(cat "$E2E_WORK/answer" 2>/dev/null)"
  rm -f "$E2E_WORK/answer"
}

# e2e_remaining SALE: remaining tickets of the sale's event, as GET /events/{id} reports them.
e2e_remaining() {
  local out
  out="$(e2e_api "$1" GET "/events/$(fs_field "$1" '{.status.eventId}')")"
  [[ $out == 200\ * ]] || e2e_fail "GET /events of $1: $out"
  jq -r .remaining <<<"${out#* }"
}

# e2e_book SALE EVENT TOKEN KEY BODY: "<status> <body>" of a booking; as a client would, no
# answer or a 503 is retried with the same Idempotency-Key (safe: a retry gets the first answer).
e2e_book() {
  local i out
  for i in 1 2 3 4 5; do
    out="$(e2e_api "$1" POST "/events/$2/bookings" "$3" "$4" "$5")"
    [[ $out == 000\ * || $out == 503\ * ]] || break
    log "  booking at $1: attempt $i got ${out:0:120}; retrying with the same key"
    sleep 2
  done
  echo "$out"
}

# e2e_book_confirmed SALE USER [KEY]: one booking through the Service, 201 confirmed, read back.
# Prints the booking id.
e2e_book_confirmed() {
  local sale="$1" user="$2" key="${3:-$2-first}" token event out id
  token="$(e2e_token "$sale" "$user")"
  event="$(fs_field "$sale" '{.status.eventId}')"
  out="$(e2e_book "$sale" "$event" "$token" "$key" '{"quantity":2}')"
  [[ $out == 201\ * ]] || e2e_fail "booking at $sale: expected 201, got $out"
  id="$(jq -r .id <<<"${out#* }")"
  e2e_expect_booking "$sale" "$user" "$id" confirmed
  log "ok: $user booked 2 tickets of $sale's event $event through Service $sale-booking-app: 201, $id confirmed"
  echo "$id"
}

# e2e_expect_booking SALE USER ID STATUS: GET /bookings/{id} answers STATUS.
e2e_expect_booking() {
  local out
  out="$(e2e_api "$1" GET "/bookings/$3" "$(e2e_token "$1" "$2")")"
  [[ $out == 200\ * && $(jq -r .status <<<"${out#* }") == "$4" ]] ||
    e2e_fail "GET /bookings/$3 at $1: expected $4, got $out"
}

# e2e_tour_redis: a booking, then loadgen through the Service for 30 s while the Redis pod is
# deleted at 8 s; loadgen's invariants must hold (a confirmed booking lost to the restart would
# show as `remaining` above what its answers imply) and the first booking must survive. Meanwhile
# the operator's load observer must report the load it read from the pods' /metrics.
e2e_tour_redis() {
  local ip event old_uid first_uid new_uid observed=0 rps start out i
  E2E_TOUR_FIRST="$(e2e_book_confirmed "$E2E_TOUR" alice)"
  ip="$(e2e_service_ip "$E2E_TOUR")"
  event="$(fs_field "$E2E_TOUR" '{.status.eventId}')"
  old_uid="$(kubectl get pod "$E2E_TOUR-redis-0" -n "$E2E_NS" -o jsonpath='{.metadata.uid}')"
  first_uid="$old_uid"
  log "loadgen through http://$ip:8080 (Service $E2E_TOUR-booking-app) for 30s; the Redis pod is deleted at 8s"
  AUTH_HS256_SECRET_FILE="$(e2e_secret "$E2E_TOUR")" "$E2E_APP" loadgen --url "http://$ip:8080" \
    --event-id "$event" --concurrency 8 --duration 30s --warmup 0s --request-timeout 5s \
    --json --no-progress >"$E2E_WORK/loadgen-redis.json" 2>"$E2E_WORK/loadgen-redis.log" &
  local lg=$!
  E2E_BACKGROUND+=("$lg")
  start=$SECONDS
  while pid_alive "$lg"; do
    if [[ -n $old_uid ]] && ((SECONDS - start >= 8)); then
      kubectl delete pod "$E2E_TOUR-redis-0" -n "$E2E_NS" --wait=false >/dev/null || e2e_fail "could not delete the Redis pod"
      log "  deleted pod $E2E_TOUR-redis-0 (uid $old_uid) under load"
      old_uid=""
    fi
    rps="$(fs_field "$E2E_TOUR" '{.status.observedRps}')"
    [[ -n $rps ]] && awk -v r="$rps" 'BEGIN { exit !(r > 0) }' && observed="$rps"
    ((SECONDS - start < 120)) || e2e_fail "loadgen still running after 120s"
    sleep 2
  done
  wait "$lg" || e2e_fail "loadgen exited $? (2: invariants violated): $(tail -n 20 "$E2E_WORK/loadgen-redis.log")"
  out="$(jq -c '{answers: .run.report.answers, rps: .run.report.throughput_rps, ok: .run.invariants.ok,
    confirmed: .run.invariants.confirmed_quantity, unknown: .run.invariants.unknown_quantity,
    remaining_after: .run.invariants.remaining_after, violations: .run.invariants.violations}' "$E2E_WORK/loadgen-redis.json")"
  [[ $(jq -r .ok <<<"$out") == true ]] || e2e_fail "loadgen's invariants do not hold: $out"
  log "ok: loadgen's invariants hold across the Redis restart: $out"
  e2e_wait_ready "$E2E_TOUR" redis
  new_uid="$(kubectl get pod "$E2E_TOUR-redis-0" -n "$E2E_NS" -o jsonpath='{.metadata.uid}')"
  [[ -n $new_uid && $new_uid != "$first_uid" ]] || e2e_fail "the Redis pod was not replaced (uid $first_uid)"
  e2e_expect_booking "$E2E_TOUR" alice "$E2E_TOUR_FIRST" confirmed
  log "ok: Redis pod replaced (uid $new_uid); alice's booking $E2E_TOUR_FIRST still confirmed"
  # The observer scrapes every 15 s; the last scrape may come after loadgen stopped.
  for ((i = 0; i < 20; i++)); do
    [[ $observed != 0 ]] && break
    rps="$(fs_field "$E2E_TOUR" '{.status.observedRps}')"
    [[ -n $rps ]] && awk -v r="$rps" 'BEGIN { exit !(r > 0) }' && observed="$rps"
    sleep 2
  done
  [[ $observed != 0 ]] || e2e_fail "status.observedRps never rose above 0: the operator read no load from the pods' /metrics"
  log "ok: the operator's load observer read the pods' /metrics: status.observedRps $observed"
  E2E_TOUR_REMAINING="$(e2e_remaining "$E2E_TOUR")"
}

# e2e_check_calibration: status.measuredPerPodRps is what the loadgen container wrote in its
# termination message (seen by the watch), for the Job status.calibration names.
e2e_check_calibration() {
  local measured job message out
  measured="$(fs_field "$E2E_CAL" '{.status.measuredPerPodRps}')"
  job="$(fs_field "$E2E_CAL" '{.status.calibration.job}')"
  [[ -n $measured && -n $job ]] || e2e_fail "$E2E_CAL is Ready without a measurement (measuredPerPodRps '$measured', job '$job')"
  message="$(jq -r --arg job "$job" 'select(.metadata.labels["job-name"] == $job) |
    .status.containerStatuses[]?.state.terminated.message // empty' "$E2E_WORK/loadgen-pods.json" | tail -n 1)"
  [[ -n $message ]] || e2e_fail "no termination message of Job $job's pod was seen"
  jq -e --argjson m "$measured" '.perPodRps == $m' <<<"$message" >/dev/null ||
    e2e_fail "status.measuredPerPodRps $measured differs from loadgen's termination message $message"
  out="$(kubectl get events -n "$E2E_NS" --field-selector reason=Calibrated,involvedObject.name="$E2E_CAL" -o jsonpath='{.items[*].message}')"
  [[ $out == *"(Job $job)"* ]] || e2e_fail "no Event Calibrated naming Job $job on $E2E_CAL: '$out'"
  log "ok: calibration Job $job ran loadgen against a scratch pod: termination message $message;"
  log "    status.measuredPerPodRps $measured, perPodRps $(fs_field "$E2E_CAL" '{.status.perPodRps}'), desiredReplicas $(fs_field "$E2E_CAL" '{.status.desiredReplicas}'); Event Calibrated: $out"
}

# e2e_switch_to_kafka: tour's stage redis -> kafka; the drain Job must complete, the tickets sold
# at stage redis must all be in Postgres (remaining unchanged), alice's booking still confirmed,
# and a new booking goes 202 -> confirmed.
e2e_switch_to_kafka() {
  local token event out id status i remaining
  log "switching $E2E_TOUR to stage kafka (remaining $E2E_TOUR_REMAINING at stage redis)"
  e2e_sale_tour kafka | kubectl apply -f - >/dev/null
  e2e_wait_ready "$E2E_TOUR" kafka
  e2e_check_pods "$E2E_TOUR" kafka
  jq -se --arg job "$E2E_TOUR-drain-redis" 'map(select(.metadata.name == $job and (.status.succeeded // 0) >= 1)) | length > 0' \
    "$E2E_WORK/jobs.json" >/dev/null || e2e_fail "the drain Job $E2E_TOUR-drain-redis was never seen succeeded"
  log "ok: drain Job $E2E_TOUR-drain-redis succeeded; $(kubectl get events -n "$E2E_NS" --field-selector reason=StageSwitched -o jsonpath='{.items[-1:].message}')"
  remaining="$(e2e_remaining "$E2E_TOUR")"
  [[ $remaining == "$E2E_TOUR_REMAINING" ]] ||
    e2e_fail "remaining $remaining at stage kafka, $E2E_TOUR_REMAINING at stage redis: the drain lost or invented bookings"
  e2e_expect_booking "$E2E_TOUR" alice "$E2E_TOUR_FIRST" confirmed
  log "ok: every ticket sold at stage redis is in Postgres (remaining $remaining); $E2E_TOUR_FIRST still confirmed"
  token="$(e2e_token "$E2E_TOUR" bob)"
  event="$(fs_field "$E2E_TOUR" '{.status.eventId}')"
  out="$(e2e_book "$E2E_TOUR" "$event" "$token" bob-kafka '{"quantity":1}')"
  [[ $out == 202\ * ]] || e2e_fail "booking at stage kafka: expected 202, got $out"
  id="$(jq -r .id <<<"${out#* }")"
  for ((i = 0; i < 60; i++)); do
    out="$(e2e_api "$E2E_TOUR" GET "/bookings/$id" "$token")"
    status="$(jq -r .status <<<"${out#* }" 2>/dev/null)"
    [[ $status == pending ]] || break
    sleep 1
  done
  [[ $status == confirmed ]] || e2e_fail "bob's booking $id at stage kafka ended as: $out"
  log "ok: at stage kafka bob's booking $id went 202 pending -> confirmed in ${i}s"
}

# e2e_check_pod_security: the namespace enforces restricted (a root pod is refused), and no
# controller was refused a pod of the sales (every pod above was admitted under it).
e2e_check_pod_security() {
  local out
  if out="$(kubectl run root-pod -n "$E2E_NS" --image="$BUSYBOX_IMAGE" --restart=Never -- sleep 1 2>&1)"; then
    kubectl delete pod root-pod -n "$E2E_NS" --wait=false >/dev/null 2>&1
    e2e_fail "a pod violating Pod Security restricted was admitted in $E2E_NS"
  fi
  grep -q 'violates PodSecurity "restricted' <<<"$out" || e2e_fail "unexpected refusal: $out"
  out="$(kubectl get events -n "$E2E_NS" --field-selector reason=FailedCreate -o jsonpath='{.items[*].message}')"
  ! grep -q PodSecurity <<<"$out" || e2e_fail "a controller was refused a pod of the sales: $out"
  log "ok: $E2E_NS enforces Pod Security restricted (a root pod is refused); every pod of the sales was admitted"
}

# e2e_delete_sales: both sales deleted; the operator drains tour's stage kafka queue (a drain
# Job) and releases both, keeping each Postgres claim and credentials Secret.
e2e_delete_sales() {
  local start=$SECONDS kept
  kubectl delete fs "$E2E_CAL" "$E2E_TOUR" -n "$E2E_NS" --wait=true --timeout=180s >/dev/null ||
    e2e_fail "the sales were not released within 180s of their deletion"
  jq -se --arg job "$E2E_TOUR-drain-kafka" 'map(select(.metadata.name == $job and (.status.succeeded // 0) >= 1)) | length > 0' \
    "$E2E_WORK/jobs.json" >/dev/null || e2e_fail "deleting $E2E_TOUR ran no drain Job $E2E_TOUR-drain-kafka to completion"
  kept="$(kubectl get "pvc/data-$E2E_TOUR-postgres-0" "secret/$E2E_TOUR-credentials" -n "$E2E_NS" -o name 2>&1 | tr '\n' ' ')" ||
    e2e_fail "after deleting $E2E_TOUR its Postgres claim and credentials should stay: $kept"
  log "ok: both sales deleted and released in $((SECONDS - start))s (drain Job $E2E_TOUR-drain-kafka); kept: $kept"
}
