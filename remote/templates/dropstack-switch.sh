#!/usr/bin/env bash
# Installed by dropstack as /usr/local/sbin/dropstack-switch (and dropstack-rollback).
#
# Puts a built release live without dropping a request: the release boots in the idle slot
# (blue or green: a second gunicorn under supervisor, or with runtime docker a second container of
# the release's image, on its own unix socket) beside the live one,
# must pass the health check through its own socket, then one symlink, live -> slots/<slot> (the
# slot's socket and its release, the built client included), is swapped atomically: nginx follows
# it for every new upstream connection and every file, so the app and its client switch together
# (no nginx reload, so no keep-alive connection is closed). The old slot is stopped gracefully
# (in-flight requests finish). On any failure the new slot is stopped and the live release keeps
# serving.
#
#   dropstack-switch <release-id> [--by WHO] [--release-command] [--force] [--repair] [--lock-held]
#   dropstack-switch <release-id> --stage ...    (boot and health-check the idle slot, switch nothing)
#   dropstack-switch <release-id> --commit ...   (switch to the release staged in the idle slot)
#   dropstack-rollback [<release-id>] [--by WHO]    (default: the previous release)
#   dropstack-switch --status
#   dropstack-switch --link-live   (servers from before the live link: derive it from current.sock)
set -euo pipefail
umask 022

me=${0##*/}
log() { printf '[%s] %s\n' "$me" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# @deploy-lock@ (remote/deploy-lock.sh is rendered in here: take_deploy_lock)

conf=/etc/dropstack/app
[ -r "$conf" ] || die "$conf is missing: was this server provisioned by dropstack?"
app=$(<"$conf")
[[ $app =~ ^[a-z][a-z0-9-]{0,30}$ ]] || die "bad app name in $conf"
root=/srv/$app
state=$root/shared/.dropstack
releases=$root/releases
rundir=/run/dropstack-$app
lock=$root/.deploy.lock

# setting NAME: the value of NAME in the settings file the release step writes (name=value lines).
setting() {
  local key value
  if [ -r "$state/settings" ]; then
    while IFS='=' read -r key value; do
      if [ "$key" = "$1" ]; then printf '%s' "$value"; return 0; fi
    done <"$state/settings"
  fi
  die "setting $1 is missing in $state/settings (run a release first)"
}

# The live slot: where the live link points (servers from before it: the socket current.sock names).
active_slot() {
  local target
  target=$(readlink "$root/live" 2>/dev/null || readlink "$root/current.sock" 2>/dev/null || true)
  case "${target##*/}" in
    blue|blue.sock) echo blue ;;
    green|green.sock) echo green ;;
    *) echo "" ;;
  esac
}

# replace_link TARGET LINK: points LINK at TARGET in one rename (a reader sees the old or the new).
replace_link() {
  ln -sfn "$1" "$2.tmp"
  mv -Tf "$2.tmp" "$2"
}

# point_slot SLOT RELEASE-ID SOCKET: slots/SLOT holds the slot's socket and its release. Only ever
# done to a slot that is not live.
point_slot() {
  install -d -m 755 -o root -g root "$root/slots" "$root/slots/$1"
  replace_link "$3" "$root/slots/$1/app.sock"
  replace_link "$releases/$2" "$root/slots/$1/release"
}

# The release a symlink points at ("" when there is none; never fails under set -e/pipefail).
release_of() { local target; target=$(readlink "$1" 2>/dev/null) || return 0; printf '%s\n' "${target##*/}"; }

# Release ids on this server, newest first.
list_releases() { find "$releases" -mindepth 1 -maxdepth 1 -type d ! -name '.*' -printf '%T@ %f\n' | sort -rn | cut -d' ' -f2-; }

# audit RESULT [FIELD=VALUE...]: one line per switch in the audit log.
audit() {
  local result=$1
  shift
  printf '%s action=%s release=%s by=%s result=%s%s\n' "$(date -u +%FT%TZ)" "$action" "$id" "$by" "$result" "${*:+ $*}" \
    >>"$root/shared/log/releases.log"
}

# Microseconds since the epoch (bash's EPOCHREALTIME; the locale's decimal point is ".").
now_us() { local t=$EPOCHREALTIME; echo "${t/./}"; }

# record_programs [SLOT-CONF...]: the live slot's supervisor program (none with runtime docker), and
# while a release is staged the staged slot's, are the only entries of supervisor's conf.d, recorded
# for dropstack-check in the manifest of the release step (which runs this switch; its repair re-runs
# it). On a repair, any other entry is set aside (never deleted).
record_programs() {
  local dir=/etc/supervisor/conf.d manifests=/var/lib/dropstack/manifest entry aside tmp conf kept
  if [ "$repair" = 1 ]; then
    aside=/var/lib/dropstack/set-aside/$(date -u +%Y%m%dT%H%M%SZ)$dir
    for entry in "$dir"/* "$dir"/.[!.]*; do
      [ -e "$entry" ] || [ -L "$entry" ] || continue
      kept=0
      for conf in "$@"; do if [ "$entry" = "$conf" ]; then kept=1; fi; done
      [ "$kept" = 1 ] && continue
      mkdir -p "$aside"
      mv "$entry" "$aside/"
      supervisorctl update >/dev/null
      log "set aside $entry (not written by dropstack) into $aside"
    done
  fi
  mkdir -p /var/lib/dropstack
  [ -d "$manifests" ] || mkdir -m 700 "$manifests"
  tmp=$(mktemp "$manifests/.dropstack-switch.XXXXXX")
  {
    printf 'step dropstack-release\nrepair -\n'
    for conf in "$@"; do printf 'file %s %s %s\n' "$(sha256sum <"$conf" | cut -d' ' -f1)" "$(stat -c '%a %U:%G' "$conf")" "$conf"; done
    printf 'dir %s\n' "$dir"
  } >"$tmp"
  chmod 600 "$tmp"
  mv -f "$tmp" "$manifests/dropstack-switch"
}

# ---- arguments
action=switch
id=
by=${SUDO_USER:-$(id -un)}
run_release_command=0
force=0
lock_held=0
repair=0
stage=0
commit=0
[ "$me" = dropstack-rollback ] && action=rollback
while [ $# -gt 0 ]; do
  case "$1" in
    --by) by=$2; shift 2 ;;
    --release-command) run_release_command=1; shift ;;
    --lock-held) lock_held=1; shift ;;
    --force) force=1; shift ;;
    # (a rolling release on several droplets: every droplet stages first, then each commits in turn)
    --stage) stage=1; shift ;;
    --commit) commit=1; shift ;;
    # (a repair also sets aside supervisor programs dropstack did not write: see record_programs)
    --repair) repair=1; force=1; shift ;;
    --link-live)
      # A server whose releases predate the live link: the site nginx reads from now on needs it.
      slot=$(active_slot)
      current=$(release_of "$root/current")
      if [ ! -L "$root/live" ] && [ -n "$slot" ] && [ -n "$current" ]; then
        point_slot "$slot" "$current" "$rundir/$slot.sock"
        replace_link "$root/slots/$slot" "$root/live"
        log "linked $root/live to slot $slot (release $current)"
        echo "changed=yes"
      fi
      exit 0 ;;
    --status)
      printf 'app=%s live=%s slot=%s previous=%s\n' "$app" "$(release_of "$root/current")" "$(active_slot)" "$(release_of "$root/previous")"
      list_releases
      exit 0 ;;
    -*) die "unknown option $1" ;;
    *) id=$1; shift ;;
  esac
done
if [ -z "$id" ]; then
  [ "$action" = rollback ] || die "usage: $me <release-id>"
  id=$(release_of "$root/previous")
  [ -n "$id" ] || die "no previous release to roll back to"
fi
[[ $id =~ ^[A-Za-z0-9._-]{1,80}$ ]] || die "bad release id: $id"
release=$releases/$id
[ -f "$release/.dropstack-complete" ] || die "release $id is not on this server (kept: $(list_releases | tr '\n' ' '))"

# ---- one release at a time; a waiting one names the holder
if [ "$lock_held" = 0 ]; then
  take_deploy_lock "$lock" "$action $by"
  trap 'rm -f "$lock.holder"' EXIT
fi

live_slot=$(active_slot)
live_release=$(release_of "$root/current")
# A release built for runtime docker names its image (.image); one without runs under supervisor.
# So a rollback may cross a change of runtime.
runtime=python
image=
if [ -f "$release/.image" ]; then
  runtime=docker
  image=$(<"$release/.image")
  docker image inspect "$image" >/dev/null 2>&1 || die "the image of release $id ($image) is no longer on this server"
  # (written by the release step of every runtime docker release)
  container_memory_mb=$(setting container_memory_mb)
fi
container() { echo "dropstack-$app-$1"; }
# slot_running SLOT: true when the slot's gunicorn (supervisor) or container runs.
slot_running() {
  if [ "$runtime" = docker ]; then
    [ "$(docker inspect -f '{{.State.Status}}' "$(container "$1")" 2>/dev/null)" = running ]
  else
    supervisorctl status "$app-$1" 2>/dev/null | grep -q RUNNING
  fi
}
# (a commit of a release staged again while live, e.g. with a changed environment, switches to it)
idle_slot=blue
[ "$live_slot" = blue ] && idle_slot=green
[ "$commit" = 1 ] && [ "$(cat "$state/staged" 2>/dev/null)" = "$id $idle_slot" ] && force=1
if [ "$force" = 0 ] && [ "$live_release" = "$id" ] && [ -n "$live_slot" ] && slot_running "$live_slot"; then
  log "release $id is already live (slot $live_slot)"
  if [ ! -e /var/lib/dropstack/manifest/dropstack-switch ]; then
    if [ "$runtime" = docker ]; then record_programs; else record_programs "/etc/supervisor/conf.d/dropstack-$app-$live_slot.conf"; fi
  fi
  echo "live=$id slot=$live_slot changed=no"
  exit 0
fi
new_slot=$idle_slot
socket=$rundir/$new_slot.sock
[ "$runtime" = python ] || socket=$rundir/$new_slot/app.sock
slot_conf=/etc/supervisor/conf.d/dropstack-$app-$new_slot.conf
slot_log=$root/shared/log/$new_slot.log
# A commit finds the release it staged still running in the idle slot and switches to it after
# the health check; when it is not (the droplet rebooted, a switch ran by hand) it boots it again.
reuse=0
if [ "$commit" = 1 ]; then
  if [ "$(cat "$state/staged" 2>/dev/null)" = "$id $new_slot" ] && slot_running "$new_slot"; then
    reuse=1
  else
    log "release $id is not running staged in slot $new_slot: booting it there again"
  fi
fi
[ "$reuse" = 1 ] || rm -f "$state/staged"

health_path=$(setting health_path)
health_host=$(setting health_host)
health_status=$(setting health_status)
health_timeout=$(setting health_timeout)
health_attempts=$(setting health_attempts)

# stop_slot SLOT: stops what runs in the slot, a supervisor program or a container (after a change of
# runtime the old slot runs the other kind), each gracefully: in-flight requests finish.
stop_slot() {
  if [ -e "/etc/supervisor/conf.d/dropstack-$app-$1.conf" ]; then
    rm -f "/etc/supervisor/conf.d/dropstack-$app-$1.conf"
    supervisorctl update >/dev/null
  fi
  if command -v docker >/dev/null && docker inspect "$(container "$1")" >/dev/null 2>&1; then
    docker stop -t 30 "$(container "$1")" >/dev/null 2>&1 || true
    docker rm -f "$(container "$1")" >/dev/null 2>&1 || true
  fi
}

# The first Python traceback in a log, from its "Traceback" line through the exception line: the
# cause, which gunicorn's own shutdown messages and the other workers' tracebacks push far up.
first_traceback() {
  awk '
    !open && /^Traceback / { open = 1 }
    open { print }
    open && !/^Traceback / && !/^[[:space:]]/ && !/^$/ && !/^(During handling|The above exception)/ { exit }
  ' "$1" 2>/dev/null | head -n 200 || true
}

fail() {
  local cause
  if [ "$runtime" = docker ]; then docker logs --tail 200 "$(container "$new_slot")" >"$slot_log" 2>&1 || true; fi
  stop_slot "$new_slot"
  rm -f "$state/staged"
  audit failed
  cause=$(first_traceback "$slot_log")
  die "$1
release $id was NOT switched live; ${live_release:-nothing} keeps serving.${cause:+
First traceback in $slot_log:
$cause}
Last lines of $slot_log:
$(tail -n 40 "$slot_log" 2>/dev/null || true)"
}

# ---- release command (e.g. migrations), in the new release with the app's environment
# docker_flags SLOT: how every container of the app runs: as the app's user, on the host's network
# (its firewall applies; nothing is published), no capabilities, no new privileges, a read-only root
# with a private /tmp, the memory limit, logs to journald; the environment is a read-only file that
# the loader reads (never an -e value, never in `docker inspect`).
docker_flags() {
  flags=(--user "$(id -u "$app"):$(id -g "$app")" --network host --cap-drop ALL --security-opt no-new-privileges
    --read-only --tmpfs "/tmp:rw,nosuid,nodev,size=64m" --memory "${container_memory_mb}m" --memory-swap "${container_memory_mb}m"
    --log-driver journald --log-opt "tag=$(container "$1")"
    -v "$root/shared/env.json:/run/dropstack/env.json:ro" -v /usr/local/lib/dropstack/env-exec:/run/dropstack/env-exec:ro
    -v "$root/shared/data:/run/dropstack/data"
    -e HOME=/tmp -e LANG=C.UTF-8 -e PYTHONUNBUFFERED=1 -e "DROPSTACK_RELEASE=$id" -e "DROPSTACK_SLOT=$1" -e DROPSTACK_DATA_DIR=/run/dropstack/data
    --entrypoint python3)
  if [ -d /var/run/postgresql ]; then flags+=(-v /var/run/postgresql:/var/run/postgresql); fi
}

if [ "$reuse" = 1 ]; then
  : # (staged: its release command ran then, on the droplet that runs it)
elif [ "$run_release_command" = 1 ] && [ -s "$state/release_command" ] && [ "$runtime" = docker ]; then
  log "running the release command in $id (image $image)"
  docker_flags "$new_slot"
  if ! output=$(docker run --rm --name "$(container "$new_slot")-release-command" "${flags[@]}" \
      -v "$state/release_command:/run/dropstack/release-command:ro" \
      "$image" /run/dropstack/env-exec '["sh", "/run/dropstack/release-command"]' 2>&1); then
    audit failed
    die "the release command failed in release $id:
$output
release $id was NOT switched live; ${live_release:-nothing} keeps serving."
  fi
elif [ "$run_release_command" = 1 ] && [ -s "$state/release_command" ]; then
  log "running the release command in $id"
  if ! output=$(cd "$release" && runuser -u "$app" -- env PATH="$release/.venv/bin:/usr/local/bin:/usr/bin:/bin" \
      "$release/.venv/bin/python" -c 'import json, os, sys
env = dict(os.environ)
env.update(json.load(open(sys.argv[1], encoding="utf-8")))
os.execvpe("/bin/sh", ["sh", "-c", open(sys.argv[2], encoding="utf-8").read()], env)' \
      "$root/shared/env.json" "$state/release_command" 2>&1); then
    audit failed
    die "the release command failed in release $id:
$output
release $id was NOT switched live; ${live_release:-nothing} keeps serving."
  fi
fi

# ---- boot the new slot beside the live one
boot_started=$(now_us)
if [ "$reuse" = 0 ]; then
  : >"$slot_log.tmp" && chown "$app:$app" "$slot_log.tmp" && mv -f "$slot_log.tmp" "$slot_log"
  rm -f "$socket"
  point_slot "$new_slot" "$id" "$socket"
fi
if [ "$reuse" = 1 ]; then
  log "release $id is staged in slot $new_slot"
elif [ "$runtime" = docker ]; then
  # The image's own command (entrypoint + cmd) runs through the environment loader. Restarted by
  # Docker when it exits (and after a reboot), stopped only by a switch.
  # (one JSON document per line: JSON has no raw newline inside a string)
  command_json=$(docker image inspect --format '{{json .Config.Entrypoint}}{{"\n"}}{{json .Config.Cmd}}' "$image" \
    | python3 -c 'import json, sys; e, c = sys.stdin.read().split("\n")[:2]; print(json.dumps((json.loads(e) or []) + (json.loads(c) or [])))')
  [ "$command_json" != "[]" ] || fail "image $image has no CMD or ENTRYPOINT: the Dockerfile must say how the app starts"
  install -d -m 770 -o "$app" -g "$app" "$rundir/$new_slot"
  docker rm -f "$(container "$new_slot")" >/dev/null 2>&1 || true
  docker_flags "$new_slot"
  docker run -d --name "$(container "$new_slot")" --restart unless-stopped --stop-timeout 30 "${flags[@]}" \
    -v "$rundir/$new_slot:/run/dropstack/socket" "$image" /run/dropstack/env-exec "$command_json" >/dev/null \
    || fail "docker could not start a container of image $image"
else
  sed -e "s#@SLOT@#$new_slot#g" -e "s#@RELEASE@#$id#g" "$state/supervisor-slot.conf" >"$slot_conf.tmp"
  mv -f "$slot_conf.tmp" "$slot_conf"
  supervisorctl update >/dev/null
  supervisorctl start "$app-$new_slot" >/dev/null 2>&1 || true
fi

# Sets `died` to why the new slot's gunicorn is gone ("" while it runs). Until it has a pid,
# supervisor's status says whether it exited (BACKOFF, EXITED, FATAL); from then on `kill -0` on
# that pid notices its exit without a supervisorctl round trip (seconds each under emulation). Runs
# in this shell (not $(...)): it keeps the pid it saw.
first_pid=
died=
check_slot() {
  local line state
  died=
  if [ "$runtime" = docker ]; then
    state=$(docker inspect -f '{{.State.Status}} {{.State.ExitCode}} {{.RestartCount}}' "$(container "$new_slot")" 2>/dev/null || echo "gone")
    case "$state" in
      running\ *\ 0) ;;
      *) died="its container is ${state%% *} (exit code and restarts: ${state#* })" ;;
    esac
    return 0
  fi
  if [ -n "$first_pid" ]; then
    kill -0 "$first_pid" 2>/dev/null || died="its master process (pid $first_pid) exited"
    return 0
  fi
  line=$(supervisorctl status "$app-$new_slot" 2>/dev/null || true)
  state=$(awk '{print $2}' <<<"$line")
  case "$state" in
    BACKOFF|EXITED|FATAL) died="supervisor: $state"; return 0 ;;
  esac
  first_pid=$(sed -n 's/.* pid \([0-9][0-9]*\),.*/\1/p' <<<"$line")
}

code=
started=$SECONDS
for attempt in $(seq 1 "$health_attempts"); do
  check_slot
  if [ -n "$died" ]; then
    fail "the new slot's $([ "$runtime" = docker ] && echo container || echo gunicorn) exited $((SECONDS - started)) s after it started, before it passed the health check ($((attempt - 1)) of $health_attempts checks made; $died): it crashed at start, e.g. an import error"
  fi
  check_started=$(now_us)
  code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time "$health_timeout" --unix-socket "$socket" \
    -H "Host: $health_host" -H 'X-Forwarded-Proto: https' "http://localhost$health_path" 2>/dev/null || true)
  [ "$code" = "$health_status" ] && break
  log "health check $attempt/$health_attempts on slot $new_slot: $health_path answered ${code:-nothing} (want $health_status)"
  sleep 1
done
[ "$code" = "$health_status" ] || fail "health check failed: GET $health_path through $socket answered ${code:-nothing} $health_attempts times (want $health_status)"
healthy=$(now_us)
boot_ms=$(((healthy - boot_started) / 1000))
check_ms=$(((healthy - check_started) / 1000))
log "slot $new_slot booted and passed its health check in ${boot_ms} ms (the passing check took ${check_ms} ms)"

# ---- staged: the slot keeps running beside the live one until a commit switches to it
if [ "$stage" = 1 ]; then
  printf '%s %s\n' "$id" "$new_slot" >"$state/staged"
  # dropstack-check expects the staged program beside the live one until the commit
  if [ "$runtime" = python ]; then
    if [ -n "$live_slot" ] && [ -e "/etc/supervisor/conf.d/dropstack-$app-$live_slot.conf" ]; then
      record_programs "/etc/supervisor/conf.d/dropstack-$app-$live_slot.conf" "$slot_conf"
    else
      record_programs "$slot_conf"
    fi
  fi
  audit staged "boot_ms=$boot_ms"
  echo "staged=$id slot=$new_slot at=$(now_us) changed=yes"
  exit 0
fi

# ---- switch: one rename, and nginx's next connection and next file come from the new slot
replace_link "$root/slots/$new_slot" "$root/live"
# what people and tools read: the live socket and release, and the one before
replace_link "$socket" "$root/current.sock"
replace_link "$release" "$root/current"
if [ -n "$live_release" ] && [ "$live_release" != "$id" ]; then
  replace_link "$releases/$live_release" "$root/previous"
fi
rm -f "$state/staged"
log "release $id is live on slot $new_slot"

# ---- drain and stop the old slot (gunicorn finishes in-flight requests on TERM)
if [ -n "$live_slot" ]; then
  stop_slot "$live_slot"
fi
if [ "$runtime" = docker ]; then record_programs; else record_programs "$slot_conf"; fi
audit ok "boot_ms=$boot_ms" "check_ms=$check_ms"

# ---- keep `keep_releases` releases: the live one, the previous one, then the newest others
keep=$(setting keep_releases)
previous=$(release_of "$root/previous")
others=$((keep - 2))
[ "$others" -ge 0 ] || others=0
while read -r r; do
  [ -n "$r" ] || continue
  if [ "$r" = "$id" ] || [ "$r" = "$previous" ]; then continue; fi
  if [ "$others" -gt 0 ]; then others=$((others - 1)); continue; fi
  # (its image goes with it, unless a kept release runs the same one)
  if [ -f "$releases/$r/.image" ]; then
    old_image=$(<"$releases/$r/.image")
    if [ "$(grep -lxF -- "$old_image" "$releases"/*/.image 2>/dev/null | wc -l)" -le 1 ]; then
      if docker image rm "$old_image" >/dev/null 2>&1; then log "removed the image of release $r ($old_image)"; fi
    fi
  fi
  rm -rf "${releases:?}/$r"
  log "removed old release $r"
done < <(list_releases)
# ---- virtualenvs (venvs/<requirements hash>) that no kept release links to
if [ -d "$root/venvs" ]; then
  used=$(find "$releases" -mindepth 2 -maxdepth 2 -name .venv -type l -exec readlink {} \;)
  for venv in "$root/venvs"/*; do
    [ -d "$venv" ] || continue
    if ! grep -qxF -- "$venv" <<<"$used"; then
      rm -rf "$venv"
      log "removed unused virtualenv ${venv##*/}"
    fi
  done
fi
echo "live=$id slot=$new_slot changed=yes"
