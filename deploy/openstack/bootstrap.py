"""The test cloud's catalogue, image, flavor and compute check, for deploy/openstack/setup.sh.

Run with Debian's /usr/bin/python3, whose keystoneauth1 comes with python3-nova, so the
set-up needs neither the project's virtualenv nor the openstack command (whose start-up
costs a second or two per call). Every step looks before it creates, so it can run again.

    bootstrap.py services | image | flavor | network | compute
"""

from __future__ import annotations

import os
import sys
import time

from keystoneauth1 import session
from keystoneauth1.identity import v3

KEYSTONE = "http://127.0.0.1:5000/v3"
REGION = "RegionOne"
# service user -> (service type, service name, endpoint URL)
SERVICES = {
    "placement": ("placement", "placement", "http://127.0.0.1:8778"),
    "glance": ("image", "glance", "http://127.0.0.1:9292"),
    "nova": ("compute", "nova", "http://127.0.0.1:8774/v2.1"),
    "neutron": ("network", "neutron", "http://127.0.0.1:9696"),
}
IMAGE = "lambda-os-host"
FLAVOR = "lambda-os-host"
NETWORK = "lambda-os-hosts"
# Loopback addresses: whatever connects to a test host's address stays on this machine.
CIDR = "127.77.0.0/24"


def admin() -> session.Session:
    auth = v3.Password(
        auth_url=KEYSTONE,
        username="admin",
        password=os.environ["ADMIN_PASSWORD"],
        project_name="admin",
        user_domain_name="Default",
        project_domain_name="Default",
    )
    return session.Session(auth=auth, timeout=30)


def identity(sess: session.Session, method: str, path: str, **kwargs):
    return sess.request(KEYSTONE + path, method, **kwargs)


def one(sess: session.Session, collection: str, **filters: str) -> dict | None:
    query = "&".join(f"{k}={v}" for k, v in filters.items())
    found = identity(sess, "GET", f"/{collection}?{query}").json()[collection]
    return found[0] if found else None


def services(sess: session.Session) -> None:
    """The service project, one admin user per service, and each service's endpoints."""
    project = (
        one(sess, "projects", name="service")
        or identity(
            sess, "POST", "/projects", json={"project": {"name": "service", "domain_id": "default"}}
        ).json()["project"]
    )
    role = one(sess, "roles", name="admin")
    for user_name, (kind, name, url) in SERVICES.items():
        body = {
            "name": user_name,
            "domain_id": "default",
            "password": os.environ["SERVICE_PASSWORD"],
        }
        user = one(sess, "users", name=user_name)
        if user is None:
            user = identity(sess, "POST", "/users", json={"user": body}).json()["user"]
        else:  # the password may be new (state wiped but not the database, or the reverse)
            identity(sess, "PATCH", f"/users/{user['id']}", json={"user": body})
        identity(sess, "PUT", f"/projects/{project['id']}/users/{user['id']}/roles/{role['id']}")
        service = (
            one(sess, "services", type=kind)
            or identity(
                sess, "POST", "/services", json={"service": {"type": kind, "name": name}}
            ).json()["service"]
        )
        for interface in ("public", "internal", "admin"):
            if one(sess, "endpoints", service_id=service["id"], interface=interface) is None:
                endpoint = {
                    "service_id": service["id"],
                    "interface": interface,
                    "url": url,
                    "region_id": REGION,
                }
                identity(sess, "POST", "/endpoints", json={"endpoint": endpoint})


def image(sess: session.Session) -> None:
    """A tiny image for the fake driver, which never reads it: 1 KiB of zeros, raw."""
    filt = {"service_type": "image", "interface": "public"}
    found = sess.get(f"/v2/images?name={IMAGE}", endpoint_filter=filt).json()["images"]
    if found and found[0]["status"] == "active":
        return
    for stale in found:  # a half-made one from a run that was cut off
        sess.delete(f"/v2/images/{stale['id']}", endpoint_filter=filt)
    body = {"name": IMAGE, "disk_format": "raw", "container_format": "bare", "visibility": "public"}
    made = sess.post("/v2/images", json=body, endpoint_filter=filt).json()
    sess.put(
        f"/v2/images/{made['id']}/file",
        data=bytes(1024),
        endpoint_filter=filt,
        headers={"Content-Type": "application/octet-stream"},
    )


def flavor(sess: session.Session) -> None:
    """The flavor hosts boot with: small, as the fake driver has room for thousands."""
    filt = {"service_type": "compute", "interface": "public"}
    names = [f["name"] for f in sess.get("/flavors", endpoint_filter=filt).json()["flavors"]]
    if FLAVOR not in names:
        body = {"flavor": {"name": FLAVOR, "ram": 512, "vcpus": 1, "disk": 1}}
        sess.post("/flavors", json=body, endpoint_filter=filt)


def network(sess: session.Session) -> None:
    """A shared network with one subnet, for boots that ask for a network."""
    filt = {"service_type": "network", "interface": "public"}
    found = sess.get(f"/v2.0/networks?name={NETWORK}", endpoint_filter=filt).json()["networks"]
    if found and found[0]["subnets"]:
        return
    net = (
        found[0]
        if found
        else sess.post(
            "/v2.0/networks",
            json={"network": {"name": NETWORK, "shared": True}},
            endpoint_filter=filt,
        ).json()["network"]
    )
    subnet = {"name": NETWORK, "network_id": net["id"], "cidr": CIDR, "ip_version": 4}
    sess.post("/v2.0/subnets", json={"subnet": subnet}, endpoint_filter=filt)


def compute(sess: session.Session, timeout_s: float = 90.0) -> None:
    """Wait until a compute service is up and its host is mapped, so a boot can be scheduled."""
    filt = {"service_type": "compute", "interface": "public"}
    deadline = time.monotonic() + timeout_s
    while True:
        services = sess.get("/os-services?binary=nova-compute", endpoint_filter=filt).json()
        up = [s for s in services["services"] if s["state"] == "up" and s["status"] == "enabled"]
        nodes = sess.get("/os-hypervisors", endpoint_filter=filt, raise_exc=False)
        if up and nodes.ok and nodes.json()["hypervisors"]:
            return
        if time.monotonic() > deadline:
            sys.exit(f"no nova-compute came up within {timeout_s:.0f} s: {services}")
        time.sleep(0.5)


if __name__ == "__main__":
    steps = {
        "services": services,
        "image": image,
        "flavor": flavor,
        "network": network,
        "compute": compute,
    }
    admin_session = admin()
    for step in sys.argv[1:]:
        steps[step](admin_session)
