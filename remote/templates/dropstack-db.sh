#!/usr/bin/env bash
# Installed by dropstack as /usr/local/sbin/dropstack-db with `database: droplet`.
#
# The app's database, backed up onto the volume and restored from there:
#   dropstack-db backup          pg_dump -Fc into <volume>/backups, read back with pg_restore --list
#                                before it counts; backups older than the kept days are removed
#                                (the newest is always kept). The nightly timer runs this.
#   dropstack-db list            the backups, newest first
#   dropstack-db restore FILE    replaces the database's objects with the backup's, in one
#                                transaction under the deploy lock: the app sees the old data until
#                                the restore commits, then the restored data, never a mix.
set -euo pipefail
umask 077

me=dropstack-db
log() { printf '[%s] %s\n' "$me" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# @deploy-lock@ (remote/deploy-lock.sh is rendered in here: take_deploy_lock)

[ "$(id -u)" = 0 ] || die "run it as root: sudo $me $*"
conf=/etc/dropstack/database
[ -r "$conf" ] || die "$conf is missing: this server has no database from dropstack"
db='' role='' mount='' keep_days=''
while IFS='=' read -r key value; do
  case $key in
    db) db=$value ;;
    role) role=$value ;;
    mount) mount=$value ;;
    keep_days) keep_days=$value ;;
  esac
done <"$conf"
[[ $db =~ ^[a-z_][a-z0-9_]{0,62}$ && $role =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "bad database or role name in $conf"
[[ $mount == /mnt/* && $keep_days =~ ^[0-9]{1,4}$ ]] || die "bad mount or keep_days in $conf"
app=$(</etc/dropstack/app)
[[ $app =~ ^[a-z][a-z0-9-]{0,30}$ ]] || die "bad app name in /etc/dropstack/app"
backups=$mount/backups
mountpoint -q "$mount" || die "the volume is not mounted at $mount"

as_postgres() { (cd / && runuser -u postgres -- "$@"); }

backups_newest_first() {
  find "$backups" -maxdepth 1 -type f -name "$db-*.dump" -printf '%T@ %p\n' 2>/dev/null | sort -rn | cut -d' ' -f2-
}

backup() {
  install -d -m 700 -o postgres -g postgres "$backups"
  local file
  file=$backups/$db-$(date -u +%Y%m%dT%H%M%S.%3NZ).dump
  as_postgres pg_dump -Fc -d "$db" -f "$file.tmp" || { rm -f "$file.tmp"; die "pg_dump of $db failed"; }
  local entries
  if ! entries=$(as_postgres pg_restore --list "$file.tmp" | grep -cv '^;'); then
    rm -f "$file.tmp"
    die "the backup of $db does not read back with pg_restore --list"
  fi
  mv -f "$file.tmp" "$file"
  log "backed up $db to $file ($(du -h "$file" | cut -f1), $entries entries)"
  local newest old
  newest=$(backups_newest_first | head -n 1)
  while IFS= read -r old; do
    if [ -z "$old" ] || [ "$old" = "$newest" ]; then continue; fi
    rm -f "$old"
    log "removed $old (older than $keep_days days)"
  done < <(find "$backups" -maxdepth 1 -type f -name "$db-*.dump" -mmin +$(( keep_days * 1440 )))
}

list() {
  local file
  while IFS= read -r file; do
    [ -n "$file" ] || continue
    printf '%s  %s  %s\n' "$(date -u -r "$file" +%FT%TZ)" "$(du -h "$file" | cut -f1)" "$file"
  done < <(backups_newest_first)
}

restore() {
  local file=${1:-}
  [ -n "$file" ] || die "usage: $me restore FILE (one of: $me list)"
  [[ $file == */* ]] || file=$backups/$file
  [ -f "$file" ] || die "no backup at $file (see $me list)"
  as_postgres pg_restore --list "$file" >/dev/null || die "$file is not a backup pg_restore can read"
  take_deploy_lock "/srv/$app/.deploy.lock" "dropstack-db restore $(basename "$file") by ${SUDO_USER:-root}"
  log "restoring $file into $db: each table, sequence and view in the backup replaces the one in the database ($(as_postgres psql -X -At -d "$db" -c "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") tables now), in one transaction"
  as_postgres pg_restore --clean --if-exists --no-owner --no-privileges --role="$role" --single-transaction --exit-on-error -d "$db" "$file"
  log "restored $db from $file"
}

case ${1:-} in
  backup) backup ;;
  list) list ;;
  restore) restore "${2:-}" ;;
  *) die "usage: $me backup | list | restore FILE" ;;
esac
