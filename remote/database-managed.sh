#!/usr/bin/env bash
# The droplet's side of a managed PostgreSQL cluster: Debian's client tools (for the seed and for
# people), a login over TLS as the app's user (waited for: a new cluster, or its firewall rule,
# may take a while to admit the droplet), and the database's public schema for the app's user
# (PostgreSQL 15 and later let only the database's owner create there; the cluster's admin owns
# it). Passwords reach libpq in the environment of psql only, never on a command line.
set -euo pipefail

require V_DB_HOST V_DB_PORT V_DB_NAME V_DB_USER V_ADMIN_USER V_ADMIN_PASSWORD
db=$V_DB_NAME
role=$V_DB_USER
[[ $V_DB_HOST =~ ^[A-Za-z0-9.-]+$ ]] || die "bad database host"
[[ $V_DB_PORT =~ ^[0-9]{1,5}$ ]] || die "bad database port"
[[ $db =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "bad database name"
[[ $role =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "bad role name"
[[ $V_ADMIN_USER =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "bad admin user name"

ensure_packages postgresql-client

# As the cluster's admin, in the app's database, TLS required (sslmode=require, as in the URLs DigitalOcean gives).
admin_psql() {
  PGHOST=$V_DB_HOST PGPORT=$V_DB_PORT PGUSER=$V_ADMIN_USER PGPASSWORD=$V_ADMIN_PASSWORD PGSSLMODE=require PGDATABASE=$db \
    PGCONNECT_TIMEOUT=10 psql -X -At -v ON_ERROR_STOP=1 "$@"
}

last=""
for _ in $(seq 1 60); do
  if last=$(admin_psql -c "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()" 2>&1); then break; fi
  sleep 5
done
[ "$last" = t ] || die "the managed database at $V_DB_HOST:$V_DB_PORT did not admit this droplet over TLS within 5 minutes: $last"

granted=$(admin_psql -c "SELECT has_schema_privilege('$role', 'public', 'CREATE')")
if [ "$granted" != t ]; then
  admin_psql -q -c "GRANT ALL ON SCHEMA public TO \"$role\"" >/dev/null
  CHANGED=1
  log "gave $role the public schema of $db"
fi
log "managed PostgreSQL at $V_DB_HOST:$V_DB_PORT answers this droplet over TLS; database $db, user $role"
finish
