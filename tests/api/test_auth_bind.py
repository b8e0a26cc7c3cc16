"""Without authentication the API answers only this machine: it will not bind elsewhere."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from catalog_api.auth import is_loopback, refuse_open_bind
from lambda_os.errors import PermanentError
from lambda_os.settings import Settings

LAMBDA_OS = str(Path(sys.executable).with_name("lambda-os"))


@pytest.mark.parametrize("command", ["api", "standalone"])
def test_an_open_address_without_authentication_is_refused_with_the_reason(command):
    done = subprocess.run(
        [LAMBDA_OS, command, "--api-host", "0.0.0.0", "--api-port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "without authentication" in done.stderr
    assert "LAMBDA_OS_AUTH=keystone" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "::1", "[::1]", "localhost"])
def test_loopback_addresses_may_go_without_authentication(host):
    assert is_loopback(host)
    refuse_open_bind(Settings(api_host=host))


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "api.example"])
def test_other_addresses_need_authentication(host):
    assert not is_loopback(host)
    with pytest.raises(PermanentError, match="without authentication"):
        refuse_open_bind(Settings(api_host=host))
