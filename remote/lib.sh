#!/usr/bin/env bash
# shellcheck shell=bash
# dropstack's remote prelude: every step is this file followed by the step's own script, run as
#   sudo -n bash -c '<lib.sh + step.sh>' dropstack-<step>
# with the step's settings on stdin: for each, a line "NAME <length in bytes>", the value's bytes,
# a newline (see components/shell.ts).
set -euo pipefail
umask 022
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8

STEP=${0##*/}
CHANGED=0
# What this step owns on the server, for dropstack-check: one line per file, link or directory
# (see write_file, ensure_link, own_dir and finish).
OWNED=()
STATE_DIR=${DROPSTACK_STATE_DIR:-/var/lib/dropstack} # (a test may point it elsewhere; sudo clears it)
MANIFESTS=$STATE_DIR/manifest

log() { printf '[%s] %s\n' "$STEP" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# read_values: reads the values on stdin into shell variables named V_NAME: a header line
# "NAME <length>", exactly that many bytes (LC_ALL=C: read -N counts bytes), then a newline.
# Names and lengths are checked before use, values are assigned with printf -v (never evaluated).
read_values() {
  local LC_ALL=C header key len value end
  while IFS= read -r header; do
    key=${header%% *}
    len=${header#"$key"}
    len=${len# }
    [[ $key =~ ^[A-Z][A-Z0-9_]*$ ]] || die "malformed value name on stdin: ${key:0:40}"
    [[ $len =~ ^[0-9]{1,9}$ ]] || die "malformed length of value $key on stdin"
    value=
    if [ "$len" -gt 0 ]; then
      IFS= read -r -d '' -N "$len" value || true
    fi
    IFS= read -r -d '' -N 1 end || true
    if [ "${#value}" != "$len" ] || [ "$end" != $'\n' ]; then
      die "value $key on stdin is not $len bytes followed by a newline"
    fi
    printf -v "V_$key" '%s' "$value"
  done
}

# require NAME...: fails unless each V_NAME was given.
require() {
  local name
  for name in "$@"; do
    [ -n "${!name+set}" ] || die "missing value ${name#V_} on stdin"
  done
}

# shellcheck disable=SC2034 # WROTE is read by the steps
# write_file DEST MODE OWNER:GROUP CONTENT: installs CONTENT at DEST atomically, only when the
# content, mode or owner differ. Sets WROTE=1 when it changed something, else WROTE=0.
write_file() {
  local dest=$1 mode=$2 owner=$3 content=$4 tmp
  WROTE=0
  OWNED+=("file $(printf '%s' "$content" | sha256sum | cut -d' ' -f1) $mode $owner $dest")
  if [ -f "$dest" ] && [ ! -L "$dest" ] && [ "$(stat -c '%a %U:%G' "$dest")" = "$mode $owner" ] \
    && printf '%s' "$content" | cmp -s - "$dest"; then
    return 0
  fi
  tmp=$(mktemp "$dest.dropstack.XXXXXX")
  printf '%s' "$content" >"$tmp"
  chmod "$mode" "$tmp"
  chown "$owner" "$tmp"
  mv -f "$tmp" "$dest"
  WROTE=1
  CHANGED=1
  log "updated $dest"
}

# shellcheck disable=SC2034 # SET_ASIDE is read by the steps
# own_dir DIR: dropstack owns every entry of DIR, so dropstack-check reports any other as new. On a
# repair (the program found drift and sent V_REPAIR) such entries are set aside now, into
# /var/lib/dropstack/set-aside/<time>/<path> (nothing is deleted); SET_ASIDE=1 when one was. Call it
# after the step has written its own entries of DIR.
own_dir() {
  local dir=$1 entry aside
  OWNED+=("dir $dir")
  SET_ASIDE=0
  [ -n "${V_REPAIR:-}" ] || return 0
  aside=$STATE_DIR/set-aside/$(date -u +%Y%m%dT%H%M%SZ)$dir
  for entry in "$dir"/* "$dir"/.[!.]*; do
    [ -e "$entry" ] || [ -L "$entry" ] || continue
    printf '%s\n' "${OWNED[@]}" | owns "$entry" && continue
    owned_elsewhere "$entry" && continue
    mkdir -p "$aside"
    mv "$entry" "$aside/"
    SET_ASIDE=1
    CHANGED=1
    log "set aside $entry (not written by dropstack) into $aside"
  done
}

# owns PATH: true when the manifest lines on stdin list PATH as a file or a link.
owns() {
  awk -v p="$1" '($1 == "file" && $5 == p) || ($1 == "link" && $3 == p) { found = 1 } END { exit !found }'
}

# owned_elsewhere PATH: true when another step's manifest lists PATH.
owned_elsewhere() {
  local f
  for f in "$MANIFESTS"/*; do
    if [ -f "$f" ] && [ "$f" != "$MANIFESTS/$STEP" ] && owns "$1" <"$f"; then return 0; fi
  done
  return 1
}

# ensure_dir PATH MODE OWNER:GROUP
ensure_dir() {
  local dir=$1 mode=$2 owner=$3
  if [ ! -d "$dir" ]; then
    mkdir -p "$dir"
    CHANGED=1
    log "created $dir"
  fi
  if [ "$(stat -c '%a %U:%G' "$dir")" != "$mode $owner" ]; then
    chmod "$mode" "$dir"
    chown "$owner" "$dir"
    CHANGED=1
  fi
}

# ensure_link TARGET LINK: points LINK at TARGET (atomically), only if it does not already.
ensure_link() {
  local target=$1 link=$2
  if [ "$(readlink "$link" 2>/dev/null || true)" != "$target" ]; then
    ln -sfn "$target" "$link.dropstack-tmp"
    mv -Tf "$link.dropstack-tmp" "$link"
    CHANGED=1
    log "linked $link -> $target"
  fi
  OWNED+=("link $target $link")
}

# ensure_packages PKG...: installs the packages that are missing, and nothing else.
ensure_packages() {
  local pkg missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ "${#missing[@]}" -gt 0 ] || return 0
  log "installing ${missing[*]}"
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  CHANGED=1
}

# record_manifest: what this step owns, with each file's checksum, mode and owner, and the repair
# token it ran with; dropstack-check compares the server with these. Not itself a change.
record_manifest() {
  local tmp
  [ "${#OWNED[@]}" -gt 0 ] || [ -n "${V_REPAIR:-}" ] || [ -e "$MANIFESTS/$STEP" ] || return 0
  mkdir -p "$STATE_DIR"
  [ -d "$MANIFESTS" ] || mkdir -m 700 "$MANIFESTS"
  tmp=$(mktemp "$MANIFESTS/.$STEP.XXXXXX")
  { printf 'step %s\nrepair %s\n' "$STEP" "${V_REPAIR:--}"; [ "${#OWNED[@]}" -eq 0 ] || printf '%s\n' "${OWNED[@]}"; } >"$tmp"
  chmod 600 "$tmp"
  mv -f "$tmp" "$MANIFESTS/$STEP"
}

# finish: records the manifest; the last line a step prints says whether it changed anything.
finish() {
  record_manifest
  if [ "$CHANGED" = 1 ]; then echo "dropstack: $STEP changed the server"; else echo "dropstack: $STEP: no changes"; fi
}

read_values
exec </dev/null
