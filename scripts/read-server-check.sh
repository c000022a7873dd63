#!/usr/bin/env bash
# Runs where `pulumi` runs, at every preview and up (the program's command.local.run): reads the
# droplet's dropstack-check report over SSH, as the deploy user with the generated key and the
# pinned host key. The values come in the environment (CHECK_HOST, CHECK_USER, CHECK_HOST_KEY,
# CHECK_KEY: the private key, written only to a private temporary file), never on a command line.
# Prints the report's porcelain lines and "status <exit code>", or "status none" on a server
# without the check yet, or "unreachable <ssh's error>": it never fails, the program decides.
set -euo pipefail
# shellcheck source=scripts/lib-ssh.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib-ssh.sh"
ssh_setup
ssh_key "$CHECK_KEY"
ssh_pin "$CHECK_HOST" 22 "$CHECK_HOST_KEY"
# shellcheck disable=SC2016 # the remote command is fixed text, expanded on the server
remote='if [ -x /usr/local/sbin/dropstack-check ]; then rc=0; sudo -n /usr/local/sbin/dropstack-check --porcelain || rc=$?; echo "status $rc"; else echo "status none"; fi'
if out=$(ssh_run "$CHECK_HOST" 22 "$CHECK_USER" "$remote" 2>"$SSH_DIR/err"); then
  printf '%s\n' "$out"
else
  printf 'unreachable %s\n' "$(tr -s '\r\n' '  ' <"$SSH_DIR/err" | cut -c1-300)"
fi
