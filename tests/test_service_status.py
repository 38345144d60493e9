"""Every domain error type has a gRPC status, chosen in one table."""

from __future__ import annotations

import inspect

import grpc
import pytest

from gatematch import errors
from gatematch.service.status import INTERNAL_MESSAGE, STATUS_BY_ERROR, status_for


def test_every_error_type_has_its_own_row() -> None:
    declared = {
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.GatematchError) and cls.__module__ == errors.__name__
    }
    assert declared - set(STATUS_BY_ERROR) == set()


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (errors.BadImageError("corrupt JPEG"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.ImageTooLargeError("too many pixels"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.GalleryNotFoundError("no gallery BA117"), grpc.StatusCode.NOT_FOUND),
        (errors.GalleryExpiredError("expired"), grpc.StatusCode.FAILED_PRECONDITION),
        (errors.WrongPackError("other embedder"), grpc.StatusCode.FAILED_PRECONDITION),
        (errors.AuthenticationError("who?"), grpc.StatusCode.UNAUTHENTICATED),
        (errors.AuthorizationError("not your flight"), grpc.StatusCode.PERMISSION_DENIED),
        (errors.BudgetExceededError("late"), grpc.StatusCode.DEADLINE_EXCEEDED),
        (errors.ModelError("missing model"), grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_codes_and_messages(exc: errors.GatematchError, code: grpc.StatusCode) -> None:
    assert status_for(exc) == (code, str(exc))


def test_unlisted_subclass_inherits_its_parent() -> None:
    class OddImage(errors.BadImageError):
        pass

    assert status_for(OddImage("odd")) == (grpc.StatusCode.INVALID_ARGUMENT, "odd")


def test_bugs_are_internal_and_leak_nothing() -> None:
    assert status_for(KeyError("secret/path/to/store")) == (grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (
            errors.PlaintextGalleryError("gallery X is stored in plaintext"),
            grpc.StatusCode.FAILED_PRECONDITION,
        ),
        (errors.RetentionError("retention 48 h is over the maximum"), grpc.StatusCode.INVALID_ARGUMENT),
        (
            errors.MissingKeyError("3f2a9c0e1b7d4a55", "key 3f2a9c0e1b7d4a55 missing"),
            grpc.StatusCode.UNAVAILABLE,
        ),
    ],
)
def test_data_at_rest_errors_have_their_codes(exc: errors.GatematchError, code: grpc.StatusCode) -> None:
    assert status_for(exc) == (code, str(exc))


@pytest.mark.parametrize(
    "message",
    [
        "gallery store /var/lib/gatematch/galleries cannot be opened",
        "cannot read image /home/agent/photos/p001/a.jpg: No such file or directory",
        "photo 'file:///srv/manifests/p001.jpg' lies outside",
        "index file at /tmp/x",
    ],
)
def test_no_filesystem_path_leaves_the_server(message: str) -> None:
    code, sent = status_for(errors.GalleryStoreError(message, "the detail /var/log/x stays local"))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert "/var" not in sent and "/home" not in sent and "/srv" not in sent and "/tmp" not in sent
    assert "<path>" in sent and "detail" not in sent


def test_messages_without_paths_pass_unchanged() -> None:
    for text in ("raw image 640x480x3 needs 921600 bytes", "3/4 frames, and/or", "postgresql://gm@db:5432/g"):
        assert status_for(errors.RequestError(text))[1] == text
