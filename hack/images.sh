#!/usr/bin/env bash
# Container images without Docker or a registry: Debian bookworm root filesystems made with
# debootstrap (cached), turned into docker-archive tarballs by hack/images/oci_image.py.
#
#   hack/images.sh build [NAME...]   build (default: all) into $FLASHSALE_CACHE/images/NAME.tar
#   hack/images.sh list              the tarballs built, their tags and sizes
#   hack/images.sh verify [NAME...]  run each with runc as the operator's pods would, and check it
#
# NAME: booking-app operator postgres redis kafka, tagged flashsale/NAME:local.
# Knobs (environment): CONTAINERD_ADDRESS (a containerd socket: each image built is imported
# with `ctr -a $CONTAINERD_ADDRESS -n k8s.io images import`), FLASHSALE_BIN_DIR (where the
# booking-app and flashsale-operator binaries are; default ${CARGO_TARGET_DIR:-target}/debug),
# IMAGES_MIRROR and IMAGES_SECURITY_MIRROR (default: the ones apt uses), IMAGES_TAG (local);
# verify: VERIFY_PG_PORT (25432), VERIFY_REDIS_PORT (26379), VERIFY_KAFKA_PORT (29092),
# VERIFY_KAFKA_CONTROLLER_PORT (29093), VERIFY_APP_PORT (28080).
# Needs root (debootstrap, chroot, file ownership) and debootstrap (installed when missing).
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ALL_IMAGES=(booking-app operator postgres redis kafka)
SUITE=bookworm
IMAGES_TAG="${IMAGES_TAG:-local}"
IMAGES_DIR="$FLASHSALE_CACHE/images"
ROOTFS_DIR="$IMAGES_DIR/rootfs"
FILES="$REPO_ROOT/hack/images"
OCI_IMAGE="$FILES/oci_image.py"
# Bumped when the way a root filesystem is made changes, so cached ones are rebuilt.
RECIPE_VERSION=1

set -E
trap 'log "ERROR: line $LINENO: \"$BASH_COMMAND\" failed"' ERR

usage() { sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

niced() { nice -n 19 ionice -c3 "$@"; }

# The Debian mirror apt already uses (deb822 .sources or one-line sources.list), else deb.debian.org.
debian_mirror() {
  local url
  if [[ -n ${IMAGES_MIRROR:-} ]]; then echo "$IMAGES_MIRROR"; return; fi
  url=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
    awk '/^URIs:/{u=$2} /^Suites:/ && $0 ~ /(^| )'"$SUITE"'( |$)/ && u !~ /security/ {print u; exit}')
  [[ -n $url ]] || url=$(grep -hsE "^deb +[^ ]+ +$SUITE +" /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
    awk '$2 !~ /security/ {print $2; exit}')
  echo "${url:-http://deb.debian.org/debian}"
}

# The security archive apt uses (the suite SUITE-security), else security.debian.org's default.
security_mirror() {
  local url
  if [[ -n ${IMAGES_SECURITY_MIRROR:-} ]]; then echo "$IMAGES_SECURITY_MIRROR"; return; fi
  url=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
    awk '/^URIs:/{u=$2} /^Suites:/ && $0 ~ /(^| )'"$SUITE"'-security( |$)/ {print u; exit}')
  [[ -n $url ]] || url=$(grep -hsE "^deb +[^ ]+ +$SUITE-security +" /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
    awk '{print $2; exit}')
  echo "${url:-http://deb.debian.org/debian-security}"
}

# stamp_ok DIR KEY: DIR was completed from the recipe KEY names.
stamp_ok() { [[ -f $1/.flashsale-stamp && $(<"$1/.flashsale-stamp") == "$2" ]]; }

# in_root DIR CMD...: CMD chrooted into DIR, with /proc, /sys and the host's DNS, in a private
# mount namespace (nothing stays mounted when it returns, even on failure).
in_root() {
  local root="$1"; shift
  # shellcheck disable=SC2016 # expanded by the inner bash
  niced unshare --mount --propagation private bash -c '
    root=$1; shift
    mount -t proc proc "$root/proc"
    mount -t sysfs sysfs "$root/sys"
    mount --bind /etc/resolv.conf "$root/etc/resolv.conf"
    exec chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
      LANG=C.UTF-8 HOME=/root "$@"' in_root "$root" "$@"
}

# The base every image starts from: debootstrap --variant=minbase with ca-certificates, libssl3
# and zlib1g (what hack/Dockerfile's runtime stage installs into debian:bookworm-slim), apt's
# lists kept so images can add packages. Made once.
base_rootfs() {
  local dir="$ROOTFS_DIR/base" key mirror security start=$SECONDS
  mirror=$(debian_mirror)
  security=$(security_mirror)
  key="base v$RECIPE_VERSION $SUITE $mirror $security"
  if stamp_ok "$dir" "$key"; then return 0; fi
  command -v debootstrap >/dev/null || apt_install debootstrap
  log "base: debootstrap --variant=minbase $SUITE from $mirror"
  rm -rf "$dir.tmp" "$dir"
  mkdir -p "$ROOTFS_DIR"
  heartbeat 20 "debootstrap" niced debootstrap --variant=minbase --include=ca-certificates,libssl3,zlib1g \
    "$SUITE" "$dir.tmp" "$mirror" >"$ROOTFS_DIR/debootstrap.log" 2>&1 ||
    { tail -n 30 "$ROOTFS_DIR/debootstrap.log" >&2; die "debootstrap failed (log: $ROOTFS_DIR/debootstrap.log)"; }
  # Like the official slim images: no documentation, manuals or translations from later installs.
  cat >"$dir.tmp/etc/dpkg/dpkg.cfg.d/flashsale-slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
CFG
  # No service starts while packages are installed into a root filesystem.
  printf '#!/bin/sh\nexit 101\n' >"$dir.tmp/usr/sbin/policy-rc.d"
  chmod 755 "$dir.tmp/usr/sbin/policy-rc.d"
  cp /dev/null "$dir.tmp/etc/resolv.conf"
  # Like debian:bookworm-slim: the point releases and security updates too, applied.
  rm -f "$dir.tmp/etc/apt/sources.list"
  cat >"$dir.tmp/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $mirror
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
  { in_root "$dir.tmp" apt-get update -qq && in_root "$dir.tmp" apt-get upgrade -y -qq; } \
    >>"$ROOTFS_DIR/debootstrap.log" 2>&1 ||
    { tail -n 30 "$ROOTFS_DIR/debootstrap.log" >&2; die "apt-get update/upgrade in the base failed"; }
  echo "$key" >"$dir.tmp/.flashsale-stamp"
  mv "$dir.tmp" "$dir"
  log "base: ready in $((SECONDS - start))s ($(du -sh "$dir" | cut -f1))"
}

# strip_rootfs DIR: what no image needs at run time: apt's lists and caches, logs, docs (their
# copyright files kept), manuals, translations, the build-time policy-rc.d and DNS.
strip_rootfs() {
  local d="$1"
  rm -rf "$d"/var/lib/apt/lists/* "$d"/var/cache/apt/* "$d"/var/cache/debconf/*-old \
    "$d"/var/lib/dpkg/*-old "$d"/var/log/* "$d"/tmp/* "$d"/var/tmp/* "$d"/root/.[!.]* \
    "$d"/usr/share/man/* "$d"/usr/share/info/* "$d"/usr/share/locale/* "$d"/usr/share/lintian/* \
    "$d"/usr/sbin/policy-rc.d "$d"/.flashsale-stamp
  find "$d/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete 2>/dev/null || true
  find "$d/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
  : >"$d/etc/resolv.conf"
}

# rootfs NAME: $ROOTFS_DIR/NAME, made once from the base: NAME_setup DIR (if defined) runs
# before `apt-get install` of NAME_packages (none: the base as it is), NAME_finish DIR after.
# The stamp covers the base, the packages and the hooks' code: changing one remakes it.
rootfs() {
  local name="$1" dir="$ROOTFS_DIR/$1" key hooks="" pkgs=() start
  base_rootfs
  start=$SECONDS
  if declare -F "${name}_packages" >/dev/null; then read -ra pkgs <<<"$("${name}_packages")"; fi
  for h in "${name}_setup" "${name}_finish"; do
    if declare -F "$h" >/dev/null; then hooks+=$(declare -f "$h"); fi
  done
  key="$name v$RECIPE_VERSION base=[$(<"$ROOTFS_DIR/base/.flashsale-stamp")] pkgs=[${pkgs[*]}] hooks=$(sha256sum <<<"$hooks" | cut -c1-16)"
  if stamp_ok "$dir" "$key"; then return 0; fi
  log "$name: root filesystem from the base${pkgs:+ + ${pkgs[*]}}"
  rm -rf "$dir.tmp" "$dir"
  niced cp -a "$ROOTFS_DIR/base" "$dir.tmp"
  if declare -F "${name}_setup" >/dev/null; then "${name}_setup" "$dir.tmp"; fi
  if ((${#pkgs[@]})); then
    # The base's package lists may have aged (a mirror drops superseded versions): on failure,
    # once more after apt-get update.
    heartbeat 20 "apt-get install ${pkgs[*]}" in_root "$dir.tmp" \
      apt-get install -y -q --no-install-recommends "${pkgs[@]}" >"$ROOTFS_DIR/$name.log" 2>&1 ||
      { in_root "$dir.tmp" apt-get update -qq && in_root "$dir.tmp" \
        apt-get install -y -q --no-install-recommends "${pkgs[@]}"; } >>"$ROOTFS_DIR/$name.log" 2>&1 ||
      { tail -n 30 "$ROOTFS_DIR/$name.log" >&2; die "$name: apt-get install failed (log: $ROOTFS_DIR/$name.log)"; }
  fi
  if declare -F "${name}_finish" >/dev/null; then "${name}_finish" "$dir.tmp"; fi
  strip_rootfs "$dir.tmp"
  echo "$key" >"$dir.tmp/.flashsale-stamp"
  mv "$dir.tmp" "$dir"
  log "$name: root filesystem ready in $((SECONDS - start))s ($(du -sh --exclude=.flashsale-stamp "$dir" | cut -f1))"
}

# add_user ROOT NAME UID HOME: a system user and group NAME with fixed ids, as the official images
# make them before their packages do (which would otherwise pick the next free id).
add_user() {
  local system=()
  (( $3 < 1000 )) && system=(--system)
  in_root "$1" groupadd "${system[@]}" --gid "$3" "$2"
  in_root "$1" useradd "${system[@]}" --uid "$3" --gid "$3" --home-dir "$4" --no-create-home --shell /bin/bash "$2"
}

# --- booking-app and operator: hack/Dockerfile's runtime stage (the base already holds
# ca-certificates, libssl3 and zlib1g).
runtime_packages() { :; }

# --- postgres: Debian's PostgreSQL 15 (bookworm has no 17), the official image's layout.
PG_MAJOR=15
postgres_packages() { echo "postgresql-$PG_MAJOR"; }
postgres_setup() {
  add_user "$1" postgres 999 /var/lib/postgresql
  # postgresql-common would otherwise make a cluster "main" in the image.
  mkdir -p "$1/etc/postgresql-common"
  echo 'create_main_cluster = false' >"$1/etc/postgresql-common/createcluster.conf"
}
postgres_finish() {
  local d="$1"
  # As the official image: listen on every address of the pod (pg_hba.conf still decides).
  sed -ri "s!^#?(listen_addresses)\s*=\s*\S+.*!\1 = '*'!" "$d/usr/share/postgresql/$PG_MAJOR/postgresql.conf.sample"
  grep -q "^listen_addresses = '\*'" "$d/usr/share/postgresql/$PG_MAJOR/postgresql.conf.sample" ||
    die "postgres: listen_addresses not found in postgresql.conf.sample"
  # JIT compilation (llvmjit.so, which alone needs libLLVM and libz3: 130 MB) left out, as
  # postgres does when its provider cannot be loaded: jit is simply unavailable.
  rm -rf "$d/usr/lib/postgresql/$PG_MAJOR/lib/llvmjit"* "$d/usr/lib/postgresql/$PG_MAJOR/lib/bitcode" \
    "$d"/usr/lib/x86_64-linux-gnu/libLLVM-* "$d"/usr/lib/x86_64-linux-gnu/libz3.so*
  # Modes as the official image sets them (postgresql-common made the first one 2775).
  install -d -o 999 -g 999 "$d/run/postgresql" "$d/var/lib/postgresql/data"
  chmod 3777 "$d/run/postgresql"
  chmod 1777 "$d/var/lib/postgresql/data"
  install -d -m 755 "$d/docker-entrypoint-initdb.d"
}

# --- redis: Debian's redis-server (7.0), the official image's user and /data.
redis_packages() { echo redis-server; }
redis_setup() { add_user "$1" redis 999 /data; }
redis_finish() { install -d -o 999 -g 999 -m 755 "$1/data"; }

# --- kafka: the jars hack/services.sh fetches (hack/services/kafka/pom.xml) and Debian's JRE 17.
kafka_packages() { echo openjdk-17-jre-headless; }
kafka_setup() {
  add_user "$1" appuser 1000 /home/appuser
  # ca-certificates-java's postinst runs java, which wants the man page directories it links to.
  mkdir -p "$1/usr/share/man/man1"
}
kafka_finish() {
  install -d -o 1000 -g 1000 -m 755 "$1/home/appuser" "$1/opt/kafka/config" "$1/var/lib/kafka/data"
}

# Kafka's jars: hack/services/kafka.sh's kafka_install fills $KAFKA_LIB (shared with services.sh).
kafka_jars() {
  # shellcheck disable=SC2034 # read by hack/services/kafka.sh
  STATE="$FLASHSALE_CACHE/services"
  # shellcheck source=services/kafka.sh
  . "$REPO_ROOT/hack/services/kafka.sh"
  kafka_install
}

# bin_dir: where the workspace's binaries are taken from.
bin_dir() {
  local d="${FLASHSALE_BIN_DIR:-${CARGO_TARGET_DIR:-target}/debug}"
  [[ $d == /* ]] || d="$REPO_ROOT/$d"
  echo "$d"
}

# image_args NAME: the rootfs it starts from (first line), then oci_image.py build's flags.
image_args() {
  local bins
  bins=$(bin_dir)
  case $1 in
    booking-app)
      echo runtime
      printf '%s\n' --add "$bins/booking-app:/usr/local/bin/booking-app:0755" \
        --entrypoint '["/usr/local/bin/booking-app"]' --cmd '["serve"]' \
        --user 65532:65532 --expose 8080/tcp --workdir /
      ;;
    operator)
      echo runtime
      printf '%s\n' --add "$bins/flashsale-operator:/usr/local/bin/flashsale-operator:0755" \
        --entrypoint '["/usr/local/bin/flashsale-operator"]' --cmd '["run"]' \
        --user 65532:65532 --expose 8080/tcp --workdir /
      ;;
    postgres)
      echo postgres
      printf '%s\n' --add "$FILES/postgres-entrypoint.sh:/usr/local/bin/docker-entrypoint.sh:0755" \
        --entrypoint '["/usr/local/bin/docker-entrypoint.sh"]' --cmd '["postgres"]' \
        --user 999:999 --expose 5432/tcp --workdir / --stop-signal SIGINT \
        --volume /var/lib/postgresql/data \
        --env "PATH=/usr/lib/postgresql/$PG_MAJOR/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        --env PGDATA=/var/lib/postgresql/data --env LANG=C.UTF-8 --env "PG_MAJOR=$PG_MAJOR"
      ;;
    redis)
      echo redis
      printf '%s\n' --add "$FILES/redis-entrypoint.sh:/usr/local/bin/docker-entrypoint.sh:0755" \
        --entrypoint '["/usr/local/bin/docker-entrypoint.sh"]' --cmd '["redis-server"]' \
        --user 999:999 --expose 6379/tcp --workdir /data --volume /data
      ;;
    kafka)
      local jar tool
      echo kafka
      for jar in "$KAFKA_LIB"/*.jar; do printf '%s\n' --add "$jar:/opt/kafka/libs/${jar##*/}:0644"; done
      for f in log4j2.properties tools-log4j2.properties; do
        printf '%s\n' --add "$REPO_ROOT/hack/services/kafka/$f:/opt/kafka/config/$f:0644:1000:1000"
      done
      for tool in kafka-topics kafka-console-producer kafka-console-consumer kafka-storage \
        kafka-consumer-groups kafka-run-class; do
        printf '%s\n' --add "$FILES/kafka-tool.sh:/opt/kafka/bin/$tool.sh:0755"
      done
      printf '%s\n' --add "$FILES/kafka-entrypoint.sh:/etc/kafka/docker/run:0755" \
        --entrypoint '["/etc/kafka/docker/run"]' \
        --user 1000:1000 --expose 9092/tcp --expose 9093/tcp --workdir /opt/kafka \
        --volume /var/lib/kafka/data \
        --env "PATH=/opt/kafka/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        --env LANG=C.UTF-8
      ;;
    *) die "unknown image '$1' (one of: ${ALL_IMAGES[*]})" ;;
  esac
}

# build_image NAME: $IMAGES_DIR/NAME.tar, unless it is already made from the same root
# filesystem, files and settings; then imported into CONTAINERD_ADDRESS's containerd if given.
build_image() {
  local name="$1" tag="flashsale/$1:$IMAGES_TAG" out="$IMAGES_DIR/$1.tar" lines base args=() key start=$SECONDS f
  [[ $name == kafka ]] && kafka_jars
  mapfile -t lines < <(image_args "$name")
  base=${lines[0]}
  args=("${lines[@]:1}")
  for ((i = 0; i < ${#args[@]}; i++)); do
    if [[ ${args[i]} == --add ]]; then
      f=${args[i + 1]%%:*}
      if [[ ! -f $f ]]; then
        case $name in
          booking-app | operator) die "$name: $f not found: build it (cargo build -p booking-app -p flashsale-operator, --release with FLASHSALE_BIN_DIR=target/release) or point FLASHSALE_BIN_DIR at it" ;;
          *) die "$name: $f not found" ;;
        esac
      fi
    fi
  done
  rootfs "$base"
  key=$( {
    echo "$tag" "$(<"$ROOTFS_DIR/$base/.flashsale-stamp")" "$(sha256sum "$OCI_IMAGE" | cut -c1-16)"
    printf '%s\n' "${args[@]}"
    for ((i = 0; i < ${#args[@]}; i++)); do
      if [[ ${args[i]} == --add ]]; then sha256sum "${args[i + 1]%%:*}"; fi
    done
  } | sha256sum | cut -c1-32)
  if [[ -f $out && -f $out.key && $(<"$out.key") == "$key" ]]; then
    log "$tag: up to date ($out)"
  else
    rm -f "$out.key"
    heartbeat 20 "$tag" niced python3 "$OCI_IMAGE" build --rootfs "$ROOTFS_DIR/$base" "${args[@]}" \
      --tag "$tag" --output "$out" >/dev/null
    echo "$key" >"$out.key"
    log "$tag: built in $((SECONDS - start))s, $(du -h "$out" | cut -f1) ($out)"
  fi
  if [[ -n ${CONTAINERD_ADDRESS:-} ]]; then
    command -v ctr >/dev/null || die "CONTAINERD_ADDRESS is set but ctr is missing (apt-get install containerd)"
    if containerd_holds "$CONTAINERD_ADDRESS" "$out" "$tag"; then
      log "$tag: already in containerd at $CONTAINERD_ADDRESS"
      return 0
    fi
    niced ctr -a "$CONTAINERD_ADDRESS" -n k8s.io images import "$out" >/dev/null ||
      die "$tag: ctr images import into $CONTAINERD_ADDRESS failed"
    log "$tag: imported into containerd at $CONTAINERD_ADDRESS (namespace k8s.io)"
  fi
}

cmd_build() {
  local names=("$@") start=$SECONDS n
  ((${#names[@]})) || names=("${ALL_IMAGES[@]}")
  if (( EUID != 0 )); then die "needs root: debootstrap, chroot and the images' file ownership"; fi
  for n in "${names[@]}"; do [[ " ${ALL_IMAGES[*]} " == *" $n "* ]] || die "unknown image '$n' (one of: ${ALL_IMAGES[*]})"; done
  mkdir -p "$IMAGES_DIR"
  exec 9>"$IMAGES_DIR/.lock"
  flock -w 1800 9 || die "another hack/images.sh build held $IMAGES_DIR/.lock for 30 minutes"
  for n in "${names[@]}"; do build_image "$n"; done
  log "built ${names[*]} in $((SECONDS - start))s; hack/images.sh list"
}

cmd_list() {
  local f
  printf '%-32s %-10s %-9s %s\n' TAG SIZE LAYER-MB ID
  for f in "$IMAGES_DIR"/*.tar; do
    [[ -f $f ]] || continue
    python3 - "$f" <<'PY'
import json, os, subprocess, sys
out = subprocess.run([sys.executable, os.environ["OCI_IMAGE"], "inspect", sys.argv[1]], capture_output=True, text=True, check=True)
i = json.loads(out.stdout)
print(f"{i['tags'][0]:<32} {os.path.getsize(sys.argv[1]) / 1e6:>7.1f}MB {i['size'] / 1e6:>8.1f}  {i['id'][:19]}  {sys.argv[1]}")
PY
  done
}

# shellcheck source=images/verify.sh
. "$FILES/verify.sh"

cmd=${1:-}
[[ -n $cmd ]] || usage
shift
case $cmd in
  build) cmd_build "$@" ;;
  list) export OCI_IMAGE; cmd_list ;;
  verify) export OCI_IMAGE; cmd_verify "$@" ;;
  base) base_rootfs ;;
  *) usage ;;
esac
