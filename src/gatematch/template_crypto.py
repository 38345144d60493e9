"""Encryption of templates at rest: AES-256-GCM with a key from the environment.

Templates are biometric data; a stolen store directory should not yield them. The associated data binds each
ciphertext to its gallery id and version, so a blob copied into another gallery (or an old version replayed in
place of a new one) fails authentication instead of decrypting. A wrong key always fails the GCM tag check:
it can never produce garbage templates and therefore never garbage search results.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gatematch.errors import TemplateKeyError

ENV_TEMPLATE_KEY = "GATEMATCH_TEMPLATE_KEY"
NONCE_BYTES = 12
MAGIC = b"GMT1"  # format marker, so a plaintext file is never mistaken for a ciphertext


def generate_key() -> str:
    """A fresh key in the form the environment variable expects (base64 of 32 random bytes)."""
    return base64.b64encode(AESGCM.generate_key(bit_length=256)).decode("ascii")


@dataclass(frozen=True, repr=False)
class TemplateKey:
    """A 32-byte AES key; repr never shows it."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != 32:
            raise TemplateKeyError(f"template key must be 32 bytes, got {len(self.raw)}")

    def __repr__(self) -> str:
        return "TemplateKey(***)"

    @classmethod
    def from_base64(cls, text: str) -> TemplateKey:
        try:
            raw = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise TemplateKeyError(f"{ENV_TEMPLATE_KEY} is not valid base64") from None
        return cls(raw)

    @classmethod
    def from_env(cls) -> TemplateKey | None:
        """The key from $GATEMATCH_TEMPLATE_KEY, or None when it is unset (templates stay in plaintext)."""
        text = os.environ.get(ENV_TEMPLATE_KEY, "")
        return cls.from_base64(text) if text.strip() else None

    def encrypt(self, plaintext: bytes, associated: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return MAGIC + nonce + AESGCM(self.raw).encrypt(nonce, plaintext, associated)

    def decrypt(self, blob: bytes, associated: bytes) -> bytes:
        if not is_encrypted(blob):
            raise TemplateKeyError("blob is not an encrypted template file")
        nonce = blob[len(MAGIC) : len(MAGIC) + NONCE_BYTES]
        try:
            return AESGCM(self.raw).decrypt(nonce, blob[len(MAGIC) + NONCE_BYTES :], associated)
        except InvalidTag:
            raise TemplateKeyError(
                f"templates cannot be decrypted: wrong {ENV_TEMPLATE_KEY}, or the file was altered"
            ) from None


def is_encrypted(blob: bytes) -> bool:
    return blob.startswith(MAGIC)
