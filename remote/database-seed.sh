#!/usr/bin/env bash
# Restores the stack's seed dump into the app's database once: only while the database holds no
# table, in one transaction, as the app's role (so the app owns what it restores). A database
# that has tables is never touched again, whatever the seed. The uploaded dump is removed after.
# The database is the droplet's own (as postgres over the unix socket, the role set with --role),
# or a managed server (DB_HOST given: as the app's role over TLS; its password reaches libpq in
# the environment, never on a command line).
set -euo pipefail

require V_DB_NAME V_DB_USER V_SEED_FILE V_SEED_FORMAT V_DB_HOST V_DB_PORT V_DB_PASSWORD
db=$V_DB_NAME
role=$V_DB_USER
file=$V_SEED_FILE
[[ $db =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "bad database name"
[[ $role =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "bad role name"
[[ $file =~ ^/home/[a-z_][a-z0-9_-]*/dropstack-seed-[0-9a-f]{16}$ ]] || die "bad seed file path"
trap 'rm -f "$file"' EXIT

if [ -n "$V_DB_HOST" ]; then
  # shellcheck disable=SC2153 # (V_DB_PORT is read from stdin, like every value: see require above)
  [[ $V_DB_HOST =~ ^[A-Za-z0-9.-]+$ && $V_DB_PORT =~ ^[0-9]{1,5}$ ]] || die "bad database host or port"
  export PGHOST=$V_DB_HOST PGPORT=$V_DB_PORT PGUSER=$role PGPASSWORD=$V_DB_PASSWORD PGSSLMODE=require PGDATABASE=$db
  as_db() { "$@"; }
  role_options=()
  set_role=""
else
  as_db() { (cd / && runuser -u postgres -- "$@"); }
  role_options=(--role="$role")
  set_role="SET ROLE \"$role\";"
fi

tables=$(as_db psql -X -At -v ON_ERROR_STOP=1 -d "$db" -c \
  "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'")
if [ "$tables" != 0 ]; then
  log "database $db already holds $tables tables or sequences: the seed is restored only into an empty database, not again"
  finish
  exit 0
fi
[ -f "$file" ] || die "the seed dump was not uploaded to $file"
case $V_SEED_FORMAT in
  custom)
    # pg_restore reads the archive's table of contents first: an archive these tools cannot read
    # is refused before anything is restored.
    as_db pg_restore --list <"$file" >/dev/null || die "this server's pg_restore ($(pg_restore --version)) cannot read the seed dump"
    as_db pg_restore --no-owner --no-privileges "${role_options[@]}" --single-transaction --exit-on-error -d "$db" <"$file"
    ;;
  plain)
    { printf '%s\n' "$set_role"; cat "$file"; } \
      | as_db psql -X -q -v ON_ERROR_STOP=1 --single-transaction -d "$db" >/dev/null
    ;;
  *) die "bad seed format $V_SEED_FORMAT" ;;
esac
CHANGED=1
log "restored the seed dump into $db: $(as_db psql -X -At -d "$db" -c "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')") tables"
finish
