#!/usr/bin/env bash
# A droplet leaves the load balancer's pool (scaling down, or the droplet replaced): out of
# rotation (the drain flag), then waits until the load balancer has seen it fail
# `unhealthy threshold` health checks, or as long as it would need, so that the requests it still
# has finish before the droplet is deleted.
set -euo pipefail

lb_setup
require V_UNHEALTHY_THRESHOLD
[[ $V_UNHEALTHY_THRESHOLD =~ ^[0-9]{1,2}$ ]] || die "UNHEALTHY_THRESHOLD must be a number"
mark=$(log_size)
drain
CHANGED=1
wait_checks 503 "$V_UNHEALTHY_THRESHOLD" "$mark" "leaving" \
  || log "leaving: saw no $V_UNHEALTHY_THRESHOLD failed checks in nginx's log within the load balancer's window (it may have dropped the droplet already); it has had that long to finish its requests"
finish
