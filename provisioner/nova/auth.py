"""Logging in to the cloud: a keystoneauth1 session from a clouds.yaml entry or OS_* variables.

These are the two ways every OpenStack tool is pointed at a cloud, so an operator's
existing admin-openrc or clouds.yaml works unchanged. openstacksdk's config loader
does the same and far more; it is not used because a clouds.yaml is a few lines of
YAML and the SDK would be a second OpenStack client beside novaclient.

Only password-style plugins' options are read: whatever keystoneauth's loader for
the ``auth_type`` declares (``password``, ``v3applicationcredential``, ``token``,
...), so any of them works without code here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from keystoneauth1 import exceptions as ks_exceptions
from keystoneauth1 import loading, session

from lambda_os.errors import PermanentError

# Where the OpenStack tools look for a clouds.yaml, in their order.
CLOUDS_YAML_PLACES = (
    Path("clouds.yaml"),
    Path("~/.config/openstack/clouds.yaml"),
    Path("/etc/openstack/clouds.yaml"),
)
# Keys of a cloud entry (or OS_* variable) that are not the auth plugin's options.
SESSION_KEYS = {"region_name", "interface", "cacert", "cert", "key", "verify", "insecure"}


@dataclass(frozen=True)
class Credentials:
    """Where the cloud is and who we are there, whichever way it was given."""

    auth_type: str
    auth: Mapping[str, str]
    region_name: str | None = None
    interface: str | None = None
    verify: bool | str = True  # False, True, or the path of a CA bundle
    cert: str | None = None
    key: str | None = None
    source: str = field(default="", compare=False)  # for messages: where they came from


def from_clouds_yaml(cloud: str, path: str | None = None) -> Credentials:
    """The named entry of ``path``, or of the first clouds.yaml the OpenStack tools would read."""
    places = [Path(path)] if path else [p.expanduser() for p in CLOUDS_YAML_PLACES]
    found = next((p for p in places if p.is_file()), None)
    if found is None:
        raise PermanentError(
            f"OS_CLOUD={cloud} but no clouds.yaml at {', '.join(map(str, places))}"
        )
    try:
        document = yaml.safe_load(found.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise PermanentError(f"cannot read {found}: {exc}") from exc
    clouds = document.get("clouds") or {}
    if cloud not in clouds:
        raise PermanentError(f"{found} has no cloud {cloud!r} (it has: {', '.join(clouds)})")
    entry = _normalised(clouds[cloud])
    auth = _normalised(entry.pop("auth", {}) or {})
    return _credentials(entry, auth, source=f"cloud {cloud!r} in {found}")


def from_environment(variables: Mapping[str, str]) -> Credentials:
    """Credentials from OS_* variables, given keyed as ``auth_url``, ``username``, ...

    (``lambda_os.settings.openstack_environment`` reads them.)
    """
    if "auth_url" not in variables:
        raise PermanentError(
            "no OpenStack credentials: set OS_CLOUD to a clouds.yaml entry, "
            "or OS_AUTH_URL and the other OS_* variables (source an openrc)"
        )
    entry = dict(variables)
    auth = {k: v for k, v in entry.items() if k not in SESSION_KEYS and k != "auth_type"}
    return _credentials(entry, auth, source="OS_* variables")


def make_session(credentials: Credentials, timeout_s: float = 30.0) -> session.Session:
    """A keystoneauth1 session that logs in on first use and renews its token by itself."""
    try:
        loader = loading.get_plugin_loader(credentials.auth_type)
        known = {option.dest for option in loader.get_options()}
        plugin = loader.load_from_options(
            **{k: v for k, v in credentials.auth.items() if k in known}
        )
    except ks_exceptions.NoMatchingPlugin as exc:
        raise PermanentError(
            f"{credentials.source}: unknown auth_type {credentials.auth_type!r}"
        ) from exc
    except ks_exceptions.MissingRequiredOptions as exc:
        names = ", ".join(option.dest for option in exc.options)
        raise PermanentError(f"{credentials.source}: missing {names}") from exc
    cert: Any = (credentials.cert, credentials.key) if credentials.key else credentials.cert
    return session.Session(auth=plugin, verify=credentials.verify, cert=cert, timeout=timeout_s)


def _normalised(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """clouds.yaml accepts ``project-name`` and ``project_name`` alike."""
    return {str(k).replace("-", "_"): v for k, v in mapping.items()}


def _credentials(entry: Mapping[str, Any], auth: Mapping[str, Any], source: str) -> Credentials:
    insecure = str(entry.get("insecure", "")).lower() in ("1", "true", "yes")
    unverified = str(entry.get("verify", "")).lower() in ("0", "false", "no")
    verify: bool | str = True
    if insecure or unverified:
        verify = False
    elif entry.get("cacert"):
        verify = os.fspath(Path(str(entry["cacert"])).expanduser())
    return Credentials(
        auth_type=str(entry.get("auth_type") or "password"),
        auth={k: str(v) for k, v in auth.items() if v is not None},
        region_name=entry.get("region_name") or None,
        interface=entry.get("interface") or None,
        verify=verify,
        cert=entry.get("cert") or None,
        key=entry.get("key") or None,
        source=source,
    )
