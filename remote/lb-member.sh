#!/usr/bin/env bash
# A droplet joins the load balancer's pool (droplets > 1): no drain flag left from before (its
# first release's roll puts it in rotation). Removing the droplet from the program runs lb-leave
# first, which drains it.
set -euo pipefail

lb_setup
if [ -e "$drain_flag" ]; then
  rm -f "$drain_flag"
  CHANGED=1
fi
finish
