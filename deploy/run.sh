#!/usr/bin/env bash
# Sets up what is missing (deploy/setup.sh), then runs the whole platform in one process:
# API on 127.0.0.1:8080 and the RabbitMQ listener, over the in-memory catalogue unless
# MONGO_URL names a real MongoDB. Extra arguments go to `lambda-os standalone`.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
"$repo/deploy/setup.sh"
exec "$repo/.venv/bin/lambda-os" standalone "$@"
