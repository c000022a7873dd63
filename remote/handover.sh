#!/usr/bin/env bash
# The end of the first droplet's handover to the load balancer (droplets > 1), run once the site's
# name points at the load balancer. A droplet that served the site itself (a stack grown from one
# droplet) still answers HTTPS with certbot's certificate (the site step kept that server beside
# the load balancer's, remote/site.sh) for clients that resolved the name before it moved: that
# goes on for WAIT_SECONDS (the record's TTL and a margin), then the server goes (nginx checked and
# reloaded), then the certificate and its renewal (certbot delete). A droplet without either has
# nothing to do; on a later up neither exists any more.
set -euo pipefail

require V_APP V_FQDN V_WAIT_SECONDS
[[ $V_APP =~ ^[a-z][a-z0-9-]{0,30}$ ]] || die "bad app name"
[[ $V_FQDN =~ ^[a-z0-9.-]{1,253}$ ]] || die "bad host name"
[[ $V_WAIT_SECONDS =~ ^[0-9]{1,6}$ ]] || die "WAIT_SECONDS must be seconds"

# forget_owned PATH...: the paths are no longer dropstack's (this step removed them on purpose):
# their lines go from every step's manifest, so that dropstack-check does not report them missing.
forget_owned() {
  local f tmp
  for f in "$MANIFESTS"/*; do
    [ -f "$f" ] || continue
    tmp=$(mktemp "$MANIFESTS/.forget.XXXXXX")
    awk -v paths="$*" 'BEGIN { n = split(paths, list, " "); for (i = 1; i <= n; i++) gone[list[i]] = 1 }
      !(($1 == "file" && ($5 in gone)) || ($1 == "link" && ($3 in gone)))' "$f" >"$tmp"
    chmod 600 "$tmp"
    mv -f "$tmp" "$f"
  done
}

available=/etc/nginx/sites-available/dropstack-$V_APP-direct.conf
enabled=/etc/nginx/sites-enabled/dropstack-$V_APP-direct.conf
if [ -e "$available" ] || [ -L "$enabled" ]; then
  log "the name points at the load balancer; resolvers may keep this droplet's address for the record's TTL: serving HTTPS here for $V_WAIT_SECONDS s more"
  left=$V_WAIT_SECONDS
  while [ "$left" -gt 0 ]; do
    step=$(( left < 60 ? left : 60 ))
    sleep "$step"
    left=$(( left - step ))
    [ "$left" -eq 0 ] || log "  $left s to go"
  done
  rm -f "$enabled" "$available"
  forget_owned "$enabled" "$available"
  if ! output=$(nginx -t 2>&1); then
    die "nginx rejects its configuration without the droplet's own HTTPS server:
$output"
  fi
  systemctl reload nginx
  CHANGED=1
  log "stopped serving HTTPS here: the load balancer serves $V_FQDN"
fi

if [ -e "/etc/letsencrypt/renewal/$V_FQDN.conf" ] || [ -e "/etc/letsencrypt/live/$V_FQDN" ]; then
  certbot delete --non-interactive --cert-name "$V_FQDN" >/dev/null 2>&1 \
    || die "certbot could not delete the certificate for $V_FQDN (see /var/log/letsencrypt/letsencrypt.log)"
  CHANGED=1
  log "deleted certbot's certificate for $V_FQDN and its renewal (the load balancer's certificate serves the name)"
fi
finish
