#!/usr/bin/env bash
# Sets up a small real OpenStack on this one Debian machine, as root, for the Nova seam's tests:
# MariaDB, Keystone, Placement, Glance and Nova (api, conductor, scheduler, and a compute on the
# fake virt driver), each in its own session so it outlives this script. Idempotent: a second
# run finds every service answering and only checks. Config and state live under $OS_STATE,
# logs under $OS_LOGS; it writes $OS_STATE/clouds.yaml (cloud lambda-os-test) and admin-openrc.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
export OS_STATE=${LAMBDA_OS_OPENSTACK_STATE:-/var/lib/lambda-os/openstack}
export OS_LOGS=${LAMBDA_OS_OPENSTACK_LOGS:-/var/log/lambda-os/openstack}
mkdir -p "$OS_STATE" "$OS_LOGS"
# Others may pass through (MariaDB runs as mysql) but not list it; secrets and configs are 600.
chmod 711 "$OS_STATE"

say() { printf '==> openstack: %s\n' "$*"; }
phase_start=$SECONDS
phase() {
  local now=$SECONDS
  say "$1 ($((now - phase_start)) s)"
  phase_start=$now
}
total_start=$SECONDS

# --- Debian packages -----------------------------------------------------------------------
# The service packages bring Debian's config, users and command-line tools; nova-compute is left
# out because it pulls a hypervisor: the fake driver runs from python3-nova alone.
packages=(mariadb-server keystone placement-api glance-api nova-api nova-conductor
  nova-scheduler python3-nova uwsgi-core uwsgi-plugin-python3 python3-pymysql)
need=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
  say "installing Debian packages: ${need[*]}"
  # The packages' own init scripts would start each service on Debian's defaults (SQLite,
  # /etc configs) at install time; this script starts them its own way, so forbid that.
  made_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  trap '[ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d' EXIT
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" \
    >"$OS_LOGS/apt.log" 2>&1 || { tail -n 40 "$OS_LOGS/apt.log" >&2; exit 1; }
  [ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d
  trap - EXIT
fi
phase "packages"

# --- helpers -------------------------------------------------------------------------------
run_dir=$OS_STATE/run
etc=$OS_STATE/etc
done_dir=$OS_STATE/done
mkdir -p "$run_dir" "$etc"/{keystone,placement,glance,nova} "$done_dir"
py=/usr/bin/python3 # Debian's, where python3-nova and friends are installed

alive() { # NAME: its recorded process is running
  local pid
  pid=$(cat "$run_dir/$1.pid" 2>/dev/null) || return 1
  kill -0 "$pid" 2>/dev/null
}
start() { # NAME COMMAND...: in its own session, so it outlives this script and its terminal
  local name=$1
  shift
  say "starting $name (log $OS_LOGS/$name.log)"
  setsid nohup "$@" >>"$OS_LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$run_dir/$name.pid"
}
stop() { # NAME: end the process this script started, and wait until it is gone
  local pid
  pid=$(cat "$run_dir/$1.pid" 2>/dev/null) || return 0
  if kill -0 "$pid" 2>/dev/null; then
    say "restarting $1: its configuration changed"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$run_dir/$1.pid"
}
changed=()
config() { # FILE SERVICE...: write stdin to FILE; when it differs, the services must restart
  local file=$1 new
  shift
  new=$(cat)
  if [ ! -f "$file" ] || [ "$(cat "$file")" != "$new" ]; then
    printf '%s\n' "$new" >"$file"
    chmod 600 "$file"
    changed+=("$@")
  fi
}
restart_if_changed() { # NAME
  local c
  for c in "${changed[@]}"; do [ "$c" = "$1" ] && stop "$1" && return 0; done
  return 0
}
http_up() { curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; }
wait_http() { # NAME URL
  for _ in $(seq 1 120); do
    http_up "$2" && return 0
    alive "$1" || { tail -n 30 "$OS_LOGS/$1.log" >&2; echo "$1 died" >&2; exit 1; }
    sleep 0.25
  done
  tail -n 30 "$OS_LOGS/$1.log" >&2
  echo "$1 does not answer at $2" >&2
  exit 1
}
once() { # STEP COMMAND...: run unless done for these package versions already
  local stamp
  stamp=$(dpkg-query -W -f='${Version} ' python3-keystone python3-nova python3-glance \
    python3-placement 2>/dev/null)
  [ "$(cat "$done_dir/$1" 2>/dev/null)" = "$stamp" ] && return 0
  shift
  "$@"
  echo "$stamp" >"$done_dir/$1"
}

# --- secrets: made once, kept with the state ------------------------------------------------
secrets=$OS_STATE/secrets.env
if [ ! -f "$secrets" ]; then
  umask 077
  {
    for name in DB_PASSWORD RABBIT_PASSWORD ADMIN_PASSWORD SERVICE_PASSWORD; do
      echo "$name=$(openssl rand -hex 16)"
    done
  } >"$secrets"
  umask 022
fi
# shellcheck disable=SC1090
. "$secrets"

# --- MariaDB ---------------------------------------------------------------------------------
db_port=13306
db_sock=$run_dir/mariadb.sock
mysql_root() { mariadb --no-defaults --socket="$db_sock" -u root "$@"; }
if [ ! -d "$OS_STATE/mysql/mysql" ]; then
  say "initialising MariaDB in $OS_STATE/mysql"
  mkdir -p "$OS_STATE/mysql"
  chown mysql:mysql "$OS_STATE/mysql"
  mariadb-install-db --no-defaults --datadir="$OS_STATE/mysql" --user=mysql \
    --auth-root-authentication-method=socket --skip-test-db >"$OS_LOGS/mariadb-install.log" 2>&1 \
    || { tail -n 20 "$OS_LOGS/mariadb-install.log" >&2; rm -rf "$OS_STATE/mysql"; exit 1; }
fi
chown mysql:mysql "$run_dir"
if ! alive mariadb || ! mysql_root -e 'select 1' >/dev/null 2>&1; then
  # Its own port and socket, and no /etc/mysql defaults: this server is the test cloud's alone.
  start mariadb mariadbd --no-defaults --datadir="$OS_STATE/mysql" --user=mysql \
    --socket="$db_sock" --port=$db_port --bind-address=127.0.0.1 --pid-file="$run_dir/mariadbd.pid" \
    --skip-name-resolve --max-connections=400 --innodb-buffer-pool-size=64M \
    --innodb-flush-log-at-trx-commit=2 --log-error="$OS_LOGS/mariadb-error.log"
  for _ in $(seq 1 120); do mysql_root -e 'select 1' >/dev/null 2>&1 && break; sleep 0.25; done
  mysql_root -e 'select 1' >/dev/null || { cat "$OS_LOGS/mariadb-error.log" >&2; exit 1; }
fi
databases="keystone placement glance nova_api nova nova_cell0"
make_databases() {
  local sql="CREATE USER IF NOT EXISTS 'openstack'@'127.0.0.1' IDENTIFIED BY '$DB_PASSWORD';"
  sql+="ALTER USER 'openstack'@'127.0.0.1' IDENTIFIED BY '$DB_PASSWORD';"
  for db in $databases; do
    sql+="CREATE DATABASE IF NOT EXISTS $db; GRANT ALL ON $db.* TO 'openstack'@'127.0.0.1';"
  done
  mysql_root -e "$sql"
}
once databases make_databases
db() { echo "mysql+pymysql://openstack:$DB_PASSWORD@127.0.0.1:$db_port/$1"; }
phase "MariaDB"

# --- RabbitMQ: a vhost and user of the test cloud's own on the running node ------------------
rabbit_vhost=lambda-os-openstack
rabbit_user=lambda-os-openstack
make_rabbit() {
  rabbitmqctl -q list_vhosts | grep -qx "$rabbit_vhost" || rabbitmqctl -q add_vhost "$rabbit_vhost"
  if rabbitmqctl -q list_users | awk '{print $1}' | grep -qx "$rabbit_user"; then
    rabbitmqctl -q change_password "$rabbit_user" "$RABBIT_PASSWORD" >/dev/null
  else
    rabbitmqctl -q add_user "$rabbit_user" "$RABBIT_PASSWORD" >/dev/null
  fi
  rabbitmqctl -q set_permissions -p "$rabbit_vhost" "$rabbit_user" '.*' '.*' '.*'
}
once rabbitmq make_rabbit
transport_url="rabbit://$rabbit_user:$RABBIT_PASSWORD@127.0.0.1:5672/$rabbit_vhost"
phase "RabbitMQ vhost $rabbit_vhost"
