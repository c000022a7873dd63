#!/usr/bin/env bash
# shellcheck shell=bash
# Included by the scripts that run where `pulumi` runs and reach droplets over SSH (the drift check,
# the rolling release): the deploy key only in a private temporary folder, each droplet's pinned
# host key the only one ssh accepts for it, and no ssh configuration of the machine's user.

# ssh_setup: a private folder (removed at exit) for the key and known_hosts; sets SSH_DIR.
ssh_setup() {
  umask 077
  SSH_DIR=$(mktemp -d)
  # shellcheck disable=SC2064 # the folder's name is fixed now
  trap "rm -rf '$SSH_DIR'" EXIT
  : >"$SSH_DIR/known_hosts"
}
# ssh_key KEY: the private key ssh uses (written, never on a command line).
ssh_key() { printf '%s\n' "$1" >"$SSH_DIR/key"; }
# ssh_pin HOST PORT HOSTKEY: HOSTKEY ("ssh-ed25519 AAAA...") is the only key accepted for HOST:PORT.
ssh_pin() {
  if [ "$2" = 22 ]; then printf '%s %s\n' "$1" "$3"; else printf '[%s]:%s %s\n' "$1" "$2" "$3"; fi >>"$SSH_DIR/known_hosts"
}
# ssh_run HOST PORT USER COMMAND: runs COMMAND (one word of shell text for the server) as USER;
# stdin, stdout and stderr are ssh's. ssh's exit code (255: it could not connect or log in).
ssh_run() {
  ssh -F /dev/null -i "$SSH_DIR/key" -o IdentitiesOnly=yes -o BatchMode=yes \
    -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$SSH_DIR/known_hosts" -o GlobalKnownHostsFile=/dev/null \
    -o ConnectTimeout=20 -o ConnectionAttempts=2 -o ServerAliveInterval=15 -o ServerAliveCountMax=4 -o LogLevel=ERROR \
    -p "$2" -- "$3@$1" "$4"
}
