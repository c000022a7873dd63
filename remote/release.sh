#!/usr/bin/env bash
# Releases the app: the uploaded source becomes releases/<id> with its own virtualenv (built once;
# a release still on the server is reused), the environment and gunicorn config are written to
# shared/, then dropstack-switch boots it in the idle blue/green slot, runs the release command,
# health-checks it through its own socket and only then switches traffic to it. On failure the
# live release keeps serving and this step fails with the reason and the new release's log.
set -euo pipefail

require V_APP V_RELEASE_ID V_UPLOAD_DIR V_ENV_JSON V_GUNICORN_CONF V_SUPERVISOR_SLOT \
  V_HEALTH_PATH V_HEALTH_HOST V_HEALTH_STATUS V_HEALTH_TIMEOUT V_HEALTH_ATTEMPTS V_KEEP_RELEASES \
  V_RELEASE_COMMAND V_TRIGGERED_BY V_CACHE_ENTRIES V_CLIENT_UPLOAD_DIR

app=$V_APP
id=$V_RELEASE_ID
[[ $app =~ ^[a-z][a-z0-9-]{0,30}$ ]] || die "bad app name"
[[ $id =~ ^[A-Za-z0-9._-]{1,80}$ ]] || die "bad release id"
for n in V_HEALTH_STATUS V_HEALTH_TIMEOUT V_HEALTH_ATTEMPTS V_KEEP_RELEASES; do
  [[ ${!n} =~ ^[0-9]+$ ]] || die "${n#V_} must be a number"
done
[[ $V_HEALTH_PATH =~ ^/[A-Za-z0-9._~/-]*$ ]] || die "bad health path"
[[ $V_HEALTH_HOST =~ ^[a-z0-9.-]+$ ]] || die "bad health host"
[[ -z $V_CLIENT_UPLOAD_DIR || $V_CLIENT_UPLOAD_DIR == "$V_UPLOAD_DIR-client" ]] || die "the client's upload must be next to the app's"
# (runtime docker only: the image the program built on this server, and its memory limit)
V_RUNTIME=${V_RUNTIME:-python}
V_IMAGE=${V_IMAGE:-}
# (a python release records docker's default, 512 MiB as in the config schema: a rollback from it to
# a kept container release still has a limit)
V_CONTAINER_MEMORY=${V_CONTAINER_MEMORY:-512}
case "$V_RUNTIME" in
  python) [ -z "$V_IMAGE" ] || die "an image is only for runtime docker" ;;
  # (the program tags the image it built on this server by the app folder's content hash)
  docker)
    [[ $V_IMAGE =~ ^dropstack/[a-z0-9-]+:[a-z0-9]{12,64}$ ]] || die "bad image name"
    docker image inspect "$V_IMAGE" >/dev/null 2>&1 || die "image $V_IMAGE is not on this server (it is built before the release)" ;;
  *) die "bad runtime" ;;
esac
[[ $V_CONTAINER_MEMORY =~ ^[0-9]{2,6}$ ]] || die "CONTAINER_MEMORY must be MiB"
root=/srv/$app
releases=$root/releases
release=$releases/$id
state=$root/shared/.dropstack
lock=$root/.deploy.lock

# One release at a time on this server (remote/deploy-lock.sh, shared with dropstack-switch).
take_deploy_lock "$lock" "release $id by $V_TRIGGERED_BY"

# The virtualenv depends only on requirements.txt and the server's Python: releases whose
# requirements did not change share one, under venvs/<hash> (root-owned, read-only to the app).
# It is built where it stays (console scripts name their venv's path) and marked complete last.
ensure_venv() {
  local source=$1 key venv
  key=$({ python3 --version; cat "$source/requirements.txt" 2>/dev/null || true; } | sha256sum | cut -c1-16)
  venv=$root/venvs/$key
  if [ -f "$venv/.dropstack-complete" ]; then
    log "reusing virtualenv $key (requirements.txt and Python unchanged)"
  else
    ensure_dir "$root/venvs" 755 root:root
    rm -rf "$venv"
    log "creating virtualenv $key"
    # The venv sees the server's packages (gunicorn, pip); the system pip installs into the venv.
    # (--without-pip: seeding pip into every venv costs ~90 s on a small droplet.)
    python3 -m venv --system-site-packages --without-pip "$venv"
    if [ -f "$source/requirements.txt" ]; then
      log "installing requirements.txt"
      "$venv/bin/python" -m pip install --disable-pip-version-check --no-input -q -r "$source/requirements.txt" >&2 \
        || die "pip could not install requirements.txt of release $id"
    fi
    chown -R root:root "$venv"
    chmod -R u=rwX,go=rX "$venv"
    touch "$venv/.dropstack-complete"
  fi
  VENV=$venv
}

# 1. The release folder, built once: source, a link to its virtualenv.
if [ ! -f "$release/.dropstack-complete" ]; then
  [ -d "$V_UPLOAD_DIR" ] || die "uploaded source $V_UPLOAD_DIR is missing"
  tmp=$releases/.$id.tmp
  rm -rf "$tmp"
  cp -R "$V_UPLOAD_DIR" "$tmp"
  rm -rf "$tmp/.venv" "$tmp/shared"
  # Python's caches are not part of a release (the release hash skips them too).
  while IFS= read -r pattern; do
    if [ -n "$pattern" ]; then find "$tmp" -depth -name "$pattern" -exec rm -rf {} +; fi
  done <<<"$V_CACHE_ENTRIES"
  # A built client travels in the release (.client): nginx serves it through the same switch.
  if [ -n "$V_CLIENT_UPLOAD_DIR" ]; then
    [ -f "$V_CLIENT_UPLOAD_DIR/index.html" ] || die "uploaded client $V_CLIENT_UPLOAD_DIR has no index.html"
    cp -R "$V_CLIENT_UPLOAD_DIR" "$tmp/.client"
  fi
  if [ "$V_RUNTIME" = docker ]; then
    # The app runs from its image; the folder keeps what nginx serves (static/, the client).
    printf '%s\n' "$V_IMAGE" >"$tmp/.image"
  else
    ensure_venv "$tmp"
    ln -sfn "$VENV" "$tmp/.venv"
    "$tmp/.venv/bin/python" -m compileall -q "$tmp" -x '/\.venv/' >/dev/null || true
  fi
  ln -sfn "$root/shared" "$tmp/shared"
  chown -R root:root "$tmp"
  chmod -R u=rwX,go=rX "$tmp"
  touch "$tmp/.dropstack-complete"
  rm -rf "$release"
  mv -T "$tmp" "$release"
  CHANGED=1
fi
rm -rf "$V_UPLOAD_DIR"
if [ -n "$V_CLIENT_UPLOAD_DIR" ]; then rm -rf "$V_CLIENT_UPLOAD_DIR"; fi

# 2. What lives outside releases: the environment (secrets: 0600, app-owned), gunicorn's config,
#    and the settings dropstack-switch (and dropstack-rollback) read.
write_file "$root/shared/env.json" 600 "$app:$app" "$V_ENV_JSON"
config_changed=$WROTE
write_file "$root/shared/gunicorn.conf.py" 644 root:root "$V_GUNICORN_CONF"
config_changed=$((config_changed | WROTE))
write_file "$state/supervisor-slot.conf" 644 root:root "$V_SUPERVISOR_SLOT"
config_changed=$((config_changed | WROTE))
# One file of name=value lines (each value validated above: one line, no '='-sensitive parsing needed);
# the release command is a script of its own.
write_file "$state/settings" 644 root:root "health_path=$V_HEALTH_PATH
health_host=$V_HEALTH_HOST
health_status=$V_HEALTH_STATUS
health_timeout=$V_HEALTH_TIMEOUT
health_attempts=$V_HEALTH_ATTEMPTS
keep_releases=$V_KEEP_RELEASES
container_memory_mb=$V_CONTAINER_MEMORY
"
write_file "$state/release_command" 644 root:root "$V_RELEASE_COMMAND"
# (releases before one settings file kept each setting in a file of its own)
for old in health_path health_host health_status health_timeout health_attempts keep_releases; do
  if [ -e "$state/$old" ]; then rm -f "$state/$old"; CHANGED=1; fi
done

# 3. Boot, check, switch (or refuse). A changed environment or config re-boots the same release.
#    Behind a load balancer (STAGE 1) the release is only booted and checked here: the roll
#    switches each droplet in turn (remote/roll.sh); one droplet runs the release command.
V_STAGE=${V_STAGE:-0}
V_RUN_RELEASE_COMMAND=${V_RUN_RELEASE_COMMAND:-1}
[[ $V_STAGE =~ ^[01]$ && $V_RUN_RELEASE_COMMAND =~ ^[01]$ ]] || die "STAGE and RUN_RELEASE_COMMAND must be 0 or 1"
args=("$id" --by "$V_TRIGGERED_BY" --lock-held)
[ "$V_RUN_RELEASE_COMMAND" = 1 ] && args+=(--release-command)
[ "$V_STAGE" = 1 ] && args+=(--stage)
[ "$config_changed" = 1 ] && args+=(--force)
# A repair (dropstack-check found a file of this step or the switch changed by hand): the live
# release boots again through the health gate with what dropstack wrote.
[ -n "${V_REPAIR:-}" ] && args+=(--repair)
if ! result=$(/usr/local/sbin/dropstack-switch "${args[@]}"); then
  rm -f "$lock.holder"
  exit 1
fi
rm -f "$lock.holder"
case "$result" in
  *changed=yes*) CHANGED=1 ;;
esac
echo "release=$id"
# (staged: the line names the slot and the time, so that the roll runs after every new stage)
if [ "$V_STAGE" = 1 ]; then grep -o 'staged=.*' <<<"$result" || true; fi
finish
