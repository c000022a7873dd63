#!/usr/bin/env bash
# shellcheck shell=bash
# The deploy lock, shared by the release step (after lib.sh) and dropstack-switch (rendered into
# it): one release or rollback at a time per server. Uses the includer's log and die.

# take_deploy_lock LOCK WHAT: holds LOCK (flock on fd 9) until the process exits. A caller that
# has to wait says who holds it and since when, and gives up after 600 s. WHAT describes the
# holder in LOCK.holder, e.g. "release r1a2b by pulumi:prod".
take_deploy_lock() {
  local lock=$1 what=$2
  exec 9>>"$lock"
  if ! flock -n 9; then
    log "waiting for the deploy lock: $(cat "$lock.holder" 2>/dev/null || echo unknown holder)"
    flock -w 600 9 || die "the deploy lock is still held by $(cat "$lock.holder" 2>/dev/null || echo 'an unknown process') after 600 s"
  fi
  printf '%s (pid %s) since %s\n' "$what" "$$" "$(date -u +%FT%TZ)" >"$lock.holder"
}
