"""novaclient's and keystoneauth1's exceptions, turned into the platform's at this one place.

The question the controller asks of a failure is only "will trying again help?":
an unreachable or overloaded cloud, a 5xx, a 429 and a full quota will pass; bad
credentials, an unknown image, flavor or network, or a microversion the cloud
lacks will not, and the message says what to change.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from keystoneauth1 import exceptions as ks_exceptions
from novaclient import exceptions as nova_exceptions

from lambda_os.errors import LambdaError, PermanentError, TransientError


@contextmanager
def converted(action: str) -> Iterator[None]:
    """Run a block of novaclient calls; what escapes is TransientError or PermanentError.

    ``action`` begins the message ("booting server host-1"), so a log line says what failed.
    """
    try:
        yield
    except nova_exceptions.ClientException as exc:  # the compute or image API answered
        raise for_status(exc.code, f"{action}: {exc}", exc.message) from exc
    except ks_exceptions.HttpError as exc:  # Keystone answered (e.g. 401 on the token)
        raise for_status(exc.http_status, f"{action}: {exc}", str(exc)) from exc
    except ks_exceptions.SSLError as exc:
        raise PermanentError(f"{action}: TLS failed ({exc}); check cacert or verify") from exc
    except ks_exceptions.ConnectionError as exc:  # refused, reset, timed out
        raise TransientError(f"{action}: cloud unreachable: {exc}") from exc
    except ks_exceptions.EndpointNotFound as exc:
        raise PermanentError(
            f"{action}: the service catalogue lacks an endpoint ({exc}); "
            "check region_name and interface"
        ) from exc
    except ks_exceptions.DiscoveryFailure as exc:
        raise PermanentError(f"{action}: {exc}; is auth_url a Keystone?") from exc
    except ks_exceptions.AuthPluginException as exc:
        raise PermanentError(f"{action}: credentials incomplete: {exc}") from exc
    except nova_exceptions.UnsupportedVersion as exc:
        raise PermanentError(f"{action}: {exc}") from exc
    except nova_exceptions.NoUniqueMatch as exc:
        raise PermanentError(f"{action}: {exc}; name it by id") from exc


def for_status(status: int | None, description: str, message: str = "") -> LambdaError:
    """The error for an HTTP answer: retriable for 5xx, 408, 429 and a full quota."""
    code = status or 0
    if code == 401:
        return PermanentError(f"{description}; the credentials were refused")
    if code in (408, 429) or (code >= 500 and code != 501):
        return TransientError(description)
    # Nova says 403 "Quota exceeded" (413 before microversion 2.x): deletes will free it.
    if code in (403, 413) and "quota" in message.lower():
        return TransientError(description)
    return PermanentError(description)
