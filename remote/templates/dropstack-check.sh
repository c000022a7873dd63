#!/usr/bin/env bash
# Installed by dropstack as /usr/local/sbin/dropstack-check.
#
# Does this server still hold what dropstack wrote? Every step records the files, links and
# directories it owns in /var/lib/dropstack/manifest/<step> (each file with its checksum, mode and
# owner); this compares the server with those records and lists every file that was changed,
# removed, or added by hand where dropstack owns the whole directory.
#
#   dropstack-check               a report for people; exit 0 when clean, 1 on drift
#   dropstack-check --porcelain   lines for the program (see below); exit 0 when clean, 1 on drift
#
# Porcelain lines:
#   repair <step> <token>              the repair token the step last ran with ("-": none)
#   drift <step> <what> <path>         what: changed, mode, missing, new
# `pulumi up` re-runs each step with drift, and the step writes its files again.
set -euo pipefail
export LC_ALL=C

manifests=${DROPSTACK_STATE_DIR:-/var/lib/dropstack}/manifest # (a test may point it elsewhere; sudo clears it)
porcelain=0
case "${1:-}" in
  --porcelain) porcelain=1 ;;
  "") ;;
  *) echo "usage: dropstack-check [--porcelain]" >&2; exit 2 ;;
esac
[ "$(id -u)" = 0 ] || { echo "dropstack-check: run it as root (sudo dropstack-check): it reads files only root may read" >&2; exit 2; }

drift=()
files=0
# owned PATH: true when some manifest lists PATH as a file or a link.
owned() {
  cat "$manifests"/* | awk -v p="$1" '($1 == "file" && $5 == p) || ($1 == "link" && $3 == p) { found = 1 } END { exit !found }'
}

shopt -s nullglob
for manifest in "$manifests"/*; do
  step=
  while read -r kind a b c d; do
    case "$kind" in
      step) step=$a ;;
      repair)
        if [ "$porcelain" = 1 ] && [ "${manifest##*/}" = "$step" ]; then echo "repair $step $a"; fi ;;
      file)
        files=$((files + 1))
        if [ ! -f "$d" ] || [ -L "$d" ]; then
          drift+=("$step missing $d")
        elif [ "$(sha256sum <"$d" | cut -d' ' -f1)" != "$a" ]; then
          drift+=("$step changed $d")
        elif [ "$(stat -c '%a %U:%G' "$d")" != "$b $c" ]; then
          drift+=("$step mode $d")
        fi ;;
      link)
        files=$((files + 1))
        if [ ! -L "$b" ]; then
          drift+=("$step missing $b")
        elif [ "$(readlink "$b")" != "$a" ]; then
          drift+=("$step changed $b")
        fi ;;
      dir)
        for entry in "$a"/* "$a"/.[!.]*; do
          owned "$entry" || drift+=("$step new $entry")
        done ;;
    esac
  done <"$manifest"
done

if [ "$porcelain" = 1 ]; then
  for d in "${drift[@]}"; do echo "drift $d"; done
else
  if [ "$files" = 0 ]; then
    echo "dropstack-check: no step has recorded its files here yet (a server provisioned before dropstack-check: the next pulumi up records them)"
  fi
  for d in "${drift[@]}"; do
    read -r step what path <<<"$d"
    case "$what" in
      changed) why="differs from what the ${step#dropstack-} step wrote" ;;
      mode) why="has another mode or owner than the ${step#dropstack-} step gave it" ;;
      missing) why="was written by the ${step#dropstack-} step and is gone" ;;
      new) why="is not dropstack's, in a directory the ${step#dropstack-} step owns" ;;
    esac
    printf '%-8s %s %s\n' "$what" "$path" "$why"
  done
  if [ "${#drift[@]}" = 0 ]; then
    [ "$files" = 0 ] || echo "dropstack-check: all $files files are as dropstack wrote them"
  else
    echo "dropstack-check: ${#drift[@]} of dropstack's files differ from what it wrote; pulumi up writes them again (new ones are set aside under /var/lib/dropstack/set-aside)"
  fi
fi
[ "${#drift[@]}" = 0 ]
