#!/usr/bin/env bash
# Docker Engine for runtime docker, from Debian's packages. Its daemon never touches the firewall
# (iptables off, no bridge network: containers share the host's network and its nftables rules, so
# nothing a container listens on bypasses the host firewall), logs go to journald, and no container
# gains privileges. The deploy user may reach the daemon (the program builds the image through it
# over SSH; the deploy user already has sudo, so this adds no power). The environment loader every
# container command runs through is installed here.
set -euo pipefail

require V_DEPLOY_USER V_DAEMON_JSON V_ENV_EXEC
[[ $V_DEPLOY_USER =~ ^[a-z_][a-z0-9_-]{0,31}$ ]] || die "bad deploy user"

# The daemon's settings come first: the package starts the daemon when it is installed.
ensure_dir /etc/docker 755 root:root
write_file /etc/docker/daemon.json 644 root:root "$V_DAEMON_JSON"
daemon_changed=$WROTE
ensure_packages docker.io
ensure_dir /usr/local/lib/dropstack 755 root:root
write_file /usr/local/lib/dropstack/env-exec 755 root:root "$V_ENV_EXEC"
if ! id -nG "$V_DEPLOY_USER" | tr ' ' '\n' | grep -qx docker; then
  usermod -a -G docker "$V_DEPLOY_USER"
  CHANGED=1
  log "the deploy user may reach the Docker daemon"
fi
if ! systemctl is-enabled --quiet docker; then
  systemctl enable --quiet docker
  CHANGED=1
fi
if ! systemctl is-active --quiet docker; then
  systemctl start docker
  CHANGED=1
elif [ "$daemon_changed" = 1 ]; then
  # (a changed daemon.json restarts the daemon; the app's container comes back by its restart policy)
  systemctl restart docker
fi
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && break
  sleep 1
done
docker info --format '{{.ServerVersion}}' >/dev/null || die "the Docker daemon does not answer"
finish
