#!/usr/bin/env bash
# Host provisioning: packages, the app's user and folders, the deploy user's keys, nginx's
# default server (answers ACME challenges before the site exists), supervisor and certbot timers.
# Idempotent: a second run with the same values changes nothing and restarts nothing.
set -euo pipefail

require V_APP V_DEPLOY_USER V_AUTHORIZED_KEYS V_APT_PACKAGES V_NGINX_DEFAULT V_NGINX_ACME_SNIPPET V_SWITCH_SCRIPT \
  V_SSHD_CONFIG V_AUTO_UPGRADES V_NFTABLES

app=$V_APP
[[ $app =~ ^[a-z][a-z0-9-]{0,30}$ ]] || die "bad app name"
[[ $V_DEPLOY_USER =~ ^[a-z_][a-z0-9_-]{0,31}$ ]] || die "bad deploy user"

# Packages: the stack's own plus the user's extra ones (names were validated by the program).
read -r -a extra <<<"$V_APT_PACKAGES"
ensure_packages nginx supervisor gunicorn python3-venv python3-pip certbot curl ca-certificates util-linux \
  unattended-upgrades nftables "${extra[@]}"

# The app runs as its own system user; www-data joins its group to reach the socket.
if ! id -u "$app" >/dev/null 2>&1; then
  useradd --system --user-group --home-dir "/srv/$app" --no-create-home --shell /usr/sbin/nologin "$app"
  CHANGED=1
  log "created user $app"
fi
if ! id -nG www-data | tr ' ' '\n' | grep -qx "$app"; then
  usermod -a -G "$app" www-data
  CHANGED=1
fi

# Layout: code is root-owned (the app cannot write it); shared/ holds what survives releases.
ensure_dir "/srv/$app" 755 root:root
ensure_dir "/srv/$app/releases" 755 root:root
ensure_dir "/srv/$app/shared" 750 "root:$app"
ensure_dir "/srv/$app/shared/data" 750 "$app:$app"
ensure_dir "/srv/$app/shared/log" 750 "$app:$app"
ensure_dir "/srv/$app/shared/.dropstack" 755 root:root

# The release switch (blue/green, health-gated) and its rollback, used by releases and by people.
ensure_dir /etc/dropstack 755 root:root
write_file /etc/dropstack/app 644 root:root "$app"
write_file /usr/local/sbin/dropstack-switch 755 root:root "$V_SWITCH_SCRIPT"
ensure_link dropstack-switch /usr/local/sbin/dropstack-rollback
write_file "/etc/tmpfiles.d/dropstack-$app.conf" 644 root:root "d /run/dropstack-$app 0750 $app $app -
"
if [ ! -d "/run/dropstack-$app" ] || [ "$WROTE" = 1 ]; then
  systemd-tmpfiles --create "/etc/tmpfiles.d/dropstack-$app.conf"
fi

# The deploy user's keys: the program's generated key plus the admins' keys.
home=$(getent passwd "$V_DEPLOY_USER" | cut -d: -f6)
[ -n "$home" ] || die "deploy user $V_DEPLOY_USER does not exist (cloud-init creates it)"
ensure_dir "$home/.ssh" 700 "$V_DEPLOY_USER:$V_DEPLOY_USER"
write_file "$home/.ssh/authorized_keys" 600 "$V_DEPLOY_USER:$V_DEPLOY_USER" "$V_AUTHORIZED_KEYS"

# sshd: keys only, no root, only the deploy user. Checked with sshd -t before it takes effect.
write_file /etc/ssh/sshd_config.d/10-dropstack.conf 644 root:root "$V_SSHD_CONFIG"
if [ "$WROTE" = 1 ]; then
  if ! output=$(sshd -t 2>&1); then
    rm -f /etc/ssh/sshd_config.d/10-dropstack.conf
    die "sshd rejected the hardened configuration; it was removed again:
$output"
  fi
  systemctl reload ssh
fi

# Host firewall (nftables): checked with nft -c before it is loaded; loaded again at boot.
write_file /etc/nftables.conf 755 root:root "$V_NFTABLES"
if [ "$WROTE" = 1 ] || ! nft list table inet dropstack >/dev/null 2>&1; then
  output=$(nft -c -f /etc/nftables.conf 2>&1) || die "nftables rejected the firewall rules:
$output"
  nft -f /etc/nftables.conf
  CHANGED=1
fi
if ! systemctl is-enabled --quiet nftables; then
  systemctl enable nftables >/dev/null 2>&1
  CHANGED=1
fi

# Security updates install themselves (Debian's unattended-upgrades, security origin only).
write_file /etc/apt/apt.conf.d/20auto-upgrades 644 root:root "$V_AUTO_UPGRADES"

# nginx: no distribution default site; a catch-all server that answers ACME challenges.
ensure_dir /var/www/dropstack-acme 755 root:root
nginx_changed=0
if [ -e /etc/nginx/sites-enabled/default ] || [ -L /etc/nginx/sites-enabled/default ]; then
  rm -f /etc/nginx/sites-enabled/default
  nginx_changed=1
  CHANGED=1
fi
write_file /etc/nginx/snippets/dropstack-acme.conf 644 root:root "$V_NGINX_ACME_SNIPPET"
nginx_changed=$((nginx_changed | WROTE))
write_file /etc/nginx/sites-available/00-dropstack-default.conf 644 root:root "$V_NGINX_DEFAULT"
nginx_changed=$((nginx_changed | WROTE))
ensure_link /etc/nginx/sites-available/00-dropstack-default.conf /etc/nginx/sites-enabled/00-dropstack-default.conf
if [ "$nginx_changed" = 1 ]; then
  nginx -t -q || die "nginx rejected its configuration (see above)"
fi

for unit in nginx supervisor certbot.timer; do
  if ! systemctl is-enabled --quiet "$unit" || ! systemctl is-active --quiet "$unit"; then
    systemctl enable --now "$unit" >/dev/null 2>&1 || die "could not start $unit"
    CHANGED=1
  fi
done
if [ "$nginx_changed" = 1 ]; then
  systemctl reload nginx
fi
finish
