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

# finish: the last line a step prints says whether it changed anything.
finish() {
  if [ "$CHANGED" = 1 ]; then echo "dropstack: $STEP changed the server"; else echo "dropstack: $STEP: no changes"; fi
}

read_values
exec </dev/null
