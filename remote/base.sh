#!/usr/bin/env bash
# Host provisioning: packages, pending security updates, the app's user and folders, the deploy
# user's keys, sshd, kernel and login hardening, the host firewall, nginx's default server (answers
# ACME challenges before the site exists), supervisor and certbot timers.
# Idempotent: a second run with the same values changes nothing and restarts nothing (it only
# looks for new security updates, and applies them if there are any).
set -euo pipefail

require V_APP V_DEPLOY_USER V_AUTHORIZED_KEYS V_APT_PACKAGES V_NGINX_DEFAULT V_NGINX_ACME_SNIPPET V_SWITCH_SCRIPT V_CHECK_SCRIPT \
  V_SSHD_CONFIG V_AUTO_UPGRADES V_NFTABLES V_SYSCTL V_MODPROBE V_NEEDRESTART V_COREDUMP_LIMITS V_COREDUMP_SYSTEMD

app=$V_APP
[[ $app =~ ^[a-z][a-z0-9-]{0,30}$ ]] || die "bad app name"
[[ $V_DEPLOY_USER =~ ^[a-z_][a-z0-9_-]{0,31}$ ]] || die "bad deploy user"

# needrestart's settings come first: the package runs after every apt install and upgrade.
ensure_dir /etc/needrestart 755 root:root
ensure_dir /etc/needrestart/conf.d 755 root:root
write_file /etc/needrestart/conf.d/50-dropstack.conf 644 root:root "$V_NEEDRESTART"

# Packages: the stack's own plus the user's extra ones (names were validated by the program).
read -r -a extra <<<"$V_APT_PACKAGES"
changed_before=$CHANGED
CHANGED=0
# Hardening packages: needrestart (services restart after upgrades), apparmor (loads the kernel's
# mandatory access control profiles), libpam-tmpdir (a private $TMPDIR per login session).
ensure_packages nginx supervisor gunicorn python3-venv python3-pip certbot curl ca-certificates util-linux \
  unattended-upgrades needrestart apparmor libpam-tmpdir nftables "${extra[@]}"
lists_fresh=$CHANGED # ensure_packages refreshed the package lists if it installed anything
CHANGED=$((changed_before | CHANGED))

# Security updates: a new droplet's image is older than Debian's security archive, so pending
# security updates are applied now rather than by the first daily unattended-upgrades run.
# Only upgrades whose candidate comes from the security archive (their dependencies may come from
# the main archive); nothing is removed; changed configuration files keep the local version.
# needrestart then restarts the services that still run old libraries.
[ "$lists_fresh" = 1 ] || apt-get -o DPkg::Lock::Timeout=600 update -qq
simulation=$(apt-get -s -o Debug::NoLocking=1 dist-upgrade)
mapfile -t pending < <(awk '$1 == "Inst" && $3 ~ /^\[/ && /\(.*-security[] ,]/ { print $2 }' <<<"$simulation")
applied=0
if [ "${#pending[@]}" -gt 0 ]; then
  log "security updates pending: ${pending[*]}"
  versions() { dpkg-query -W -f='${binary:Package} ${Version}\n'; }
  before=$(versions)
  apt-get -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    install -y -qq --only-upgrade --no-remove --no-install-recommends "${pending[@]}" >/dev/null \
    || die "could not apply the security updates (${pending[*]})"
  # Counted from dpkg's own records: installed packages whose version changed.
  applied=$(awk 'NR == FNR { v[$1] = $2; next } ($1 in v) && v[$1] != $2 { n++ } END { print n + 0 }' \
    <(printf '%s\n' "$before") <(versions))
  CHANGED=1
  if [ -e /run/reboot-required ]; then log "a reboot is needed to run the updated kernel or libraries"; fi
fi
log "security updates: $applied applied"

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
# The drift check: every file dropstack writes is listed in its step's manifest (remote/lib.sh).
write_file /usr/local/sbin/dropstack-check 755 root:root "$V_CHECK_SCRIPT"
# (runtime docker: each slot's container gets its socket directory, there again after a reboot)
write_file "/etc/tmpfiles.d/dropstack-$app.conf" 644 root:root "d /run/dropstack-$app 0750 $app $app -
d /run/dropstack-$app/blue 0770 $app $app -
d /run/dropstack-$app/green 0770 $app $app -
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

# Kernel hardening (sysctl): applied when the file changes, or when a live value differs from it
# (set by hand since); systemd-sysctl applies it at every boot. Named to sort after procps's
# 99-protect-links.conf, which would otherwise override it.
write_file /etc/sysctl.d/99-zz-dropstack.conf 644 root:root "$V_SYSCTL"
# sysctl_differs FILE: true when a key of FILE that this kernel has holds another value now.
sysctl_differs() {
  local key value path
  while IFS=' =' read -r key value; do
    [[ $key =~ ^[a-z] ]] || continue
    path=/proc/sys/${key//.//}
    [ -e "$path" ] || continue
    [ "$(cat "$path")" = "$value" ] || return 0
  done <"$1"
  return 1
}
if [ "$WROTE" = 1 ] || sysctl_differs /etc/sysctl.d/99-zz-dropstack.conf; then
  # Other files' errors (e.g. a key this kernel lacks) are reported, ours are checked below.
  output=$(sysctl --system 2>&1 >/dev/null) || log "sysctl --system reported: $output"
  if sysctl_differs /etc/sysctl.d/99-zz-dropstack.conf; then die "the kernel did not take the settings of /etc/sysctl.d/99-zz-dropstack.conf"; fi
  CHANGED=1
fi

# Kernel modules a web server never needs (USB/FireWire storage, removable-media file systems,
# DCCP, SCTP, RDS, TIPC).
write_file /etc/modprobe.d/dropstack.conf 644 root:root "$V_MODPROBE"

# No core dumps: login sessions (limits), systemd-coredump if installed; setuid ones via sysctl.
write_file /etc/security/limits.d/10-dropstack-coredump.conf 644 root:root "$V_COREDUMP_LIMITS"
ensure_dir /etc/systemd/coredump.conf.d 755 root:root
write_file /etc/systemd/coredump.conf.d/dropstack.conf 644 root:root "$V_COREDUMP_SYSTEMD"

# Login defaults for accounts created from now on: files private to their group (umask 027), a
# changed password kept for a day. No password ageing: nobody logs in with a password here, and an
# expired password would lock a key-only account out of SSH.
# set_login_def NAME VALUE: sets NAME in /etc/login.defs (the package's file, edited in place).
set_login_def() {
  local name=$1 value=$2
  grep -qE "^${name}[[:space:]]+${value}\$" /etc/login.defs && return 0
  if grep -qE "^${name}[[:space:]]" /etc/login.defs; then
    sed -i -E "s/^${name}[[:space:]].*/${name}\t\t${value}/" /etc/login.defs
  else
    printf '%s\t\t%s\n' "$name" "$value" >>/etc/login.defs
  fi
  CHANGED=1
  log "set $name $value in /etc/login.defs"
}
set_login_def UMASK 027
set_login_def PASS_MIN_DAYS 1

# Leftovers: configuration of removed packages (dpkg state "rc") is purged.
mapfile -t leftovers < <(dpkg-query -W -f='${db:Status-Abbrev} ${binary:Package}\n' | awk '$1 == "rc" { print $2 }')
if [ "${#leftovers[@]}" -gt 0 ]; then
  apt-get -o DPkg::Lock::Timeout=600 purge -y -qq "${leftovers[@]}" >/dev/null
  CHANGED=1
  log "purged the configuration of removed packages: ${leftovers[*]}"
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
# Every enabled site is dropstack's (this default server and the app's site).
own_dir /etc/nginx/sites-enabled
nginx_changed=$((nginx_changed | SET_ASIDE))
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
