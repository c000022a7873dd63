#!/usr/bin/env bash
# Waits until cloud-init has finished on a fresh droplet (ssh answers before it is done).
set -euo pipefail

require V_TIMEOUT_SECONDS
status=0
timeout "$V_TIMEOUT_SECONDS" cloud-init status --wait >/dev/null || status=$?
case "$status" in
  0) ;;
  2) log "cloud-init finished with recoverable errors:"; cloud-init status --long >&2 || true ;;
  124) cloud-init status --long >&2 || true; die "cloud-init did not finish within ${V_TIMEOUT_SECONDS}s" ;;
  *) cloud-init status --long >&2 || true; die "cloud-init failed (status $status)" ;;
esac
[ -e /var/lib/cloud/instance/boot-finished ] || die "cloud-init reports done but boot-finished is missing"
finish
