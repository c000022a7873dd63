#!/usr/bin/env bash
# Installs the app's nginx site (rendered by the program), checks it with nginx -t and reloads
# nginx only when it changed. A configuration nginx rejects is rolled back and the step fails.
set -euo pipefail

require V_APP V_NGINX_SITE
[[ $V_APP =~ ^[a-z][a-z0-9-]{0,30}$ ]] || die "bad app name"

available=/etc/nginx/sites-available/dropstack-$V_APP.conf
backup=$(mktemp)
trap 'rm -f "$backup"' EXIT
had_old=0
if [ -f "$available" ]; then cp -p "$available" "$backup"; had_old=1; fi

write_file "$available" 644 root:root "$V_NGINX_SITE"
site_changed=$WROTE
ensure_link "$available" "/etc/nginx/sites-enabled/dropstack-$V_APP.conf"

# The site reaches the live release through /srv/<app>/live; a server released before that link
# existed gets it now, from the release that serves (dropstack-switch owns the layout).
case "$(/usr/local/sbin/dropstack-switch --link-live)" in
  *changed=yes*) CHANGED=1 ;;
esac

if [ "$site_changed" = 1 ]; then
  if ! output=$(nginx -t 2>&1); then
    if [ "$had_old" = 1 ]; then cp -p "$backup" "$available"; else rm -f "$available" "/etc/nginx/sites-enabled/dropstack-$V_APP.conf"; fi
    die "nginx rejected the new site; the previous one stays in place:
$output"
  fi
  systemctl reload nginx
fi
finish
