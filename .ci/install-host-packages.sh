#!/usr/bin/env bash
# Installs the Debian packages the test suites need on the host (idempotent).
# Services that these packages would start (nginx, supervisor) are kept stopped:
# the tests run the binaries themselves, on loopback only.
set -euo pipefail

# apt needs root: as another user, run again under sudo (where there is one).
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-host-packages: run as root (sudo is not installed)" >&2; exit 1; }
  exec sudo bash "$0" "$@"
fi

packages=(
  # rendered-config checks (unit tests)
  nginx-light supervisor shellcheck openssh-server nftables kmod
  # local cloud (end-to-end tests)
  qemu-system-x86 qemu-utils seabios ipxe-qemu cloud-image-utils debootstrap e2fsprogs
  openssh-client pebble openssl curl wrk sslscan
  # the local cloud's load balancer (HAProxy on the host)
  haproxy
  # the local cloud's managed PostgreSQL (a server on the host; socat carries each VM's connections)
  postgresql socat
  # benchmarks on the host (npm run bench:nginx: the sample app under Debian's gunicorn and Flask)
  gunicorn python3-flask
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "host packages: all present"
  exit 0
fi

echo "host packages: installing ${missing[*]}"
# Keep package scripts from starting daemons on the host.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 0755 "$policy"
  created_policy=1
fi
cleanup() { if [ "$created_policy" = 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "host packages: done"
