#!/usr/bin/env bash
# One droplet's turn in a rolling release (droplets > 1; scripts/roll-fleet.sh runs the droplets'
# turns one after the other, after every droplet staged the release: booted it in its idle slot
# and passed the health gate). The turn takes the droplet out of the load balancer's rotation (the
# drain flag: nginx answers the health path with 503) and waits until the load balancer has seen
# that (`unhealthy threshold` failed checks in nginx's access log, or as long as the load balancer
# needs); then the staged slot goes live through dropstack-switch (health gate again, atomic
# switch, old slot stopped gracefully); then the flag goes and the turn waits until the load
# balancer has seen `healthy threshold` passed checks. A droplet whose release is already live has
# nothing to do; one where the release is built but no longer staged (a switch-back stopped it)
# boots it again in the switch. Fails, with the droplet back in rotation on its live release, when
# the switch is refused; fails when the load balancer does not take the droplet back.
#
# MODE back (after another droplet's turn failed): a droplet on the release goes back to its
# previous one the same way (drain, dropstack-rollback through the health gate, back in rotation);
# a droplet not on it only has to be in rotation again. Fails when the load balancer does not take
# the droplet back, or when there is no previous release to go back to (it stays out of rotation).
set -euo pipefail

lb_setup
require V_RELEASE_ID V_HEALTHY_THRESHOLD V_UNHEALTHY_THRESHOLD V_TRIGGERED_BY
app=$V_APP
id=$V_RELEASE_ID
[[ $id =~ ^[A-Za-z0-9._-]{1,80}$ ]] || die "bad release id"
[[ $V_HEALTHY_THRESHOLD =~ ^[0-9]{1,2}$ && $V_UNHEALTHY_THRESHOLD =~ ^[0-9]{1,2}$ ]] || die "the thresholds must be numbers"
root=/srv/$app
state=$root/shared/.dropstack

live=$(readlink "$root/current" 2>/dev/null || true)
live=${live##*/}
staged=$(cat "$state/staged" 2>/dev/null || true)
mode=${V_MODE:-forward}
back_window=$(( (V_HEALTHY_THRESHOLD + 1) * V_CHECK_INTERVAL + V_CHECK_TIMEOUT ))

# out_of_rotation: the drain flag; waits until the load balancer has seen the droplet fail (or as
# long as it would need).
out_of_rotation() {
  local mark
  mark=$(log_size)
  drain
  CHANGED=1
  wait_checks 503 "$V_UNHEALTHY_THRESHOLD" "$mark" "draining" \
    || log "draining: saw no $V_UNHEALTHY_THRESHOLD failed checks in nginx's log within the load balancer's window; it has had that long to take the droplet out"
}

# switch_or_die REFUSED COMMAND...: the switch (COMMAND, through the health gate) while out of
# rotation; when it is refused, the droplet is back in rotation on what it serves and the turn
# fails with REFUSED.
switch_or_die() {
  local refused=$1
  shift
  if ! "$@" >/dev/null; then
    rm -f "$drain_flag"
    die "$refused"
  fi
}

# back_in_rotation WHAT: the drain flag goes; waits until the load balancer has seen the droplet pass.
back_in_rotation() {
  local mark
  mark=$(log_size)
  rm -f "$drain_flag"
  wait_checks 200 "$V_HEALTHY_THRESHOLD" "$mark" "back in rotation" \
    || die "$1, but the load balancer did not see $V_HEALTHY_THRESHOLD passed health checks within $back_window s (see the load balancer's health of each droplet)"
}

# ---- switch back (another droplet's turn failed)
if [ "$mode" = back ]; then
  if [ "$live" != "$id" ]; then
    [ -e "$drain_flag" ] && CHANGED=1
    back_in_rotation "this droplet serves ${live:-nothing}, never switched to $id"
    echo "back=${live:-nothing}"
    finish
    exit 0
  fi
  previous=$(readlink "$root/previous" 2>/dev/null || true)
  previous=${previous##*/}
  if [ -z "$previous" ] || [ "$previous" = "$id" ]; then
    drain
    CHANGED=1
    die "release $id is the first on this droplet: there is no previous release to switch back to, so it stays out of rotation (drained) until the next up"
  fi
  out_of_rotation
  switch_or_die "switching back to $previous was refused on this droplet; $id keeps serving and the droplet is back in rotation" \
    /usr/local/sbin/dropstack-rollback "$previous" --by "$V_TRIGGERED_BY"
  back_in_rotation "release $previous is live here again"
  echo "back=$previous"
  finish
  exit 0
fi
[ "$mode" = forward ] || die "MODE must be forward or back"

if [ "${staged%% *}" != "$id" ]; then
  if [ "$live" = "$id" ]; then
    log "release $id is live here already"
    finish
    exit 0
  fi
  [ -f "$root/releases/$id/.dropstack-complete" ] \
    || die "release $id is not on this droplet (staged: ${staged:-nothing}, live: ${live:-nothing}): its release step must run first"
  log "release $id is built here but not staged (a switch-back stopped it): the switch boots it again"
fi

# out of rotation; the staged release goes live (health gate again, atomic switch, old slot drained
# and stopped); back in rotation
out_of_rotation
switch_or_die "release $id was refused on this droplet; ${live:-nothing} keeps serving and the droplet is back in rotation" \
  /usr/local/sbin/dropstack-switch "$id" --commit --by "$V_TRIGGERED_BY"
back_in_rotation "release $id is live here"
echo "rolled=$id"
finish
