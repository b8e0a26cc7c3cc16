#!/usr/bin/env bash
# Sets up everything lambda-os needs on one Debian machine, as root, and is safe to run again:
# Debian packages (RabbitMQ, Docker Engine, mmdebstrap), the services started, a virtualenv in
# .venv with the project installed, FerretDB built into it, and the runtime images built
# locally (no registry needed).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
log_dir=/var/log/lambda-os
mkdir -p "$log_dir"

say() { printf '==> %s\n' "$*"; }

need_packages=()
# apparmor: docker.io only recommends it, but on an AppArmor kernel containers need its parser.
for pkg in rabbitmq-server docker.io apparmor mmdebstrap python3 python3-venv curl ca-certificates; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_packages+=("$pkg")
done
if ((${#need_packages[@]})); then
  say "installing Debian packages: ${need_packages[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_packages[@]}"
fi

if ! rabbitmqctl -q status >/dev/null 2>&1; then
  say "starting RabbitMQ"
  rabbitmq-server -detached
  # The Erlang node takes a moment to answer at all; await_startup fails until it does.
  for _ in $(seq 1 60); do rabbitmqctl -q status >/dev/null 2>&1 && break; sleep 1; done
fi
# await_startup returns once the broker accepts connections.
timeout 120 rabbitmqctl -q await_startup
# The management plugin serves the HTTP publish command the README shows (port 15672).
rabbitmq-plugins -q is_enabled rabbitmq_management >/dev/null 2>&1 \
  || rabbitmq-plugins -q enable rabbitmq_management >/dev/null

docker_ping() { curl -fsS --unix-socket /var/run/docker.sock http://localhost/_ping >/dev/null 2>&1; }
if ! docker_ping; then
  say "starting dockerd (log in $log_dir/dockerd.log)"
  # Its own session: it outlives this script and ignores the terminal's signals.
  setsid nohup dockerd >"$log_dir/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 1 60); do docker_ping && break; sleep 1; done
  docker_ping || { echo "dockerd did not start; see $log_dir/dockerd.log" >&2; exit 1; }
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
say "installing lambda-os into .venv"
.venv/bin/pip install -q --disable-pip-version-check -e '.[test,bench]'

# The MongoDB-wire server of the test suites and of the default standalone catalogue:
# FerretDB built from the Go module proxy (deploy/ferretdb pins the version); Go's build
# cache makes this a few seconds after the first time.
ferretdb=.venv/bin/lambda-os-ferretdb
# Rebuilt when the sources' digest changes: a changed, added or removed file all count.
sources=$(cd deploy/ferretdb && find . -type f | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -d' ' -f1)
if [ ! -x "$ferretdb" ] || [ "$(cat "$ferretdb.sources" 2>/dev/null)" != "$sources" ]; then
  go_bin=$(command -v go || echo /usr/local/go/bin/go)
  [ -x "$go_bin" ] || { echo "Go 1.24 or newer is needed to build FerretDB (deploy/ferretdb)" >&2; exit 1; }
  # Debian bookworm's golang is 1.19, which cannot read the module's go directive.
  go_version=$("$go_bin" env GOVERSION | sed 's/^go//')
  if [ "$(printf '%s\n' 1.24 "$go_version" | sort -V | head -n1)" != 1.24 ]; then
    echo "Go 1.24 or newer is needed to build FerretDB (deploy/ferretdb); $go_bin is $go_version" >&2
    exit 1
  fi
  say "building FerretDB (first time: a few minutes)"
  (cd deploy/ferretdb && "$go_bin" build -o "$repo/$ferretdb" .)
  echo "$sources" >"$ferretdb.sources"
fi

say "building runtime images (first time: a Debian root filesystem, about a minute)"
PATH="$repo/.venv/bin:$PATH" deploy/build-runtime-images

say "ready: RabbitMQ, Docker Engine, FerretDB and the runtime images are up"
