#!/usr/bin/env bash
# shellcheck shell=bash
# Included in the load balancer's steps (roll, lb-member, lb-leave): the drain flag nginx honours
# (the site behind the load balancer answers its health path with 503 while it exists; /run, so a
# reboot clears it) and waiting until the load balancer has seen a droplet's new health answer,
# read from nginx's access log. A step calls lb_setup first.
access_log=/var/log/nginx/access.log

# lb_setup: checks the values every load balancer step has; sets drain_flag.
lb_setup() {
  require V_APP V_HEALTH_PATH V_CHECK_INTERVAL V_CHECK_TIMEOUT
  [[ $V_APP =~ ^[a-z][a-z0-9-]{0,30}$ ]] || die "bad app name"
  [[ $V_HEALTH_PATH =~ ^/[A-Za-z0-9._~/-]*$ ]] || die "bad health path"
  [[ $V_CHECK_INTERVAL =~ ^[0-9]{1,3}$ && $V_CHECK_TIMEOUT =~ ^[0-9]{1,3}$ ]] || die "CHECK_INTERVAL and CHECK_TIMEOUT must be seconds"
  drain_flag=/run/dropstack-$V_APP/drain
}
# drain: out of rotation from the next health check on. (The flag's folder is the app's run folder,
# 0750 app:app from tmpfiles, which nginx reads through the app's group: left as it is.)
drain() {
  [ -d "${drain_flag%/*}" ] || die "${drain_flag%/*} is missing (systemd-tmpfiles creates it at boot; see /etc/tmpfiles.d/dropstack-$V_APP.conf)"
  : >"$drain_flag"
}

# checks_seen STATUS COUNT SINCE: true once nginx answered the health path with STATUS COUNT times
# in a row in what the access log gained after byte SINCE.
checks_seen() {
  tail -c +"$(($3 + 1))" "$access_log" 2>/dev/null | awk -v path="$V_HEALTH_PATH" -v want="$1" -v need="$2" '
    $0 ~ "\"GET " path " HTTP/" { run = ($9 == want) ? run + 1 : 0; if (run >= need) { found = 1; exit } }
    END { exit found ? 0 : 1 }'
}
# wait_checks STATUS COUNT SINCE WHAT: waits for checks_seen, at most as long as the load balancer
# needs to see COUNT checks (COUNT + 1 intervals, and one check's timeout); 0 when seen.
wait_checks() {
  local limit=$(( ($2 + 1) * V_CHECK_INTERVAL + V_CHECK_TIMEOUT )) waited=0
  while [ "$waited" -lt "$limit" ]; do
    if checks_seen "$1" "$2" "$3"; then log "$4: the load balancer saw $2 checks answered $1 (${waited} s)"; return 0; fi
    sleep 1
    waited=$((waited + 1))
  done
  return 1
}
log_size() { stat -c %s "$access_log" 2>/dev/null || echo 0; }

