"""The platform's own small exception hierarchy.

Foreign exceptions (pymongo, pika, docker) are converted into these at the seam
where the real part plugs in, and re-raised with ``from`` so the cause is kept.
The API maps them to HTTP statuses; the listener decides from them whether a
message can be retried.
"""

from __future__ import annotations


class LambdaError(Exception):
    """Base of every error the platform raises on purpose."""

    title = "Error"

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class NotFound(LambdaError):
    """The named function, execution or package does not exist."""

    title = "Not found"


class Conflict(LambdaError):
    """The request collides with what is stored (e.g. a duplicate function name)."""

    title = "Conflict"


class InvalidPackage(LambdaError):
    """An uploaded code package is unsafe, too large, or lacks its handler module."""

    title = "Invalid package"


class PackageTooLarge(InvalidPackage):
    """A package over the upload or unpacked size limit."""

    title = "Package too large"


class TransientError(LambdaError):
    """A failure that may go away if the same work is tried again (broker, engine, catalogue down)."""

    title = "Service unavailable"


class PermanentError(LambdaError):
    """A failure that will happen again on every retry (bad message, missing runtime image)."""

    title = "Cannot process"


class InvalidEvent(PermanentError):
    """A message or invocation body that is not an acceptable event; the reason is the description.

    On the queue it becomes a dead letter; through the API, a 422.
    """

    title = "Invalid event"


class LeaseLost(LambdaError):
    """This listener no longer holds the execution's lease: another runs it, so this run stops."""

    title = "Lease lost"


class QuotaExceeded(LambdaError):
    """What the request would store passes one of its project's quotas (functions, bytes)."""

    title = "Quota exceeded"


class QuotaBusy(QuotaExceeded):
    """The project already runs as much at once as its quota allows: try again later."""

    title = "Quota in use"
