"""A stand-in for Neutron's API: what Nova calls to boot, show, list and delete servers.

Nova has no way to run without Neutron: even with ``networks: none`` at boot, each
server it shows carries its security groups, which it asks Neutron for by listing
the server's ports. Real Neutron needs agents, OVS or Linux bridges, and would touch
this machine's networking; this test cloud needs none of that, so this WSGI app keeps
networks, subnets, ports and one default security group per project in a JSON file,
and answers the Neutron v2.0 calls Nova makes (filters, ``fields``, port binding by
PUT). Tokens are checked by keystonemiddleware against the real Keystone.

Addresses come from a subnet in 127.0.0.0/8, so anything that ever connects to a
test host's address stays on the loopback.

Served by uwsgi with Debian's python3 (deploy/openstack/setup.sh); configuration in
the JSON file named by NEUTRON_STANDIN_CONF: ``state`` (the store's path) and
``keystone_authtoken`` (keystonemiddleware's options).
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import re
import threading
import uuid
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

# Aliases Nova looks for. Without "binding-extended" it binds a port by PUT, the older
# path, which needs no binding objects here.
EXTENSIONS = ("security-group", "quotas", "binding", "port-security", "project-id")
KINDS = {
    "networks": "network",
    "subnets": "subnet",
    "ports": "port",
    "security-groups": "security_group",
    "floatingips": "floatingip",
}


class Store:
    """The resources, by kind and id, kept in one JSON file written after each change."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.Lock()
        try:
            with open(path, encoding="utf-8") as f:
                self.data: dict[str, dict[str, dict]] = json.load(f)
        except FileNotFoundError:
            self.data = {}
        for kind in KINDS:
            self.data.setdefault(kind, {})

    def save(self) -> None:
        temporary = self.path + ".tmp"
        with open(temporary, "w", encoding="utf-8") as f:
            json.dump(self.data, f)
        os.replace(temporary, self.path)


class Error(Exception):
    def __init__(self, status: str, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


def matches(item: dict, filters: dict[str, list[str]]) -> bool:
    """Neutron's list filters: each named field equals one of the values given for it."""
    for key, wanted in filters.items():
        if key in ("fields", "limit", "marker", "sort_key", "sort_dir"):
            continue
        value = item.get(key)
        if key == "fixed_ips":  # e.g. fixed_ips=ip_address=127.77.0.5
            pairs = [w.split("=", 1) for w in wanted if "=" in w]
            if not any(ip.get(k) == v for ip in item.get("fixed_ips", []) for k, v in pairs):
                return False
            continue
        if isinstance(value, bool):
            value = str(value)
        if not any(str(value).lower() == w.lower() for w in wanted):
            return False
    return True


def only(item: dict, fields: list[str]) -> dict:
    return {k: v for k, v in item.items() if k in fields} if fields else item


class Neutron:
    """The API's behaviour, apart from HTTP."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def default_group(self, project: str) -> dict:
        groups = self.store.data["security-groups"]
        for group in groups.values():
            if group["name"] == "default" and group["project_id"] == project:
                return group
        group = {
            "id": str(uuid.uuid4()),
            "name": "default",
            "description": "default",
            "project_id": project,
            "tenant_id": project,
            "security_group_rules": [],
            "stateful": True,
            "tags": [],
        }
        groups[group["id"]] = group
        return group

    def list(self, kind: str, project: str, filters: dict[str, list[str]]) -> dict:
        if kind == "security-groups":
            self.default_group(project)
        items = [
            only(i, filters.get("fields", []))
            for i in self.store.data[kind].values()
            if matches(i, filters)
        ]
        return {kind.replace("-", "_"): items}

    def show(self, kind: str, item_id: str) -> dict:
        item = self.store.data[kind].get(item_id)
        if item is None:
            raise Error(
                "404 Not Found",
                f"{KINDS[kind].title()}NotFound",
                f"{KINDS[kind]} {item_id} could not be found.",
            )
        return {KINDS[kind]: item}

    def create(self, kind: str, project: str, body: dict) -> dict:
        fields = dict(body[KINDS[kind]])
        project = fields.get("project_id") or fields.get("tenant_id") or project
        base = {
            "id": str(uuid.uuid4()),
            "name": "",
            "project_id": project,
            "tenant_id": project,
            "tags": [],
            "description": "",
        }
        item = {**base, **getattr(self, "new_" + KINDS[kind])(fields, project), **fields}
        item["project_id"] = item["tenant_id"] = project
        self.store.data[kind][item["id"]] = item
        if kind == "subnets":
            self.store.data["networks"][item["network_id"]]["subnets"].append(item["id"])
        return {KINDS[kind]: item}

    def update(self, kind: str, item_id: str, body: dict) -> dict:
        item = self.show(kind, item_id)[KINDS[kind]]
        changes = body[KINDS[kind]]
        item.update(changes)
        if kind == "ports" and "binding:host_id" in changes:
            bound = bool(changes["binding:host_id"])
            item["binding:vif_type"] = "ovs" if bound else "unbound"
            item["binding:vif_details"] = {"port_filter": True} if bound else {}
            item["status"] = "ACTIVE" if bound else "DOWN"
        return {KINDS[kind]: item}

    def delete(self, kind: str, item_id: str) -> None:
        self.show(kind, item_id)
        item = self.store.data[kind].pop(item_id)
        if kind == "subnets":
            self.store.data["networks"][item["network_id"]]["subnets"].remove(item_id)

    def new_network(self, fields: dict, project: str) -> dict:
        return {
            "admin_state_up": True,
            "status": "ACTIVE",
            "subnets": [],
            "shared": False,
            "mtu": 1500,
            "router:external": False,
            "port_security_enabled": True,
            "provider:network_type": "local",
            "provider:physical_network": None,
            "provider:segmentation_id": None,
            "availability_zones": ["nova"],
        }

    def new_subnet(self, fields: dict, project: str) -> dict:
        if fields.get("network_id") not in self.store.data["networks"]:
            raise Error("404 Not Found", "NetworkNotFound", "network not found")
        net = ipaddress.ip_network(fields["cidr"])
        hosts = list(net.hosts())
        return {
            "ip_version": net.version,
            "gateway_ip": str(hosts[0]),
            "enable_dhcp": False,
            "allocation_pools": [{"start": str(hosts[1]), "end": str(hosts[-1])}],
            "dns_nameservers": [],
            "host_routes": [],
            "ipv6_ra_mode": None,
            "ipv6_address_mode": None,
            "subnetpool_id": None,
        }

    def new_port(self, fields: dict, project: str) -> dict:
        network = self.show("networks", fields["network_id"])["network"]
        return {
            "admin_state_up": True,
            "status": "DOWN",
            "device_id": "",
            "device_owner": "",
            "mac_address": "fa:16:3e:" + ":".join(f"{b:02x}" for b in random.randbytes(3)),
            "fixed_ips": self.addresses(network, fields.get("fixed_ips")),
            "security_groups": [self.default_group(project)["id"]],
            "binding:host_id": "",
            "binding:vif_type": "unbound",
            "binding:vif_details": {},
            "binding:vnic_type": "normal",
            "binding:profile": {},
            "allowed_address_pairs": [],
            "extra_dhcp_opts": [],
            "dns_name": "",
            "port_security_enabled": True,
            "qos_policy_id": None,
            "resource_request": None,
        }

    def addresses(self, network: dict, asked: Iterable[dict] | None) -> list[dict]:
        """The next free address of the network's first subnet, unless some were asked for."""
        if asked:
            return [dict(a) for a in asked]
        if not network["subnets"]:
            return []
        subnet = self.store.data["subnets"][network["subnets"][0]]
        used = {
            ip["ip_address"]
            for port in self.store.data["ports"].values()
            for ip in port["fixed_ips"]
        }
        pool = subnet["allocation_pools"][0]
        start, end = ipaddress.ip_address(pool["start"]), ipaddress.ip_address(pool["end"])
        candidate = start
        while str(candidate) in used:
            candidate += 1
            if candidate > end:
                raise Error(
                    "409 Conflict",
                    "IpAddressGenerationFailure",
                    f"no more addresses on network {network['id']}",
                )
        return [{"subnet_id": subnet["id"], "ip_address": str(candidate)}]


ROUTE = re.compile(
    r"^/v2\.0/(networks|subnets|ports|security-groups|floatingips)"
    r"(?:/([^/]+?))?(?:\.json)?/?$"
)


def make_app(neutron: Neutron) -> Callable:
    def app(environ: dict, start_response: Callable) -> list[bytes]:
        path, method = environ.get("PATH_INFO", "/"), environ["REQUEST_METHOD"]
        project = environ.get("HTTP_X_PROJECT_ID", "")
        filters = parse_qs(environ.get("QUERY_STRING", ""))
        status, body = "200 OK", None
        # keystonemiddleware runs with delay_auth_decision, so the version document at /
        # answers health checks without a token; everything else needs a valid one.
        if path not in ("", "/") and environ.get("HTTP_X_IDENTITY_STATUS") != "Confirmed":
            data = b'{"error": {"code": 401, "title": "Unauthorized"}}'
            start_response(
                "401 Unauthorized",
                [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
            )
            return [data]
        try:
            with neutron.store.lock:
                status, body = route(neutron, method, path, project, filters, environ)
                if method != "GET":
                    neutron.store.save()
        except Error as exc:
            status, body = (
                exc.status,
                {"NeutronError": {"type": exc.kind, "message": exc.message, "detail": ""}},
            )
        data = b"" if body is None else json.dumps(body).encode()
        start_response(
            status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        )
        return [data]

    return app


def route(
    neutron: Neutron,
    method: str,
    path: str,
    project: str,
    filters: dict[str, list[str]],
    environ: dict,
) -> tuple[str, Any]:
    if path in ("", "/"):
        return "200 OK", {"versions": [{"id": "v2.0", "status": "CURRENT", "links": []}]}
    if path.rstrip("/") in ("/v2.0/extensions", "/v2.0/extensions.json"):
        return "200 OK", {
            "extensions": [
                {
                    "alias": a,
                    "name": a,
                    "description": a,
                    "updated": "2013-01-01T00:00:00-00:00",
                    "links": [],
                }
                for a in EXTENSIONS
            ]
        }
    quota = re.match(r"^/v2\.0/quotas/([^/]+?)(?:\.json)?$", path)
    if quota and method == "GET":
        return "200 OK", {
            "quota": {k: -1 for k in ("network", "subnet", "port", "security_group", "floatingip")}
        }
    found = ROUTE.match(path)
    if not found:
        raise Error("404 Not Found", "HTTPNotFound", f"no resource at {path}")
    kind, item_id = found.groups()
    if method == "GET":
        if item_id is None:
            return "200 OK", neutron.list(kind, project, filters)
        return "200 OK", neutron.show(kind, item_id)
    if method in ("POST", "PUT"):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = json.loads(environ["wsgi.input"].read(length) or b"{}")
        if method == "POST" and item_id is None:
            return "201 Created", neutron.create(kind, project, body)
        if method == "PUT" and item_id is not None:
            return "200 OK", neutron.update(kind, item_id, body)
    if method == "DELETE" and item_id is not None:
        neutron.delete(kind, item_id)
        return "204 No Content", None
    raise Error("405 Method Not Allowed", "HTTPMethodNotAllowed", f"{method} {path}")


def application_from_environment() -> Callable:
    with open(os.environ["NEUTRON_STANDIN_CONF"], encoding="utf-8") as f:
        conf = json.load(f)
    from keystonemiddleware import auth_token

    app = make_app(Neutron(Store(conf["state"])))
    options = {**conf["keystone_authtoken"], "delay_auth_decision": "true"}
    return auth_token.AuthProtocol(app, options)


if "NEUTRON_STANDIN_CONF" in os.environ:
    application = application_from_environment()
