#!/usr/bin/env bash
# Sets up a small real OpenStack on this one Debian machine, as root, for the Nova seam's tests:
# MariaDB, Keystone, Placement, Glance, a Neutron stand-in (neutron.py) and Nova (api, conductor,
# scheduler, and a compute on the fake virt driver), each in its own session so it outlives this
# script. Idempotent: a second
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
trap 'echo "deploy/openstack/setup.sh failed at line $LINENO; logs in $OS_LOGS" >&2' ERR
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
  nova-scheduler python3-nova uwsgi-core uwsgi-plugin-python3 python3-pymysql curl openssl)
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

started_at() { # PID: the kernel's start time of the process, so a reused pid is told apart
  awk '{print $22}' "/proc/$1/stat" 2>/dev/null
}
alive() { # NAME: its recorded process is still the one this script started
  local pid
  pid=$(cat "$run_dir/$1.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ "$(started_at "$pid")" = "$(cat "$run_dir/$1.started" 2>/dev/null)" ]
}
start() { # NAME COMMAND...: in its own session, so it outlives this script and its terminal
  local name=$1
  shift
  say "starting $name (log $OS_LOGS/$name.log)"
  setsid nohup "$@" >>"$OS_LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$run_dir/$name.pid"
  started_at $! >"$run_dir/$name.started"
}
stop() { # NAME: end the process this script started, and wait until it is gone
  local pid
  pid=$(cat "$run_dir/$1.pid" 2>/dev/null) || return 0
  if alive "$1"; then
    say "restarting $1: its configuration changed"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$run_dir/$1.pid" "$run_dir/$1.started"
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
  local step=$1 stamp
  stamp=$(dpkg-query -W -f='${Version} ' python3-keystone python3-nova python3-glance \
    python3-placement 2>/dev/null)
  [ "$(cat "$done_dir/$step" 2>/dev/null)" = "$stamp" ] && return 0
  shift
  "$@"
  echo "$stamp" >"$done_dir/$step"
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
transport_url="rabbit://$rabbit_user:$RABBIT_PASSWORD@127.0.0.1:5672/$rabbit_vhost"

keystone_url=http://127.0.0.1:5000

authtoken() { # USER: the [keystone_authtoken] section of a service
  cat <<CONF
[keystone_authtoken]
www_authenticate_uri = $keystone_url
auth_url = $keystone_url
auth_type = password
project_domain_name = Default
user_domain_name = Default
project_name = service
username = $1
password = $SERVICE_PASSWORD
CONF
}

# --- configuration: every file first, so the slow schema steps can run side by side ---------
config "$etc/keystone/keystone.conf" keystone <<CONF
[DEFAULT]
log_file = $OS_LOGS/keystone-app.log
[database]
connection = $(db keystone)
[identity]
# bcrypt's default 12 rounds cost a quarter second per log-in; a test cloud needs no such cost.
password_hash_rounds = 4
[token]
provider = fernet
[fernet_tokens]
key_repository = $OS_STATE/keystone/fernet-keys
[fernet_receipts]
key_repository = $OS_STATE/keystone/fernet-keys
[credential]
key_repository = $OS_STATE/keystone/credential-keys
CONF
# Placement, under uwsgi
config "$etc/placement/placement.conf" placement <<CONF
[DEFAULT]
log_file = $OS_LOGS/placement-app.log
[placement_database]
connection = $(db placement)
[api]
auth_strategy = keystone
$(authtoken placement)
CONF
# Glance: eventlet glance-api, file store
mkdir -p "$OS_STATE/glance"/{images,staging,tasks}
config "$etc/glance/glance-api.conf" glance <<CONF
[DEFAULT]
bind_host = 127.0.0.1
bind_port = 9292
workers = 1
log_file = $OS_LOGS/glance-app.log
enabled_backends = fs:file
[database]
connection = $(db glance)
$(authtoken glance)
[paste_deploy]
flavor = keystone
config_file = /etc/glance/glance-api-paste.ini
[glance_store]
default_backend = fs
[fs]
filesystem_store_datadir = $OS_STATE/glance/images
[os_glance_staging_store]
filesystem_store_datadir = $OS_STATE/glance/staging
[os_glance_tasks_store]
filesystem_store_datadir = $OS_STATE/glance/tasks
[oslo_concurrency]
lock_path = $OS_STATE/glance
CONF
# Neutron: the project's stand-in (deploy/openstack/neutron.py), under uwsgi
mkdir -p "$etc/neutron" "$OS_STATE/neutron"
config "$etc/neutron/standin.json" neutron <<CONF
{"state": "$OS_STATE/neutron/state.json",
 "keystone_authtoken": {"www_authenticate_uri": "$keystone_url", "auth_url": "$keystone_url",
  "auth_type": "password", "project_domain_name": "Default", "user_domain_name": "Default",
  "project_name": "service", "username": "neutron", "password": "$SERVICE_PASSWORD"}}
CONF
# Nova
mkdir -p "$OS_STATE/nova/instances" "$OS_STATE/nova/tmp"
config "$etc/nova/nova.conf" nova-api nova-conductor nova-scheduler nova-compute <<CONF
[DEFAULT]
transport_url = $transport_url
state_path = $OS_STATE/nova
instances_path = $OS_STATE/nova/instances
my_ip = 127.0.0.1
host = lambda-os-compute-1
compute_driver = fake.FakeDriver
enabled_apis = osapi_compute
osapi_compute_listen = 127.0.0.1
osapi_compute_listen_port = 8774
osapi_compute_workers = 1
# Periodic tasks start at once rather than after a random delay of up to a minute.
periodic_fuzzy_delay = 0
[api]
auth_strategy = keystone
[api_database]
connection = $(db nova_api)
[database]
connection = $(db nova)
$(authtoken nova)
[placement]
region_name = RegionOne
auth_type = password
auth_url = $keystone_url/v3
project_domain_name = Default
user_domain_name = Default
project_name = service
username = nova
password = $SERVICE_PASSWORD
[glance]
region_name = RegionOne
[neutron]
region_name = RegionOne
auth_type = password
auth_url = $keystone_url/v3
project_domain_name = Default
user_domain_name = Default
project_name = service
username = neutron
password = $SERVICE_PASSWORD
[scheduler]
# A new compute is mapped into the cell within seconds, without nova-manage discover_hosts.
discover_hosts_in_cells_interval = 2
[conductor]
workers = 1
[quota]
# The default of 10 instances (and 20 cores, 50 GiB) is far below what a scaling test boots.
instances = -1
cores = -1
ram = -1
[wsgi]
api_paste_config = /etc/nova/api-paste.ini
[oslo_concurrency]
lock_path = $OS_STATE/nova/tmp
[oslo_messaging_notifications]
driver = noop
[vnc]
enabled = false
[cinder]
os_region_name = RegionOne
CONF

# --- the database schemas and the RabbitMQ vhost, side by side while Keystone starts ---------
jobs=()
job_names=()
background() { # NAME COMMAND...: its output in NAME's log; the script waits for it later
  local name=$1
  shift
  ("$@") >>"$OS_LOGS/$name.log" 2>&1 &
  jobs+=($!)
  job_names+=("$name")
}
nova_manage() { nova-manage --config-file "$etc/nova/nova.conf" "$@"; }
init_nova() {
  say "Nova: databases and cells"
  nova_manage api_db sync
  nova_manage cell_v2 list_cells | grep -q ' cell0 ' \
    || nova_manage cell_v2 map_cell0 --database_connection "$(db nova_cell0)"
  nova_manage cell_v2 list_cells | grep -q ' cell1 ' \
    || nova_manage cell_v2 create_cell --name cell1 --verbose
  nova_manage db sync
}
background rabbitmq-setup once rabbitmq make_rabbit
background placement-manage once placement \
  placement-manage --config-file "$etc/placement/placement.conf" db sync
background glance-manage once glance \
  glance-manage --config-file "$etc/glance/glance-api.conf" db_sync
background nova-manage once nova init_nova

# --- Keystone: Debian's, under uwsgi -----------------------------------------------------------
keystone_manage() { keystone-manage --config-file "$etc/keystone/keystone.conf" "$@"; }
init_keystone() {
  say "Keystone: database, keys, bootstrap"
  mkdir -p "$OS_STATE/keystone"
  keystone_manage db_sync
  keystone_manage fernet_setup --keystone-user root --keystone-group root
  keystone_manage credential_setup --keystone-user root --keystone-group root
  keystone_manage bootstrap --bootstrap-password "$ADMIN_PASSWORD" \
    --bootstrap-username admin --bootstrap-project-name admin --bootstrap-role-name admin \
    --bootstrap-service-name keystone --bootstrap-region-id RegionOne \
    --bootstrap-admin-url "$keystone_url/v3/" --bootstrap-internal-url "$keystone_url/v3/" \
    --bootstrap-public-url "$keystone_url/v3/"
}
once keystone init_keystone >>"$OS_LOGS/keystone-manage.log" 2>&1
uwsgi_app() { # NAME PORT WSGI-FILE ENV=VALUE: one process, a few threads: a test cloud's load
  local name=$1 port=$2 app=$3 env=$4
  # The WSGI file's path is part of the configuration: a new checkout must restart it.
  echo "$app" >"$run_dir/$name.app"
  start "$name" uwsgi --plugin python3 --http-socket "127.0.0.1:$port" --wsgi-file "$app" \
    --master --processes 1 --threads 4 --enable-threads --lazy-apps --die-on-term \
    --buffer-size 65535 --add-header 'Connection: close' --env "$env" --procname-prefix "lambda-os-$name "
}
restart_if_changed keystone
if ! alive keystone || ! http_up "$keystone_url/v3"; then
  uwsgi_app keystone 5000 /usr/bin/keystone-wsgi-public "OS_KEYSTONE_CONFIG_DIR=$etc/keystone"
fi
wait_http keystone "$keystone_url/v3"
phase "Keystone"

# What the tests and the seam read: an openrc and a clouds.yaml for the admin user.
config "$OS_STATE/admin-openrc" <<CONF
export OS_AUTH_URL=$keystone_url/v3
export OS_USERNAME=admin
export OS_PASSWORD=$ADMIN_PASSWORD
export OS_PROJECT_NAME=admin
export OS_USER_DOMAIN_NAME=Default
export OS_PROJECT_DOMAIN_NAME=Default
export OS_REGION_NAME=RegionOne
export OS_IDENTITY_API_VERSION=3
CONF
config "$OS_STATE/clouds.yaml" <<CONF
clouds:
  lambda-os-test:
    auth:
      auth_url: $keystone_url/v3
      username: admin
      password: $ADMIN_PASSWORD
      project_name: admin
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    interface: public
    identity_api_version: 3
CONF

# --- the service users, endpoints, and (later) the image and flavor ----------------------------
catalogue() {
  ADMIN_PASSWORD=$ADMIN_PASSWORD SERVICE_PASSWORD=$SERVICE_PASSWORD "$py" "$here/bootstrap.py" "$@"
}
# Again whenever bootstrap.py changes (a service added to the catalogue, say).
once "catalogue-$(sha1sum <"$here/bootstrap.py" | cut -c1-12)" catalogue services
phase "Keystone users and endpoints"

for i in "${!jobs[@]}"; do
  wait "${jobs[i]}" || {
    tail -n 30 "$OS_LOGS/${job_names[i]}.log" >&2
    echo "${job_names[i]} failed" >&2
    exit 1
  }
done
phase "database schemas and RabbitMQ vhost"

# --- Placement, Glance, Neutron -----------------------------------------------------------------
restart_if_changed placement
if ! alive placement || ! http_up http://127.0.0.1:8778/; then
  uwsgi_app placement 8778 /usr/bin/placement-api "OS_PLACEMENT_CONFIG_DIR=$etc/placement"
fi

restart_if_changed glance
if ! alive glance || ! http_up http://127.0.0.1:9292/; then
  start glance glance-api --config-file "$etc/glance/glance-api.conf"
fi

[ "$(cat "$run_dir/neutron.app" 2>/dev/null)" = "$here/neutron.py" ] || changed+=(neutron)
[ "$here/neutron.py" -nt "$run_dir/neutron.pid" ] && changed+=(neutron)
restart_if_changed neutron
if ! alive neutron || ! http_up http://127.0.0.1:9696/; then
  uwsgi_app neutron 9696 "$here/neutron.py" "NEUTRON_STANDIN_CONF=$etc/neutron/standin.json"
fi
wait_http placement http://127.0.0.1:8778/
wait_http glance http://127.0.0.1:9292/
wait_http neutron http://127.0.0.1:9696/
phase "Placement, Glance and the Neutron stand-in"

# --- Nova: api, conductor, scheduler, and one compute on the fake virt driver ------------------
for service in nova-api nova-conductor nova-scheduler nova-compute; do
  restart_if_changed "$service"
done
if ! alive nova-api || ! http_up http://127.0.0.1:8774/; then
  start nova-api nova-api --config-file "$etc/nova/nova.conf"
fi
for service in nova-conductor nova-scheduler; do
  alive "$service" || start "$service" "$service" --config-file "$etc/nova/nova.conf"
done
# The nova-compute package would pull a hypervisor (libvirt, QEMU); the fake driver needs none,
# so the service runs from python3-nova's own entry point.
alive nova-compute || start nova-compute "$py" -c 'from nova.cmd.compute import main; main()' \
  --config-file "$etc/nova/nova.conf"
wait_http nova-api http://127.0.0.1:8774/
catalogue flavor image network compute
phase "Nova services"

# Each service leads its own session; its workers (uwsgi's, eventlet's forks) are in it too.
sessions=$(for f in "$run_dir"/*.pid; do [ "$f" = "$run_dir/mariadbd.pid" ] || cat "$f"; done \
  | paste -sd,)
memory_mb=$(for pid in $(ps -o pid= -s "$sessions"); do
  awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup" 2>/dev/null
done | awk '{s += $1} END {print int(s / 1024)}')
say "ready in $((SECONDS - total_start)) s: MariaDB, Keystone, Placement, Glance, the Neutron" \
  "stand-in and Nova (fake driver) on 127.0.0.1, ${memory_mb} MiB (PSS);" \
  "OS_CLIENT_CONFIG_FILE=$OS_STATE/clouds.yaml OS_CLOUD=lambda-os-test"
