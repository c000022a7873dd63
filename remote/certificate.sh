#!/usr/bin/env bash
# Obtains the site's certificate with certbot's webroot method (nginx's default server answers the
# challenge) and keeps renewal working: the packaged systemd timer renews, a deploy hook reloads nginx.
# A certificate that exists, comes from the configured ACME server and is not due is left alone.
set -euo pipefail

require V_FQDN V_EMAIL V_ACME_SERVER V_ACME_CA_BUNDLE V_RENEW_HOOK

fqdn=$V_FQDN
[[ $fqdn =~ ^[a-z0-9.-]+$ ]] || die "bad host name"

# A private ACME server's CA (optional): trusted by certbot now and by the renewal service later.
ensure_dir /etc/dropstack 755 root:root
dropin=/etc/systemd/system/certbot.service.d/dropstack.conf
if [ -n "$V_ACME_CA_BUNDLE" ]; then
  write_file /etc/dropstack/acme-ca.pem 644 root:root "$V_ACME_CA_BUNDLE"
  ensure_dir /etc/systemd/system/certbot.service.d 755 root:root
  write_file "$dropin" 644 root:root "[Service]
Environment=REQUESTS_CA_BUNDLE=/etc/dropstack/acme-ca.pem
"
  [ "$WROTE" = 0 ] || systemctl daemon-reload
  export REQUESTS_CA_BUNDLE=/etc/dropstack/acme-ca.pem
elif [ -e "$dropin" ]; then
  rm -f "$dropin" /etc/dropstack/acme-ca.pem
  systemctl daemon-reload
  CHANGED=1
fi

# Renewals reload nginx, but only with a configuration nginx accepts.
ensure_dir /etc/letsencrypt/renewal-hooks/deploy 755 root:root
write_file /etc/letsencrypt/renewal-hooks/deploy/dropstack-reload-nginx 755 root:root "$V_RENEW_HOOK"

renewal=/etc/letsencrypt/renewal/$fqdn.conf
cert=/etc/letsencrypt/live/$fqdn/fullchain.pem
current_server=
if [ -f "$renewal" ]; then
  current_server=$(sed -n 's/^server *= *//p' "$renewal" | head -n1)
fi
args=(certonly --webroot -w /var/www/dropstack-acme --cert-name "$fqdn" -d "$fqdn"
  --server "$V_ACME_SERVER" --non-interactive --agree-tos -m "$V_EMAIL" --no-eff-email)
if [ -f "$cert" ] && [ "$current_server" = "$V_ACME_SERVER" ] && openssl x509 -checkend 2592000 -noout -in "$cert" >/dev/null; then
  log "certificate for $fqdn from $V_ACME_SERVER is valid for more than 30 days"
else
  if [ -f "$cert" ] && [ "$current_server" != "$V_ACME_SERVER" ]; then
    log "ACME server changed ($current_server -> $V_ACME_SERVER): replacing the certificate"
    args+=(--force-renewal)
  fi
  log "requesting a certificate for $fqdn from $V_ACME_SERVER"
  certbot "${args[@]}" >&2 || die "certbot could not obtain a certificate for $fqdn (see its output above; the host name must resolve to this server and port 80 must be open)"
  CHANGED=1
  if nginx -t -q 2>/dev/null; then systemctl reload nginx; fi
fi
finish
