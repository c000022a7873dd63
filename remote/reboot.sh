#!/usr/bin/env bash
# Reboots a newly provisioned droplet when the security updates applied by the base step need it
# (a new kernel, or libraries that running processes still hold): Debian marks that with
# /run/reboot-required. Only while no release is live, so it never interrupts the app: on a server
# that already serves, it says that a reboot is due and leaves the moment to the operator.
# The step returns before the reboot begins; sshd is stopped first, so the next step's SSH dial
# (retried by the provider) reaches the rebooted server, never this one going down.
set -euo pipefail

require V_APP
app=$V_APP
[[ $app =~ ^[a-z][a-z0-9-]{0,30}$ ]] || die "bad app name"

if [ ! -e /run/reboot-required ]; then
  log "no reboot needed (running kernel $(uname -r))"
  finish
  exit 0
fi
packages=$(sort -u /run/reboot-required.pkgs 2>/dev/null | paste -sd ' ' || true)
if [ -e "/srv/$app/current" ]; then
  log "a reboot is due (${packages:-see /run/reboot-required}), but release $(basename "$(readlink -f "/srv/$app/current")") is live: not rebooting automatically; reboot in a quiet moment (sudo systemctl reboot)"
  finish
  exit 0
fi
log "rebooting before the first release to run the updated ${packages:-packages} (running kernel $(uname -r))"
systemctl stop ssh.service
systemd-run --quiet --unit=dropstack-reboot --on-active=2 /bin/systemctl reboot
CHANGED=1
finish
