"""Domain errors -> gRPC status codes, in one table.

Servicers never pick status codes themselves: they let typed errors from gatematch.errors propagate and this
table decides. A subclass without its own row inherits its nearest ancestor's code (the MRO is walked).
Anything that is not a GatematchError is a bug: INTERNAL, with a message that leaks nothing.

A typed error's message is written to name no filesystem path and quote no library's exception text (that goes
in its `detail`, logged here and never sent); as a last guard, anything shaped like an absolute path in a
message is replaced before it leaves the server.
"""

from __future__ import annotations

import logging
import re
from typing import NoReturn

import grpc

from gatematch import errors

log = logging.getLogger(__name__)


STATUS_BY_ERROR: dict[type[errors.GatematchError], grpc.StatusCode] = {
    errors.GatematchError: grpc.StatusCode.UNKNOWN,
    errors.BadImageError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.ImageTooLargeError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NoFaceError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.ManifestError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.ConfigError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.DatasetError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.MetricInputError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.GalleryNotFoundError: grpc.StatusCode.NOT_FOUND,
    errors.GalleryExpiredError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.GalleryExportError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.WrongPackError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.CardError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.PackError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.CalibrationError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ModelError: grpc.StatusCode.UNAVAILABLE,
    errors.GalleryStoreError: grpc.StatusCode.UNAVAILABLE,
    errors.GalleryDamagedError: grpc.StatusCode.DATA_LOSS,
    errors.PlaintextGalleryError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.RetentionError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.AuditLogError: grpc.StatusCode.UNAVAILABLE,
    errors.TemplateKeyError: grpc.StatusCode.UNAVAILABLE,
    errors.MissingKeyError: grpc.StatusCode.UNAVAILABLE,
    errors.BudgetExceededError: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.AuthenticationError: grpc.StatusCode.UNAUTHENTICATED,
    errors.AuthorizationError: grpc.StatusCode.PERMISSION_DENIED,
    errors.RequestError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.CapacityError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.TimeLimitError: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.AmbiguousFlightError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.GalleryConflictError: grpc.StatusCode.ABORTED,
    errors.TravelerNotFoundError: grpc.StatusCode.NOT_FOUND,
    errors.AssignmentNotFoundError: grpc.StatusCode.NOT_FOUND,
}

INTERNAL_MESSAGE = "internal error; the server log has the details"
# A file:// URL, or a slash no word, dot, colon or slash precedes (not a URL's //host, not "1/2" or "and/or")
# starting two or more path components, or a well-known top folder: /var/lib/gatematch/x, /home/a, /tmp.
_PATH = re.compile(
    r"file://[^\s'\"]*"
    r"|(?<![\w.:/])/(?:[\w.@+-]+/)+[\w.@+-]*"
    r"|(?<![\w.:/])/(?:home|root|var|tmp|etc|srv|opt|mnt|usr|data)\b"
)
REDACTED_PATH = "<path>"


def remote_message(text: str) -> str:
    """A message as it may leave the server: without anything shaped like a filesystem path."""
    return _PATH.sub(REDACTED_PATH, text)


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and client-facing message for an exception raised while serving a call."""
    if isinstance(exc, errors.GatematchError):
        for cls in type(exc).__mro__:
            if cls in STATUS_BY_ERROR:
                return STATUS_BY_ERROR[cls], remote_message(str(exc)) or cls.__name__
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE


def abort(context: grpc.ServicerContext, exc: BaseException) -> NoReturn:
    """End the call with the status mapped from `exc` (logging bugs with their traceback)."""
    code, message = status_for(exc)
    if code is grpc.StatusCode.INTERNAL:
        log.error("unexpected error serving a call", exc_info=exc)
    elif isinstance(exc, errors.GatematchError) and exc.detail:
        log.warning("call refused", extra={"status": code.name, "reason": exc.describe()})
    context.abort(code, message)
