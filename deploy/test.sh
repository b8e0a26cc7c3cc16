#!/usr/bin/env bash
# Sets up what is missing (deploy/setup.sh, and the local test cloud of deploy/openstack/setup.sh),
# runs the test suite against the real RabbitMQ, Docker Engine and OpenStack, then starts
# `lambda-os standalone` on its own port and queue and runs the bundled harness
# (python -m testing_service) against it. Extra arguments go to pytest.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
"$repo/deploy/setup.sh"
# The console's browser test (tests/console) drives Debian's chromium through Debian's
# chromedriver: only the tests need them, so deploy/run.sh does not install them.
need_packages=()
for pkg in chromium chromium-driver fonts-dejavu-core; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_packages+=("$pkg")
done
if ((${#need_packages[@]})); then
  echo "==> installing Debian packages for the tests: ${need_packages[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_packages[@]}"
fi
# The Nova seam's tests (marker openstack) boot servers on it; quick when it is already up.
"$repo/deploy/openstack/setup.sh"

echo "==> pytest"
# pytest exits 5 when it ran no test: that is a failure here too, and set -e sees it.
.venv/bin/python -m pytest "$@"

echo "==> harness against a live standalone platform"
port=${HARNESS_PORT:-18080}
queue="lambda.events.harness-$$"
log=/var/log/lambda-os/standalone-harness.log
state_dir="/var/lib/lambda-os/harness-$$"
.venv/bin/lambda-os standalone --api-port "$port" --events-queue "$queue" \
  --dead-letter-queue "$queue.dead" --state-dir "$state_dir" >"$log" 2>&1 &
platform=$!
cleanup() {
  kill -TERM "$platform" 2>/dev/null || true
  wait "$platform" 2>/dev/null || true
  # The queues, delay queues and exchange were made for this run alone.
  .venv/bin/python - "$queue" <<'EOF' || true
import sys

import pika

from lambda_os.settings import Settings
from listener.topology import Topology, delete

connection = pika.BlockingConnection(pika.URLParameters(Settings.from_env().amqp_url))
delete(connection.channel(), Topology(sys.argv[1], sys.argv[1] + ".dead"))
connection.close()
EOF
  rm -rf "$state_dir"
}
trap cleanup EXIT
for _ in $(seq 1 60); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  kill -0 "$platform" 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.5
done
if ! .venv/bin/python -m testing_service --api "http://127.0.0.1:$port" --queue "$queue"; then
  echo "--- standalone log (last 80 lines)"; tail -n 80 "$log"
  exit 1
fi
