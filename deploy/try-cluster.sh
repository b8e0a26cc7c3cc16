#!/usr/bin/env bash
# Watch the cluster scale through Nova on this one machine: sets up what is missing (the
# platform and the local test cloud), then runs a catalogue server, the VM player, a router,
# the scaling controller and the API, each on names of its own; uploads a function that
# sleeps 1 s, sends a burst of events, and prints the hosts every few seconds while they
# boot under the load and go away after it. Everything it started is stopped at the end
# (or on Ctrl-C), and the servers it booted are deleted.
#
#   deploy/try-cluster.sh [events]      # default 300
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
events=${1:-300}
"$repo/deploy/setup.sh" >/dev/null
"$repo/deploy/openstack/setup.sh" >/dev/null

tag=try$$
work=/tmp/lambda-os-$tag
mkdir -p "$work"
export OS_CLIENT_CONFIG_FILE=/var/lib/lambda-os/openstack/clouds.yaml OS_CLOUD=lambda-os-test
export EVENTS_QUEUE=$tag.events DEAD_LETTER_QUEUE=$tag.events.dead
export LAMBDA_OS_CLOUD_PLATFORM=lambda-os-$tag MONGO_DB=$tag
export LAMBDA_OS_API_PORT=${LAMBDA_OS_API_PORT:-18081} LAMBDA_OS_HEARTBEAT_INTERVAL_S=1
# Quick decisions, so the whole show takes a few minutes.
export LAMBDA_OS_SCALE_INTERVAL_S=2 LAMBDA_OS_SCALE_COOLDOWN_S=10 LAMBDA_OS_SCALE_WAITING_AFTER_S=3
export LAMBDA_OS_SCALE_MIN_HOSTS=1 LAMBDA_OS_SCALE_MAX_HOSTS=${MAX_HOSTS:-3}
bin=$repo/.venv/bin
pids=()
cleanup() {
  echo "==> stopping"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  "$bin/python" - <<'EOF' || true
import pika

from lambda_os.settings import Settings
from listener.topology import Topology, delete
from provisioner.nova import connect

settings = Settings.from_env()
for server in connect(settings).servers():  # only this platform's (its metadata says so)
    connect(settings).delete(server.id)
connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
delete(connection.channel(), Topology.from_settings(settings))
connection.close()
EOF
  rm -rf "$work"
}
trap cleanup EXIT

port=$("$bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin/lambda-os-ferretdb" --listen-addr "127.0.0.1:$port" --sqlite-dir "$work/catalogue" \
  >"$work/catalogue.log" 2>&1 &
pids+=($!)
export MONGO_URL=mongodb://127.0.0.1:$port/
"$bin/python" -m testing_service.vmplay >"$work/vmplay.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 60); do grep -q LAMBDA_OS_WORKER_MONGO_URL "$work/vmplay.log" && break; sleep 0.5; done
export "$(grep -o 'LAMBDA_OS_WORKER_AMQP_URL=.*' "$work/vmplay.log")"
export "$(grep -o 'LAMBDA_OS_WORKER_MONGO_URL=.*' "$work/vmplay.log")"
echo "==> VMs play on $(grep -o 'at [0-9.]*' "$work/vmplay.log"); logs in $work"
"$bin/lambda-os" listener --placement cluster >"$work/router.log" 2>&1 &
pids+=($!)
"$bin/lambda-os" controller >"$work/controller.log" 2>&1 &
pids+=($!)
"$bin/lambda-os" api >"$work/api.log" 2>&1 &
pids+=($!)
api=http://127.0.0.1:$LAMBDA_OS_API_PORT
for _ in $(seq 1 60); do curl -fsS "$api/healthz" >/dev/null 2>&1 && break; sleep 0.5; done

hosts() { echo "--- $(date +%T)"; "$bin/lambda-os" hosts --api "$api" || true; }
until "$bin/lambda-os" hosts --api "$api" 2>/dev/null | grep -q active; do sleep 1; done
hosts

cat >"$work/sleepy.py" <<'EOF'
import time


def handler(event, context):
    time.sleep(1.0)
    return {"n": event["n"]}
EOF
function_id=$("$bin/lambda-os" function --api "$api" create --name sleepy --code "$work/sleepy.py" \
  --handler sleepy.handler --event-source try --event-type tick --memory-mb 1024 \
  --concurrency 100 | "$bin/python" -c 'import json,sys; print(json.load(sys.stdin)["id"])')
echo "==> $events events for function $function_id (1 s each, 1024 MB)"
"$bin/python" - "$events" <<'EOF'
import json
import sys

import pika

from lambda_os.settings import Settings

settings = Settings.from_env()
connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
channel = connection.channel()
channel.confirm_delivery()
for n in range(int(sys.argv[1])):
    event = {"id": f"try-{n}", "event_source": "try", "event_type": "tick", "data": {"n": n}}
    channel.basic_publish("", settings.events_queue, json.dumps(event),
                          pika.BasicProperties(delivery_mode=2))
connection.close()
EOF

count() {
  "$bin/python" - "$function_id" <<'EOF'
import sys
from collections import Counter

from lambda_os.catalogue import connect
from lambda_os.settings import Settings

settings = Settings.from_env()
catalogue = connect(settings.mongo_url, settings.mongo_db)
page = catalogue.list_executions({"function_id": sys.argv[1]}, 1000)
ran = Counter(record.status for record in page.items)
where = Counter(record.placed_on for record in page.items if record.placed_on)
print(f"executions: {dict(ran)}; ran on: {dict(where)}")
EOF
}
peak=1
while true; do
  sleep 5
  hosts
  count
  now=$("$bin/lambda-os" hosts --api "$api" 2>/dev/null | grep -c active || true)
  ((now > peak)) && peak=$now
  done=$(count | grep -o "'succeeded': [0-9]*" | grep -o '[0-9]*$' || echo 0)
  # Scaled up, every event ran, and back down to the minimum: the show is over.
  if ((peak > 1 && done >= events && now <= LAMBDA_OS_SCALE_MIN_HOSTS)); then break; fi
done
echo "==> the scaling decisions, newest first"
curl -sS "$api/v1/hosts/events?limit=20" | "$bin/python" -c '
import json, sys
for e in json.load(sys.stdin)["events"]:
    print(e["at"], e["action"], e["host_id"], "-", e["reason"])'
