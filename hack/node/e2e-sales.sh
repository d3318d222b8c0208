# shellcheck shell=bash
# The manifests of `hack/node.sh e2e` (sourced by hack/node/e2e.sh): the test namespace and its
# two FlashSales. Every image is a local one (hack/images.sh), every store volume asks for the
# node's StorageClass, and the pods are small enough that both sales, a calibration and a stage
# switch fit on one 2-core node; nothing here is specific to the operator's pods: the namespace
# itself sends every pod to the real node (PodNodeSelector, PodTolerationRestriction).

# e2e_namespace: Pod Security `restricted` enforced, and the scheduling of the real node.
e2e_namespace() {
  restricted_namespace "$E2E_NS"
  cat <<EOF
  annotations:
    scheduler.alpha.kubernetes.io/node-selector: $TAINT_KEY=true
    scheduler.alpha.kubernetes.io/defaultTolerations: '[{"key":"$TAINT_KEY","operator":"Equal","value":"true","effect":"NoSchedule"}]'
EOF
}

# e2e_store NAME CPU MEMORY MEMORY_LIMIT: an in-cluster store block of a sale.
e2e_store() {
  cat <<EOF
  $1:
    image: flashsale/$1:$IMAGES_TAG
    storage: 1Gi
    storageClassName: $STORAGE_CLASS
    resources:
      requests: {cpu: $2, memory: $3}
      limits: {cpu: "1", memory: $4}
EOF
}

# e2e_booking_app: the API and worker pods: 100m requested (calibration's loadgen asks twice
# that), a whole core allowed, so a measurement is of up to one core.
e2e_booking_app() {
  cat <<EOF
  bookingApp:
    image: flashsale/booking-app:$IMAGES_TAG
    imagePullPolicy: Never
    resources:
      requests: {cpu: 100m, memory: 96Mi}
      limits: {cpu: "1", memory: 512Mi}
    worker:
      resources:
        requests: {cpu: 100m, memory: 96Mi}
        limits: {cpu: "1", memory: 512Mi}
EOF
}

# Sale "cal": stage postgres with no perPodRps, so the operator calibrates it (a real loadgen Job
# against a real scratch pod) before sizing it.
e2e_sale_calibrated() {
  cat <<EOF
apiVersion: flashsale.dev/v1alpha1
kind: FlashSale
metadata:
  name: $E2E_CAL
  namespace: $E2E_NS
spec:
  stage: postgres
  targetRps: 100
  event: {name: E2E Calibrated, tickets: 1000000, perUserLimit: 4}
  capacity: {minReplicas: 1, maxReplicas: 2, sloP99Ms: $E2E_SLO_MS}
EOF
  e2e_booking_app
  e2e_store postgres 100m 128Mi 1Gi
}

# Sale "tour": stage redis, capacity pinned (no calibration), switched to kafka later; the
# event is large enough that loadgen never sells it out.
e2e_sale_tour() {
  local stage="$1"
  cat <<EOF
apiVersion: flashsale.dev/v1alpha1
kind: FlashSale
metadata:
  name: $E2E_TOUR
  namespace: $E2E_NS
spec:
  stage: $stage
  targetRps: 200
  event: {name: E2E Tour, tickets: $E2E_TOUR_TICKETS, perUserLimit: 4}
  capacity: {perPodRps: 400, minReplicas: 1, maxReplicas: 2}
EOF
  e2e_booking_app
  e2e_store postgres 100m 128Mi 1Gi
  e2e_store redis 50m 64Mi 256Mi
  e2e_store kafka 100m 512Mi 1536Mi
}
