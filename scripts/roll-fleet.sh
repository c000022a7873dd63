#!/usr/bin/env bash
# The rolling release of droplets > 1 (the program's local command "roll"), run where `pulumi`
# runs once every droplet has staged the release. One droplet after the other, it reaches each over
# SSH (the deploy user, the generated key, only that droplet's pinned host key) and runs its turn:
# remote/roll.sh, which drains it, switches it through the health gate and puts it back. When a
# turn fails, the roll stops and the droplets that switched go back to their previous release
# (remote/roll.sh with MODE back), the failed droplet first, so that the fleet serves one version
# again; a switch-back never drains the last droplet the load balancer still has in rotation.
# The deploy key comes on stdin (written only to a private temporary folder); the rest in the
# environment, never on a command line: ROLL_USER, ROLL_DROPLETS (one line per droplet, in turn
# order: address, SSH port, pinned host key), ROLL_STEP (a turn's remote command), ROLL_VALUES and
# ROLL_BACK_VALUES (its stdin for a turn and for a switch-back).
# Prints "turn=<n> seconds=<s>" for each turn that passed; exits 1 when the roll stopped.
set -euo pipefail

say() { printf '[dropstack-roll-fleet] %s\n' "$*" >&2; }
for v in ROLL_USER ROLL_DROPLETS ROLL_STEP ROLL_VALUES ROLL_BACK_VALUES; do
  [ -n "${!v:-}" ] || { say "error: $v is not set"; exit 2; }
done
ssh_setup
key=$(cat)
[ -n "$key" ] || { say "error: the deploy key was not on stdin"; exit 2; }
ssh_key "$key"
unset key
hosts=()
ports=()
while read -r host port hostkey; do
  [ -n "$host" ] || continue
  [[ $port =~ ^[0-9]{1,5}$ && -n $hostkey ]] || { say "error: ROLL_DROPLETS: want lines of 'address port host-key', got '$host $port ...'"; exit 2; }
  ssh_pin "$host" "$port" "$hostkey"
  hosts+=("$host")
  ports+=("$port")
done <<<"$ROLL_DROPLETS"
n=${#hosts[@]}
[ "$n" -gt 0 ] || { say "error: ROLL_DROPLETS names no droplet"; exit 2; }

# turn I VALUES: droplet I's turn (its log on stderr); the turn's exit code.
turn() { printf '%s' "$2" | ssh_run "${hosts[$1]}" "${ports[$1]}" "$ROLL_USER" "$ROLL_STEP"; }
name() { echo "droplet $(($1 + 1)) of $n (${hosts[$1]})"; }
names() { local i list=(); for i in "$@"; do list+=("$((i + 1))"); done; local IFS=,; echo "${list[*]}"; }

failed=
for ((i = 0; i < n; i++)); do
  say "$(name "$i"): its turn"
  started=$SECONDS
  if ! turn "$i" "$ROLL_VALUES"; then
    failed=$i
    break
  fi
  echo "turn=$((i + 1)) seconds=$((SECONDS - started))"
done
[ -n "$failed" ] || { say "every droplet switched"; exit 0; }

# ---- switch back: the failed droplet first (back in rotation on its previous release), then the
# ones that switched, the last first. A droplet that cannot come back counts as out of rotation.
say "$(name "$failed") failed its turn: switching back the droplets that switched"
out=0
back=()
stuck=()
if ! turn "$failed" "$ROLL_BACK_VALUES"; then
  out=1
  say "$(name "$failed") is not back in rotation"
fi
for ((j = failed - 1; j >= 0; j--)); do
  if [ $((n - 1 - out)) -lt 1 ]; then
    say "$(name "$j") keeps the new release: switching it back would take the last droplet in rotation out"
    stuck+=("$j")
  elif turn "$j" "$ROLL_BACK_VALUES"; then
    back+=("$j")
  else
    say "$(name "$j") could not switch back"
    stuck+=("$j")
    out=$((out + 1))
  fi
done
if [ "${#stuck[@]}" -eq 0 ]; then
  say "error: the roll stopped at $(name "$failed")${back[*]:+; droplet(s) $(names "${back[@]}") switched back}: every droplet serves its previous release. The reason is in the turn's log above; fix it and run up again."
else
  say "error: the roll stopped at $(name "$failed"); droplet(s) $(names "${stuck[@]}") still serve the new release${back[*]:+, droplet(s) $(names "${back[@]}") switched back}. The reasons are in the log above; fix them and run up again (or up the previous app)."
fi
exit 1
