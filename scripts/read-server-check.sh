#!/usr/bin/env bash
# Runs where `pulumi` runs, at every preview and up (the program's command.local.run): reads the
# droplet's dropstack-check report over SSH, as the deploy user with the generated key and the
# pinned host key. The values come in the environment (CHECK_HOST, CHECK_USER, CHECK_HOST_KEY,
# CHECK_KEY: the private key, written only to a private temporary file), never on a command line.
# Prints the report's porcelain lines and "status <exit code>", or "status none" on a server
# without the check yet, or "unreachable <ssh's error>": it never fails, the program decides.
set -euo pipefail
umask 077
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
printf '%s\n' "$CHECK_KEY" >"$dir/key"
printf '%s %s\n' "$CHECK_HOST" "$CHECK_HOST_KEY" >"$dir/known_hosts"
# shellcheck disable=SC2016 # the remote command is fixed text, expanded on the server
remote='if [ -x /usr/local/sbin/dropstack-check ]; then rc=0; sudo -n /usr/local/sbin/dropstack-check --porcelain || rc=$?; echo "status $rc"; else echo "status none"; fi'
if out=$(ssh -F /dev/null -i "$dir/key" -o IdentitiesOnly=yes -o BatchMode=yes \
  -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$dir/known_hosts" -o GlobalKnownHostsFile=/dev/null \
  -o ConnectTimeout=20 -o ConnectionAttempts=2 -o ServerAliveInterval=15 -o ServerAliveCountMax=4 -o LogLevel=ERROR \
  -- "$CHECK_USER@$CHECK_HOST" "$remote" 2>"$dir/err"); then
  printf '%s\n' "$out"
else
  printf 'unreachable %s\n' "$(tr -s '\r\n' '  ' <"$dir/err" | cut -c1-300)"
fi
