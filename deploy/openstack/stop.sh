#!/usr/bin/env bash
# Stops the test cloud that deploy/openstack/setup.sh started: each service by the process
# group it recorded, nothing else. With --wipe, also removes its state (databases, images, keys,
# secrets) and its RabbitMQ vhost and user, so the next setup.sh starts from nothing.
set -euo pipefail
OS_STATE=${LAMBDA_OS_OPENSTACK_STATE:-/var/lib/lambda-os/openstack}
run_dir=$OS_STATE/run
for pid_file in "$run_dir"/*.pid; do
  [ -e "$pid_file" ] || continue
  name=$(basename "$pid_file" .pid)
  [ "$name" = mariadbd ] && continue # mariadbd's own pid file; the group is "mariadb"
  pid=$(cat "$pid_file")
  started=$(awk '{print $22}' "/proc/$pid/stat" 2>/dev/null || true)
  # Only the process setup.sh started: after a reboot the pid may belong to another.
  if [ -n "$started" ] && [ "$started" = "$(cat "$run_dir/$name.started" 2>/dev/null)" ]; then
    echo "==> stopping $name ($pid)"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$pid_file" "$run_dir/$name.started"
done
if [ "${1:-}" = --wipe ]; then
  rabbitmqctl -q delete_vhost lambda-os-openstack 2>/dev/null || true
  rabbitmqctl -q delete_user lambda-os-openstack 2>/dev/null || true
  rm -rf "$OS_STATE"
  echo "==> wiped $OS_STATE"
fi
