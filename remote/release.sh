#!/usr/bin/env bash
# Releases the app: the uploaded source becomes releases/<id> with its own virtualenv, the
# environment and gunicorn/supervisor configs are written, `current` flips atomically, gunicorn
# restarts and must pass the health check; if it does not, `current` flips back and the step fails
# with the app's log. Old releases beyond the configured number are removed (never current/previous).
set -euo pipefail

require V_APP V_RELEASE_ID V_UPLOAD_DIR V_ENV_JSON V_GUNICORN_CONF V_SUPERVISOR_CONF \
  V_HEALTH_PATH V_HEALTH_HOST V_KEEP_RELEASES V_TRIGGERED_BY

app=$V_APP
id=$V_RELEASE_ID
[[ $app =~ ^[a-z][a-z0-9-]{0,30}$ ]] || die "bad app name"
[[ $id =~ ^[A-Za-z0-9._-]{1,80}$ ]] || die "bad release id"
if ! [[ $V_KEEP_RELEASES =~ ^[0-9]+$ ]] || [ "$V_KEEP_RELEASES" -lt 2 ]; then die "bad number of releases to keep"; fi
root=/srv/$app
releases=$root/releases
release=$releases/$id
socket=/run/dropstack-$app/app.sock
logfile=$root/shared/log/gunicorn.log

# One release at a time on this server.
exec 9>"$root/.deploy.lock"
flock -w 600 9 || die "another release holds $root/.deploy.lock"

# 1. The release folder, built once: source, virtualenv, dependencies.
if [ ! -f "$release/.dropstack-complete" ]; then
  [ -d "$V_UPLOAD_DIR" ] || die "uploaded source $V_UPLOAD_DIR is missing"
  tmp=$releases/.$id.tmp
  rm -rf "$tmp"
  cp -R "$V_UPLOAD_DIR" "$tmp"
  rm -rf "$tmp/.venv"
  log "creating the virtualenv for release $id"
  # The venv sees the server's packages (gunicorn, pip); the system pip installs into the venv.
  # (--without-pip: seeding pip into every release costs ~90 s on a small droplet.)
  python3 -m venv --system-site-packages --without-pip "$tmp/.venv"
  if [ -f "$tmp/requirements.txt" ]; then
    log "installing requirements.txt"
    "$tmp/.venv/bin/python" -m pip install --disable-pip-version-check --no-input -q -r "$tmp/requirements.txt" >&2 \
      || die "pip could not install requirements.txt of release $id"
  fi
  "$tmp/.venv/bin/python" -m compileall -q "$tmp" -x '/\.venv/' >/dev/null || true
  chown -R root:root "$tmp"
  chmod -R u=rwX,go=rX "$tmp"
  touch "$tmp/.dropstack-complete"
  rm -rf "$release"
  mv -T "$tmp" "$release"
  CHANGED=1
fi
rm -rf "$V_UPLOAD_DIR"

# 2. Configuration that lives outside releases (the environment holds secrets: 0600, app-owned).
write_file "$root/shared/env.json" 600 "$app:$app" "$V_ENV_JSON"
config_changed=$WROTE
write_file "$root/shared/gunicorn.conf.py" 644 root:root "$V_GUNICORN_CONF"
config_changed=$((config_changed | WROTE))
write_file "/etc/supervisor/conf.d/dropstack-$app.conf" 644 root:root "$V_SUPERVISOR_CONF"
config_changed=$((config_changed | WROTE))

previous=$(readlink "$root/current" 2>/dev/null || true)

health() {
  curl -sS -o /dev/null -w '%{http_code}' --max-time 5 --unix-socket "$socket" \
    -H "Host: $V_HEALTH_HOST" -H 'X-Forwarded-Proto: https' "http://localhost$V_HEALTH_PATH" 2>/dev/null || true
}

wait_healthy() {
  local attempt code=
  for attempt in $(seq 1 30); do
    code=$(health)
    [ "$code" = 200 ] && return 0
    log "health check $attempt/30: $V_HEALTH_PATH answered ${code:-nothing}"
    sleep 1
  done
  return 1
}

restart_app() {
  supervisorctl reread >/dev/null
  supervisorctl update >/dev/null
  supervisorctl restart "$app" >/dev/null 2>&1 || true
}

audit() {
  printf '%s release=%s by=%s result=%s\n' "$(date -u +%FT%TZ)" "$id" "$V_TRIGGERED_BY" "$1" >>"$root/shared/log/releases.log"
}

# 3. Switch, restart, check; roll back on failure.
if [ "$previous" != "$release" ] || [ "$config_changed" = 1 ] || [ "$(health)" != 200 ]; then
  ensure_link "$release" "$root/current"
  restart_app
  if ! wait_healthy; then
    tail_log=$(tail -n 40 "$logfile" 2>/dev/null || true)
    if [ -n "$previous" ] && [ "$previous" != "$release" ] && [ -d "$previous" ]; then
      ensure_link "$previous" "$root/current"
      restart_app
      log "rolled back to ${previous##*/}"
    fi
    audit failed
    die "release $id failed its health check: GET $V_HEALTH_PATH did not answer 200 within 30 attempts.
Last lines of $logfile:
$tail_log"
  fi
  audit ok
  CHANGED=1
fi

# 4. Keep the newest releases; never the current or the previous one.
mapfile -t old < <(find "$releases" -mindepth 1 -maxdepth 1 -type d ! -name '.*' -printf '%T@ %p\n' | sort -rn | cut -d' ' -f2- | tail -n +"$((V_KEEP_RELEASES + 1))")
for dir in "${old[@]}"; do
  if [ "$dir" != "$release" ] && [ "$dir" != "$previous" ]; then
    rm -rf "$dir"
    log "removed old release ${dir##*/}"
  fi
done

echo "release=$id"
finish
