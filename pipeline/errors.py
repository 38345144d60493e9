"""Typed domain errors.

Every failure a caller can cause has its own type, so the CLI and the gRPC layer can each map it in one place
(exit code / status code) without parsing messages. `GatematchError` is never raised itself.
"""

from __future__ import annotations


class GatematchError(Exception):
    """Base of every error gatematch raises on purpose; its message is meant for the operator."""


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
