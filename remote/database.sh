#!/usr/bin/env bash
# PostgreSQL on the droplet, its data on the stack's volume: Debian's server for this release
# (never a cluster on the droplet's own disk), one cluster whose data directory lives under the
# volume's mount, listening on its unix socket only (no TCP port anywhere), tuned for the
# droplet's memory, and one database owned by the app's role, which logs in with its generated
# password (scram-sha-256) and nothing else. A replaced droplet takes over the cluster already on
# the volume. The password arrives on stdin and reaches psql on its stdin, never a command line.
set -euo pipefail

require V_DB_NAME V_DB_USER V_DB_PASSWORD V_DATA_DIR V_MOUNT V_PG_MAJOR V_DB_SCRIPT V_KEEP_DAYS
db=$V_DB_NAME
role=$V_DB_USER
major=$V_PG_MAJOR
data=$V_DATA_DIR
[[ $db =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "bad database name"
[[ $role =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "bad role name"
[[ $major =~ ^[0-9]{2}$ ]] || die "bad PostgreSQL major version"
[[ $V_DB_PASSWORD =~ ^[A-Za-z0-9]{20,128}$ ]] || die "the generated password must be 20 to 128 letters and digits"
[[ $data == "$V_MOUNT"/* ]] || die "the data directory must be on the volume ($V_MOUNT)"
[[ $V_KEEP_DAYS =~ ^[0-9]{1,4}$ ]] || die "bad number of days to keep backups"
mountpoint -q "$V_MOUNT" || die "the volume is not mounted at $V_MOUNT: PostgreSQL's data must not land on the droplet's own disk"
conf=/etc/postgresql/$major/main

# ---- the server: the package must not create a cluster of its own on the droplet's disk
ensure_dir /etc/postgresql-common/createcluster.d 755 root:root
write_file /etc/postgresql-common/createcluster.d/dropstack.conf 644 root:root "# dropstack: the only cluster lives on the volume
create_main_cluster = false
"
ensure_packages "postgresql-$major" "postgresql-client-$major"
# The server waits for the volume at boot, and never starts without it.
ensure_dir /etc/systemd/system/postgresql@.service.d 755 root:root
write_file /etc/systemd/system/postgresql@.service.d/dropstack-volume.conf 644 root:root "[Unit]
RequiresMountsFor=$V_MOUNT
"
[ "$WROTE" = 0 ] || systemctl daemon-reload

# ---- the cluster: created once on the volume, taken over by a new droplet
if [ ! -f "$conf/postgresql.conf" ]; then
  if [ -f "$data/PG_VERSION" ]; then
    found=$(cat "$data/PG_VERSION")
    [ "$found" = "$major" ] || die "the volume holds a PostgreSQL $found cluster at $data, and this server is PostgreSQL $major: upgrade it with pg_upgradecluster on a droplet of the old release first"
    log "taking over the PostgreSQL $major cluster already on the volume ($data)"
    chown -R postgres:postgres "$data"
    # pg_createcluster integrates an existing data directory by moving its three configuration
    # files to /etc; the cluster's own ones stayed on the old droplet's disk, so it gets
    # placeholders here, and the settings and access rules below replace them.
    for f in postgresql.conf pg_hba.conf pg_ident.conf; do
      [ -e "$data/$f" ] || install -m 600 -o postgres -g postgres /dev/null "$data/$f"
    done
  else
    log "creating the PostgreSQL $major cluster on the volume ($data)"
    mkdir -p "$(dirname "$data")"
    chown postgres:postgres "$(dirname "$data")"
  fi
  pg_createcluster --datadir="$data" "$major" main -- --auth-local=peer --auth-host=reject >/dev/null
  CHANGED=1
fi

# ---- settings: socket only, memory-sized, scram passwords
mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
write_file "$conf/conf.d/dropstack.conf" 644 postgres:postgres "# dropstack: written on every provisioning; sized for ${mem_mb} MB of memory
listen_addresses = ''
password_encryption = scram-sha-256
shared_buffers = $(( mem_mb / 4 ))MB
effective_cache_size = $(( mem_mb * 3 / 4 ))MB
maintenance_work_mem = $(( mem_mb / 16 > 16 ? mem_mb / 16 : 16 ))MB
work_mem = 4MB
max_connections = 50
"
settings_changed=$WROTE
write_file "$conf/pg_hba.conf" 640 postgres:postgres "# dropstack: the unix socket only; the app's role with its password, postgres for administration
local   all   postgres   peer
local   $db   $role   scram-sha-256
"
hba_changed=$WROTE
systemctl enable --quiet "postgresql@$major-main"
if ! systemctl is-active --quiet "postgresql@$major-main"; then
  systemctl start "postgresql@$major-main"
  CHANGED=1
elif [ "$settings_changed" = 1 ]; then
  systemctl restart "postgresql@$major-main"
elif [ "$hba_changed" = 1 ]; then
  systemctl reload "postgresql@$major-main"
fi
for _ in $(seq 1 60); do
  runuser -u postgres -- pg_isready -q && break
  sleep 1
done
runuser -u postgres -- pg_isready -q || die "PostgreSQL $major did not accept connections within 60 s: $(journalctl -u "postgresql@$major-main" -n 20 --no-pager)"

# ---- the app's role and database (the password only ever on psql's stdin)
{
  printf '\\set pw %s\n' "$V_DB_PASSWORD"
  cat <<'SQL'
SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') AS create_role \gset
\if :create_role
CREATE ROLE :"role" LOGIN;
\endif
ALTER ROLE :"role" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'pw';
SELECT NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') AS create_db \gset
\if :create_db
CREATE DATABASE :"db" OWNER :"role";
\endif
SQL
} | runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -v role="$role" -v db="$db" -d postgres >/dev/null

# ---- backups: dropstack-db, and a nightly run of it (a failure shows in systemctl --failed)
ensure_dir /etc/dropstack 755 root:root
write_file /etc/dropstack/database 644 root:root "db=$db
role=$role
mount=$V_MOUNT
keep_days=$V_KEEP_DAYS
"
write_file /usr/local/sbin/dropstack-db 755 root:root "$V_DB_SCRIPT"
write_file /etc/systemd/system/dropstack-db-backup.service 644 root:root "[Unit]
Description=dropstack: back up the app's database onto the volume (dropstack-db backup)
After=postgresql.service
RequiresMountsFor=$V_MOUNT

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/dropstack-db backup
"
units_changed=$WROTE
write_file /etc/systemd/system/dropstack-db-backup.timer 644 root:root "[Unit]
Description=dropstack: nightly backup of the app's database

[Timer]
OnCalendar=*-*-* 03:15:00
RandomizedDelaySec=45min
Persistent=true

[Install]
WantedBy=timers.target
"
if [ "$units_changed" = 1 ] || [ "$WROTE" = 1 ]; then systemctl daemon-reload; fi
if ! systemctl is-enabled --quiet dropstack-db-backup.timer || ! systemctl is-active --quiet dropstack-db-backup.timer; then
  systemctl enable --now --quiet dropstack-db-backup.timer
  CHANGED=1
fi
log "PostgreSQL $major: database $db for role $role, data on the volume ($data), unix socket only; nightly backups kept $V_KEEP_DAYS days"
finish
