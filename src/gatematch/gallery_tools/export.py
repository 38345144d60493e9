"""Gallery exports: metadata in the clear, templates only encrypted to a recipient's public key.

`gatematch gallery export` writes the gallery's metadata (pack, travelers, template provenance, enrollment
failures). With `--with-templates --recipient KEY.pem` the templates go in the same file sealed for that
recipient alone: an ephemeral X25519 key agreement with the recipient's public key, HKDF-SHA256, AES-256-GCM,
the gallery id, version and matrix shape as associated data (so a sealed block moved into another export fails
to open). gatematch never writes templates in plaintext; whoever holds the recipient's private key opens them
with `open_export`. The recipient makes their key pair with OpenSSL:
    openssl genpkey -algorithm X25519 -out recipient.key && openssl pkey -in recipient.key -pubout -out recipient.pub
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gatematch.errors import GalleryExportError
from gatematch.gallery import iso
from gatematch.gallery_store import GalleryStore

SCHEME = "X25519-HKDF-SHA256-AES-256-GCM"
_RAW = {"encoding": serialization.Encoding.Raw, "format": serialization.PublicFormat.Raw}


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise GalleryExportError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None


def load_recipient(path: Path) -> X25519PublicKey:
    """The recipient's X25519 public key (PEM)."""
    try:
        key = serialization.load_pem_public_key(_read(path, "recipient key"))
    except ValueError:
        raise GalleryExportError(f"recipient key {path} is not a PEM public key") from None
    if not isinstance(key, X25519PublicKey):
        raise GalleryExportError(
            f"recipient key {path} is not an X25519 key (openssl genpkey -algorithm X25519)"
        )
    return key


def load_private(path: Path) -> X25519PrivateKey:
    """The recipient's X25519 private key (PEM, unencrypted)."""
    try:
        key = serialization.load_pem_private_key(_read(path, "private key"), password=None)
    except (ValueError, TypeError):
        raise GalleryExportError(f"private key {path} is not an unencrypted PEM private key") from None
    if not isinstance(key, X25519PrivateKey):
        raise GalleryExportError(f"private key {path} is not an X25519 key")
    return key


def recipient_id(key: X25519PublicKey) -> str:
    """A short fingerprint of a recipient key (what the export and the audit trail name)."""
    return hashlib.sha256(key.public_bytes(**_RAW)).hexdigest()[:16]


def _aes_key(shared: bytes, ephemeral: bytes, recipient: bytes) -> bytes:
    info = b"gatematch-export/1" + ephemeral + recipient
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)


def _associated(gallery_id: str, version: int, shape: tuple[int, int]) -> bytes:
    return f"gatematch-export:{gallery_id}:v{version}:{shape[0]}x{shape[1]}".encode()


def seal_templates(
    vectors: np.ndarray, recipient: X25519PublicKey, gallery_id: str, version: int
) -> dict[str, Any]:
    """The templates (rows in provenance order, little-endian float32) sealed for `recipient`."""
    matrix = np.ascontiguousarray(vectors, dtype="<f4")
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = ephemeral.public_key().public_bytes(**_RAW)
    recipient_public = recipient.public_bytes(**_RAW)
    key = _aes_key(ephemeral.exchange(recipient), ephemeral_public, recipient_public)
    nonce = os.urandom(12)
    shape = (int(matrix.shape[0]), int(matrix.shape[1]))
    sealed = AESGCM(key).encrypt(nonce, matrix.tobytes(), _associated(gallery_id, version, shape))
    return {
        "scheme": SCHEME,
        "recipient": recipient_id(recipient),
        "ephemeral_public_key": base64.b64encode(ephemeral_public).decode("ascii"),
        "nonce": base64.b64encode(nonce).decode("ascii"),
        "shape": list(shape),
        "ciphertext": base64.b64encode(sealed).decode("ascii"),
    }


def export_document(
    store: GalleryStore, gallery_id: str, recipient: X25519PublicKey | None = None
) -> dict[str, Any]:
    """A gallery's export: metadata, and the templates sealed for `recipient` when one is given. An expired
    gallery cannot be exported (the store refuses to read its travelers)."""
    info = store.info(gallery_id)
    provenance = store.provenance(gallery_id)
    document: dict[str, Any] = {
        **info.as_dict(),
        "travelers": [t.__dict__ for t in store.travelers(gallery_id)],
        "templates": [
            {**p.__dict__, "created_at": iso(p.created_at), "quality": p.quality} for p in provenance
        ],
        "enrollment_failures": [f.__dict__ for f in store.failures(gallery_id)],
    }
    if recipient is not None:
        vectors = store.load(gallery_id).vectors()
        document["sealed_templates"] = seal_templates(vectors, recipient, gallery_id, info.version)
    return document


def open_export(path: Path, private_key: X25519PrivateKey) -> tuple[dict[str, Any], np.ndarray]:
    """What a recipient reads from an export: its metadata and the templates (one row per entry of
    "templates"), decrypted with their private key; GalleryExportError when the file is not for this key or
    was altered."""
    try:
        document = json.loads(_read(path, "export"))
        sealed = document["sealed_templates"]
        if sealed["scheme"] != SCHEME:
            raise GalleryExportError(f"export {path} uses scheme {sealed['scheme']!r}, not {SCHEME}")
        ephemeral_public = base64.b64decode(sealed["ephemeral_public_key"], validate=True)
        nonce = base64.b64decode(sealed["nonce"], validate=True)
        ciphertext = base64.b64decode(sealed["ciphertext"], validate=True)
        rows, dim = (int(v) for v in sealed["shape"])
        gallery_id, version = str(document["gallery_id"]), int(document["version"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise GalleryExportError(f"export {path} holds no sealed templates in the expected form") from None
    recipient_public = private_key.public_key().public_bytes(**_RAW)
    if sealed["recipient"] != recipient_id(private_key.public_key()):
        raise GalleryExportError(f"export {path} is sealed for recipient {sealed['recipient']}, not this key")
    try:
        shared = private_key.exchange(X25519PublicKey.from_public_bytes(ephemeral_public))
        key = _aes_key(shared, ephemeral_public, recipient_public)
        plain = AESGCM(key).decrypt(nonce, ciphertext, _associated(gallery_id, version, (rows, dim)))
    except (InvalidTag, ValueError):
        raise GalleryExportError(f"export {path}: the sealed templates were altered") from None
    return document, np.frombuffer(plain, dtype="<f4").reshape(rows, dim).astype(np.float32)
