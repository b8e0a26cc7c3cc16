"""Configuration: one frozen dataclass, built from the environment, overridden by flags.

This is the only module that reads the environment, and it does so only when
``Settings.from_env`` is called, never at import time. Every option is declared
once in ``OPTIONS`` with its environment variable, flag and help text, so
``lambda-os <command> --help`` and the README list the same things.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Settings:
    """Everything a lambda-os process can be told, with working defaults for one machine."""

    mongo_url: str | None = None
    mongo_db: str = "lambda_os"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    events_queue: str = "lambda.events"
    dead_letter_queue: str = "lambda.events.dead"
    docker_host: str | None = None
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    api_workers: int = 2
    allowed_hosts: str = ""
    allowed_origins: str = ""
    api_read_timeout_s: float = 30.0
    default_owner: str = "default"
    auth: str = "none"
    keystone_cloud: str | None = None
    keystone_cache_s: int = 300
    api_token_ttl_s: float = 43200.0
    api_token: str | None = None
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0
    quota_functions: int = 100
    quota_package_bytes: int = 1 << 30
    quota_executions: int = 50
    quota_memory_mb: int = 16384
    runtime_image_prefix: str = "lambda-os/runtime"
    state_dir: str = "/var/lib/lambda-os"
    concurrency: int = 8
    reserved_slots: int = 1
    warm_idle_s: float = 600.0
    pool_size: int = 2
    host_memory_mb: int = 8192
    memory_mb_per_cpu: int = 1769
    embedded_executions_kept: int = 10_000
    embedded_catalogue: str = "ferretdb"
    sweep_interval_s: float = 15.0
    sweep_queued_after_s: float = 300.0
    placement: str = "local"
    host_id: str = ""
    server_id: str = ""
    heartbeat_interval_s: float = 3.0
    host_lost_after: int = 3
    log_level: str = "INFO"
    os_cloud: str | None = None
    os_client_config_file: str | None = None
    cloud_image: str = "lambda-os-host"
    cloud_flavor: str = "lambda-os-host"
    cloud_network: str | None = None
    cloud_platform: str = "lambda-os"
    scale_high_mark: float = 0.70
    scale_low_mark: float = 0.30
    scale_min_hosts: int = 1
    scale_max_hosts: int = 4
    scale_cooldown_s: float = 120.0
    scale_register_grace_s: float = 300.0
    scale_waiting_after_s: float = 60.0
    scale_interval_s: float = 15.0
    worker_amqp_url: str | None = None
    worker_mongo_url: str | None = None
    broker_admin_url: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables; unset or empty ones keep their default."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for option in OPTIONS:
            raw = env.get(option.env)
            if raw is not None and raw != "":
                values[option.field] = option.parse(raw)
        return cls(**values)

    def with_overrides(self, args: argparse.Namespace) -> Settings:
        """Apply the command-line flags that were given (flags default to None)."""
        given = {
            option.field: getattr(args, option.field)
            for option in OPTIONS
            if getattr(args, option.field, None) is not None
        }
        return dataclasses.replace(self, **given)


@dataclass(frozen=True)
class Option:
    """One setting: its field, environment variable, flag and help text."""

    field: str
    env: str
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")

    @property
    def type(self) -> type:
        default = Settings.__dataclass_fields__[self.field].default
        return type(default) if default is not None else str

    def parse(self, raw: str) -> Any:
        return self.type(raw)


OPTIONS: tuple[Option, ...] = (
    Option(
        "mongo_url",
        "MONGO_URL",
        "MongoDB connection URL; when unset, `standalone` runs its own catalogue "
        "(see LAMBDA_OS_EMBEDDED_CATALOGUE)",
    ),
    Option("mongo_db", "MONGO_DB", "MongoDB database name"),
    Option("amqp_url", "AMQP_URL", "RabbitMQ connection URL"),
    Option("events_queue", "EVENTS_QUEUE", "durable queue that events are published to"),
    Option(
        "dead_letter_queue",
        "DEAD_LETTER_QUEUE",
        "queue that receives events that cannot be processed, with the reason in a header",
    ),
    Option("docker_host", "DOCKER_HOST", "Docker Engine URL; the local engine when unset"),
    Option("api_host", "LAMBDA_OS_API_HOST", "address the API binds to"),
    Option("api_port", "LAMBDA_OS_API_PORT", "port the API binds to"),
    Option("api_workers", "LAMBDA_OS_API_WORKERS", "gunicorn worker processes for `api`"),
    Option(
        "allowed_hosts",
        "LAMBDA_OS_ALLOWED_HOSTS",
        "comma-separated Host names the API answers besides localhost, 127.0.0.1, [::1] "
        "and the bind address (a DNS rebinding defence); * answers any",
    ),
    Option(
        "allowed_origins",
        "LAMBDA_OS_ALLOWED_ORIGINS",
        "comma-separated origins (scheme://host[:port]) whose web pages may change things "
        "through the API; other cross-origin writes are refused",
    ),
    Option(
        "api_read_timeout_s",
        "LAMBDA_OS_API_READ_TIMEOUT_S",
        "seconds a client has to send a request's headers, and the longest pause allowed "
        "within its body; then the request is dropped (408 for a body)",
    ),
    Option(
        "default_owner",
        "LAMBDA_OS_DEFAULT_OWNER",
        "the project that owns everything when the API runs without authentication "
        "(LAMBDA_OS_AUTH=none)",
    ),
    Option(
        "auth",
        "LAMBDA_OS_AUTH",
        "how API callers prove who they are: `none` (loopback bind address only: every caller "
        "is the local operator), `keystone` (Keystone v3 tokens in X-Auth-Token, scoped to "
        "a project) or `tokens` (the API's own users and expiring tokens, for a lab)",
    ),
    Option(
        "keystone_cloud",
        "LAMBDA_OS_KEYSTONE_CLOUD",
        "with LAMBDA_OS_AUTH=keystone: the clouds.yaml entry of the API's service user, who "
        "validates tokens (default: OS_CLOUD, else the OS_* variables)",
    ),
    Option(
        "keystone_cache_s",
        "LAMBDA_OS_KEYSTONE_CACHE_S",
        "with LAMBDA_OS_AUTH=keystone: seconds a validated token is trusted without asking "
        "Keystone again (a revoked token works that long at most); -1 asks every time",
    ),
    Option(
        "api_token_ttl_s",
        "LAMBDA_OS_API_TOKEN_TTL_S",
        "with LAMBDA_OS_AUTH=tokens: seconds a token from POST /v1/auth/tokens stays valid",
    ),
    Option(
        "api_token",
        "LAMBDA_OS_API_TOKEN",
        "`function` and `hosts`: the token sent to the API in X-Auth-Token "
        "(e.g. `openstack token issue -f value -c id`)",
    ),
    Option(
        "metrics_host",
        "LAMBDA_OS_METRICS_HOST",
        "`listener` and `worker`: the address their Prometheus /metrics listens on",
    ),
    Option(
        "metrics_port",
        "LAMBDA_OS_METRICS_PORT",
        "`listener` and `worker`: the port of their Prometheus /metrics (0: none; the API "
        "serves /metrics itself)",
    ),
    Option(
        "quota_functions",
        "LAMBDA_OS_QUOTA_FUNCTIONS",
        "functions a project may have, unless an admin set its own quota",
    ),
    Option(
        "quota_package_bytes",
        "LAMBDA_OS_QUOTA_PACKAGE_BYTES",
        "bytes a project's current packages may hold together, unless an admin set its own",
    ),
    Option(
        "quota_executions",
        "LAMBDA_OS_QUOTA_EXECUTIONS",
        "executions a project may run at once (more wait), unless an admin set its own",
    ),
    Option(
        "quota_memory_mb",
        "LAMBDA_OS_QUOTA_MEMORY_MB",
        "memory (MB) a project's executions may take at once (more wait), unless an admin "
        "set its own",
    ),
    Option(
        "runtime_image_prefix",
        "LAMBDA_OS_RUNTIME_IMAGE_PREFIX",
        "runtime images are named <prefix>:<runtime>, e.g. lambda-os/runtime:python3.11",
    ),
    Option(
        "state_dir",
        "LAMBDA_OS_STATE_DIR",
        "host directory for unpacked packages and the sockets shared with containers",
    ),
    Option(
        "concurrency",
        "LAMBDA_OS_CONCURRENCY",
        "executions the provisioner runs at once on this host",
    ),
    Option(
        "reserved_slots",
        "LAMBDA_OS_RESERVED_SLOTS",
        "of those, slots one function may never take, kept for other functions so a busy "
        "one cannot starve them: a function runs at most max(1, concurrency - this) at once "
        "on this host, and a freed slot goes to the waiting function holding the fewest",
    ),
    Option(
        "warm_idle_s",
        "LAMBDA_OS_WARM_IDLE_S",
        "seconds an idle warm container is kept for its function version",
    ),
    Option("pool_size", "LAMBDA_OS_POOL_SIZE", "pre-started generic containers per runtime"),
    Option(
        "host_memory_mb",
        "LAMBDA_OS_HOST_MEMORY_MB",
        "memory budget for running plus warm containers on this host",
    ),
    Option(
        "memory_mb_per_cpu",
        "LAMBDA_OS_MEMORY_MB_PER_CPU",
        "memory that earns one CPU: a container is capped at memory_mb / this many CPUs "
        "(at least 0.1, at most the host's cores), as AWS Lambda; 0 leaves the CPU uncapped "
        "and only weighted by memory",
    ),
    Option(
        "embedded_executions_kept",
        "LAMBDA_OS_EMBEDDED_EXECUTIONS_KEPT",
        "with the in-memory catalogue only: finished executions kept, newest first, so "
        "memory stays flat (a real MongoDB keeps them all)",
    ),
    Option(
        "embedded_catalogue",
        "LAMBDA_OS_EMBEDDED_CATALOGUE",
        "without MONGO_URL, `standalone`'s catalogue: `ferretdb` (a FerretDB server of its own, "
        "kept under the state directory: survives crashes and restarts) or `memory` (in this "
        "process only)",
    ),
    Option(
        "sweep_interval_s",
        "LAMBDA_OS_SWEEP_INTERVAL_S",
        "seconds between the listener's sweeps for executions whose work was lost",
    ),
    Option(
        "sweep_queued_after_s",
        "LAMBDA_OS_SWEEP_QUEUED_AFTER_S",
        "seconds a queued execution may wait (past its retry time) before the sweeper "
        "publishes its event again",
    ),
    Option(
        "placement",
        "LAMBDA_OS_PLACEMENT",
        "where `listener` runs functions: `local` (on this host's Docker Engine) or `cluster` "
        "(it runs nothing itself: it places each execution on a registered host's queue, "
        "served there by `lambda-os worker`; needs MONGO_URL)",
    ),
    Option(
        "host_id",
        "LAMBDA_OS_HOST_ID",
        "`worker`: this host's id in the cluster and the suffix of its queue "
        "<events_queue>.host.<id>; empty means the machine's host name",
    ),
    Option(
        "server_id",
        "LAMBDA_OS_SERVER_ID",
        "`worker`: the Nova server id of this host, recorded in the registry; empty for none",
    ),
    Option(
        "heartbeat_interval_s",
        "LAMBDA_OS_HEARTBEAT_INTERVAL_S",
        "seconds between a worker's heartbeats, and between a cluster router's registry passes",
    ),
    Option(
        "host_lost_after",
        "LAMBDA_OS_HOST_LOST_AFTER",
        "heartbeat intervals a host (or router) may stay silent before routers mark it lost "
        "and move its work to other hosts",
    ),
    Option(
        "log_level",
        "LAMBDA_OS_LOG_LEVEL",
        "logging level (DEBUG, INFO, WARNING, ERROR)",
    ),
    Option(
        "os_cloud",
        "OS_CLOUD",
        "the clouds.yaml entry whose credentials the Nova hosts are managed with; when unset, "
        "the usual OS_* variables (OS_AUTH_URL, OS_USERNAME, OS_PASSWORD, OS_PROJECT_NAME, ...)",
    ),
    Option(
        "os_client_config_file",
        "OS_CLIENT_CONFIG_FILE",
        "the clouds.yaml to read; when unset, ./clouds.yaml, ~/.config/openstack/clouds.yaml "
        "and /etc/openstack/clouds.yaml, the first that exists",
    ),
    Option("cloud_image", "LAMBDA_OS_CLOUD_IMAGE", "image (name or id) Nova hosts boot from"),
    Option("cloud_flavor", "LAMBDA_OS_CLOUD_FLAVOR", "flavor (name or id) of Nova hosts"),
    Option(
        "cloud_network",
        "LAMBDA_OS_CLOUD_NETWORK",
        "network (name or id) Nova hosts are attached to; when unset, they boot with none",
    ),
    Option(
        "cloud_platform",
        "LAMBDA_OS_CLOUD_PLATFORM",
        "the name in each Nova host's metadata that marks it as this platform's: servers "
        "without it are never listed or deleted",
    ),
    Option(
        "scale_high_mark",
        "LAMBDA_OS_SCALE_HIGH_MARK",
        "`controller`: share of the active hosts' memory in use (0-1) above which it boots a host",
    ),
    Option(
        "scale_low_mark",
        "LAMBDA_OS_SCALE_LOW_MARK",
        "`controller`: share of memory in use below which it drains the least loaded idle host",
    ),
    Option("scale_min_hosts", "LAMBDA_OS_SCALE_MIN_HOSTS", "`controller`: fewest Nova hosts kept"),
    Option("scale_max_hosts", "LAMBDA_OS_SCALE_MAX_HOSTS", "`controller`: most Nova hosts booted"),
    Option(
        "scale_cooldown_s",
        "LAMBDA_OS_SCALE_COOLDOWN_S",
        "`controller`: seconds after a boot or drain before the next one, so a change shows "
        "in the heartbeats before it is judged again",
    ),
    Option(
        "scale_register_grace_s",
        "LAMBDA_OS_SCALE_REGISTER_GRACE_S",
        "`controller`: seconds a booted server may take to register its worker before it is "
        "deleted as broken",
    ),
    Option(
        "scale_waiting_after_s",
        "LAMBDA_OS_SCALE_WAITING_AFTER_S",
        "`controller`: seconds an execution may stay queued before a host is booted whatever "
        "the memory load",
    ),
    Option(
        "scale_interval_s",
        "LAMBDA_OS_SCALE_INTERVAL_S",
        "`controller`: seconds between its reconcile passes",
    ),
    Option(
        "worker_amqp_url",
        "LAMBDA_OS_WORKER_AMQP_URL",
        "`controller`: the RabbitMQ URL written into a new host's user data, when the hosts "
        "reach the broker at another address than the controller (default: AMQP_URL)",
    ),
    Option(
        "worker_mongo_url",
        "LAMBDA_OS_WORKER_MONGO_URL",
        "`controller`: the MongoDB URL written into a new host's user data (default: MONGO_URL)",
    ),
    Option(
        "broker_admin_url",
        "LAMBDA_OS_BROKER_ADMIN_URL",
        "`controller`: RabbitMQ's management API with an administrator's credentials, e.g. "
        "http://guest:guest@127.0.0.1:15672; each new host then gets a broker user of its own "
        "that reads only its own queue. Unset, every host shares the worker RabbitMQ URL, "
        "which is weaker: one compromised host can read and write every host's invocations",
    ),
)


def openstack_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The OS_* variables that describe credentials, for when no clouds.yaml entry is named.

    They are the OpenStack tools' own convention (an admin-openrc sets them), too many
    and too open-ended for one option each, so they pass through as they are, keyed by
    the lower-case name without ``OS_`` (``OS_AUTH_URL`` -> ``auth_url``).
    """
    env = os.environ if env is None else env
    own = {option.env for option in OPTIONS}
    return {
        name[3:].lower(): value
        for name, value in env.items()
        if name.startswith("OS_") and name not in own and value != ""
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare every option as a flag; the help names its environment variable and default."""
    for option in OPTIONS:
        default = Settings.__dataclass_fields__[option.field].default
        parser.add_argument(
            option.flag,
            dest=option.field,
            type=option.type,
            default=None,
            # argparse %-formats help text; the default AMQP URL holds a literal "%2F".
            help=f"{option.help} (env {option.env}; default {default!r})".replace("%", "%%"),
        )


def load(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Settings:
    """The settings in force: environment first, then the flags given on the command line."""
    return Settings.from_env(env).with_overrides(args)
