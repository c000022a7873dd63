#!/usr/bin/env bash
# Installs the app's nginx site (rendered by the program), checks it with nginx -t and reloads
# nginx only when it changed. A configuration nginx rejects is rolled back and the step fails.
# Behind the load balancer (DIRECT_SITE and FQDN given): a droplet that still has certbot's
# certificate for the name (it served the site itself before the stack grew) keeps answering HTTPS
# with it, in a server of its own beside the site, until the handover step (remote/handover.sh)
# removes both once the name has moved; without that certificate no such server exists.
set -euo pipefail

require V_APP V_NGINX_SITE
[[ $V_APP =~ ^[a-z][a-z0-9-]{0,30}$ ]] || die "bad app name"
direct_site=${V_DIRECT_SITE:-}
if [ -n "$direct_site" ]; then
  require V_FQDN
  [[ $V_FQDN =~ ^[a-z0-9.-]{1,253}$ ]] || die "bad host name"
fi

available=/etc/nginx/sites-available/dropstack-$V_APP.conf
direct=/etc/nginx/sites-available/dropstack-$V_APP-direct.conf
direct_enabled=/etc/nginx/sites-enabled/dropstack-$V_APP-direct.conf
backup=$(mktemp)
direct_backup=$(mktemp)
trap 'rm -f "$backup" "$direct_backup"' EXIT
had_old=0
if [ -f "$available" ]; then cp -p "$available" "$backup"; had_old=1; fi
had_direct=0
if [ -f "$direct" ]; then cp -p "$direct" "$direct_backup"; had_direct=1; fi

write_file "$available" 644 root:root "$V_NGINX_SITE"
site_changed=$WROTE
ensure_link "$available" "/etc/nginx/sites-enabled/dropstack-$V_APP.conf"

if [ -n "$direct_site" ] && [ -f "/etc/letsencrypt/live/$V_FQDN/fullchain.pem" ]; then
  write_file "$direct" 644 root:root "$direct_site"
  [ "$WROTE" = 0 ] || site_changed=1
  if [ "$(readlink "$direct_enabled" 2>/dev/null || true)" != "$direct" ]; then site_changed=1; fi
  ensure_link "$direct" "$direct_enabled"
  log "this droplet has certbot's certificate for $V_FQDN: it keeps serving HTTPS itself until the handover step"
elif [ -e "$direct" ] || [ -L "$direct_enabled" ]; then
  rm -f "$direct_enabled" "$direct"
  site_changed=1
  CHANGED=1
fi

# The site reaches the live release through /srv/<app>/live; a server released before that link
# existed gets it now, from the release that serves (dropstack-switch owns the layout).
case "$(/usr/local/sbin/dropstack-switch --link-live)" in
  *changed=yes*) CHANGED=1 ;;
esac

if [ "$site_changed" = 1 ]; then
  if ! output=$(nginx -t 2>&1); then
    if [ "$had_old" = 1 ]; then cp -p "$backup" "$available"; else rm -f "$available" "/etc/nginx/sites-enabled/dropstack-$V_APP.conf"; fi
    if [ "$had_direct" = 1 ]; then cp -p "$direct_backup" "$direct"; ln -sfn "$direct" "$direct_enabled"; else rm -f "$direct" "$direct_enabled"; fi
    die "nginx rejected the new site; the previous one stays in place:
$output"
  fi
  systemctl reload nginx
fi
finish
