#!/usr/bin/env bash
# Waits until a droplet has booted: cloud-init has finished (ssh answers before it is done on a
# new droplet) and systemd has started every unit of the boot (nginx, supervisor after a reboot).
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
state=$(timeout "$V_TIMEOUT_SECONDS" systemctl is-system-running --wait 2>/dev/null || true)
case "$state" in
  running) ;;
  degraded) log "booted, but some units failed:"; systemctl --failed --no-legend --plain >&2 || true ;;
  *) die "systemd did not finish booting within ${V_TIMEOUT_SECONDS}s (state: ${state:-unknown})" ;;
esac
finish
