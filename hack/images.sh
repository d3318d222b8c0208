#!/usr/bin/env bash
# Container images without Docker or a registry: Debian bookworm root filesystems made with
# debootstrap (cached), turned into docker-archive tarballs by hack/images/oci_image.py.
#
#   hack/images.sh build [NAME...]   build (default: all) into $FLASHSALE_CACHE/images/NAME.tar
#   hack/images.sh list              the tarballs built, their tags and sizes
#
# NAME: booking-app operator postgres redis kafka, tagged flashsale/NAME:local.
# Knobs (environment): CONTAINERD_ADDRESS (a containerd socket: each image built is imported
# with `ctr -a $CONTAINERD_ADDRESS -n k8s.io images import`), FLASHSALE_BIN_DIR (where the
# booking-app and flashsale-operator binaries are; default ${CARGO_TARGET_DIR:-target}/debug),
# IMAGES_MIRROR (the Debian mirror; default: the one apt uses), IMAGES_TAG (local).
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

usage() { sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

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
  local dir="$ROOTFS_DIR/base" key mirror start=$SECONDS
  mirror=$(debian_mirror)
  key="base v$RECIPE_VERSION $SUITE $mirror"
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
  in_root "$dir.tmp" apt-get update -qq >>"$ROOTFS_DIR/debootstrap.log" 2>&1 ||
    { tail -n 30 "$ROOTFS_DIR/debootstrap.log" >&2; die "apt-get update in the base failed"; }
  echo "$key" >"$dir.tmp/.flashsale-stamp"
  mv "$dir.tmp" "$dir"
  log "base: ready in $((SECONDS - start))s ($(du -sh "$dir" | cut -f1))"
}

cmd=${1:-}
[[ -n $cmd ]] || usage
case $cmd in
  base) base_rootfs ;;
  *) usage ;;
esac
