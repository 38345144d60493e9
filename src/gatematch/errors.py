"""Typed domain errors.

Every failure a caller can cause has its own type, so the CLI and the gRPC layer can each map it in one place
(exit code / status code) without parsing messages. `GatematchError` is never raised itself.
"""

from __future__ import annotations


class GatematchError(Exception):
    """Base of every error gatematch raises on purpose.

    Its message may reach a remote client (gatematch.service.status sends it), so it names no filesystem path
    and quotes no library's exception text; what only the operator should see (a driver's message, a file
    name) goes in `detail`, which the command line prints and the server logs but never sends.
    """

    def __init__(self, message: str = "", detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail

    def describe(self) -> str:
        """The message with its local detail: what the command line prints and the server logs."""
        return f"{self} ({self.detail})" if self.detail else str(self)


class BadImageError(GatematchError):
    """The image bytes or array cannot be used: empty, corrupt, truncated, unsupported layout."""


class ImageTooLargeError(BadImageError):
    """The image exceeds the configured pixel or byte limit (checked before decoding)."""


class ModelError(GatematchError):
    """A model file is missing, fails its sha256 check, or does not match its card."""


class CardError(GatematchError):
    """A model card or pack definition is malformed or refers to something that does not exist."""


class PackError(CardError):
    """A pack combines models that cannot work together (e.g. a detector without landmarks + an embedder)."""


class NoFaceError(GatematchError):
    """No usable face was found where one was required."""


class ManifestError(GatematchError):
    """A flight manifest is malformed: the message names the file, line (or JSON path) and field at fault."""


class GalleryNotFoundError(GatematchError):
    """No gallery with that id exists in the store (never built, or already purged)."""


class GalleryExpiredError(GatematchError):
    """The gallery's retention period is over: it must not be searched and is due for purging."""


class WrongPackError(GatematchError):
    """A probe comes from a different embedder (name or sha256) than the one the gallery was built with."""


class TemplateKeyError(GatematchError):
    """Encrypted templates cannot be read: no key, a malformed key, or the wrong key."""


class MissingKeyError(TemplateKeyError):
    """Templates are sealed under a key id that is not (or no longer) among the keys held."""

    def __init__(self, key_id: str, message: str) -> None:
        super().__init__(message)
        self.key_id = key_id


class GalleryStoreError(GatematchError):
    """The gallery store on disk is inconsistent (a referenced index file is missing or unreadable)."""


class GalleryDamagedError(GalleryStoreError):
    """One gallery's stored version cannot be used (index missing, altered or unreadable): it is quarantined,
    the other galleries keep serving, and reloading the gallery replaces it."""


class PlaintextGalleryError(GalleryDamagedError):
    """A gallery stored in plaintext, found by a server that keeps templates only encrypted: quarantined like a
    damaged one until `gatematch keys rotate` encrypts it or it is loaded again."""


class RetentionError(GatematchError):
    """A gallery would be kept longer than the configured maximum after its departure, or its departure is
    further ahead than galleries may be built."""


class DatasetError(GatematchError, ValueError):
    """An evaluation data set file (e.g. an LFW pairs list) is malformed or inconsistent with its header."""


class MetricInputError(GatematchError, ValueError):
    """Scores, labels or targets given to an error-rate computation are empty, non-finite or inconsistent."""


class CalibrationError(GatematchError, ValueError):
    """A calibration table is malformed, or is asked for an operating point it cannot resolve."""


class ConfigError(GatematchError):
    """The service configuration (file, environment override or policy file) is malformed."""


class AuditLogError(GatematchError):
    """The audit trail cannot be written or read (a missing file, an unreachable audit table)."""


class BudgetExceededError(GatematchError):
    """The latency budget ran out (or would before the next stage could finish): the work was abandoned."""


class AuthenticationError(GatematchError):
    """The caller presented no credentials, or ones the service does not know."""


class AuthorizationError(GatematchError):
    """The caller is known but not allowed this call (wrong role, or a flight its gate is not assigned to)."""


class GalleryExportError(GatematchError):
    """A gallery export cannot be written where asked (the file exists, or templates were sent to a terminal)."""


class RequestError(GatematchError):
    """A request field the service cannot use (an id too long to audit, an impossible capture time, a load
    whose commit is missing or disagrees with what arrived)."""


class TimeLimitError(GatematchError):
    """A client's call went quiet or ran on past a server-side limit (stream_idle_s, load_idle_s, load_max_s)."""


class CapacityError(GatematchError):
    """The server is at a configured limit (max_streams): the client should retry later or elsewhere."""


class AmbiguousFlightError(GatematchError):
    """A frame names a flight that has several galleries in service (an arrival and a departure, or two dates)
    and does not say which: the server refuses to guess."""


class GalleryConflictError(GatematchError):
    """A gallery changed while a delta was being prepared on its previous version: nothing was written; the
    delta may be applied again to the new version."""


class TravelerNotFoundError(GatematchError):
    """A delta removes a traveler the gallery does not hold."""


class AssignmentNotFoundError(GatematchError):
    """No run-time gate assignment with that id exists."""
