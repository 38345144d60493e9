"""Encryption of templates at rest: AES-256-GCM under keys that have ids, several at once.

Templates are biometric data; a stolen store directory or database dump should not yield them. Every stored
index is sealed with one key and carries that key's id in its header, so a keyring holding several keys can
open galleries sealed under older keys while new versions are sealed under the newest one: that is what lets
`gatematch keys rotate` re-encrypt galleries while the service keeps serving. The associated data binds each
ciphertext to its gallery id and version, so a blob copied into another gallery (or an old version replayed in
place of a new one) fails authentication instead of decrypting. A wrong key always fails the GCM tag check:
it can never produce garbage templates and therefore never garbage search results.

Keys come from a `KeyProvider`: a key file (gatematch.keyfile), the environment variable GATEMATCH_TEMPLATE_KEY
(one key, an override), or anything a KMS adapter implements with the same three methods.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gatematch.errors import MissingKeyError, TemplateKeyError

ENV_TEMPLATE_KEY = "GATEMATCH_TEMPLATE_KEY"
NONCE_BYTES = 12
MAGIC = b"GMT2"  # format marker and version, so a plaintext file is never mistaken for a ciphertext
KEY_ID_CHARS = 16
KEY_ID = re.compile(rf"[0-9a-f]{{{KEY_ID_CHARS}}}")
HEADER_BYTES = len(MAGIC) + KEY_ID_CHARS + NONCE_BYTES


def generate_key() -> str:
    """A fresh key in the form the environment variable and the key file hold (base64 of 32 random bytes)."""
    return base64.b64encode(AESGCM.generate_key(bit_length=256)).decode("ascii")


@dataclass(frozen=True, repr=False)
class TemplateKey:
    """A 32-byte AES key; repr never shows it. Its id is a fingerprint (derived, so the same key always has
    the same id wherever it is configured, and the id reveals nothing of the key)."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != 32:
            raise TemplateKeyError(f"template key must be 32 bytes, got {len(self.raw)}")

    def __repr__(self) -> str:
        return f"TemplateKey({self.key_id})"

    @property
    def key_id(self) -> str:
        return hashlib.sha256(b"gatematch-template-key-id:" + self.raw).hexdigest()[:KEY_ID_CHARS]

    @classmethod
    def from_base64(cls, text: str, what: str = ENV_TEMPLATE_KEY) -> TemplateKey:
        try:
            raw = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise TemplateKeyError(f"{what} is not valid base64") from None
        return cls(raw)

    @classmethod
    def from_env(cls) -> TemplateKey | None:
        """The key from $GATEMATCH_TEMPLATE_KEY, or None when it is unset."""
        text = os.environ.get(ENV_TEMPLATE_KEY, "")
        return cls.from_base64(text) if text.strip() else None

    def encrypt(self, plaintext: bytes, associated: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return MAGIC + self.key_id.encode() + nonce + AESGCM(self.raw).encrypt(nonce, plaintext, associated)

    def decrypt(self, blob: bytes, associated: bytes) -> bytes:
        if sealed_key_id(blob) != self.key_id:
            raise TemplateKeyError(f"templates are sealed under key {sealed_key_id(blob)}, not {self.key_id}")
        nonce = blob[len(MAGIC) + KEY_ID_CHARS : HEADER_BYTES]
        try:
            return AESGCM(self.raw).decrypt(nonce, blob[HEADER_BYTES:], associated)
        except InvalidTag:
            raise TemplateKeyError(
                f"templates cannot be decrypted with key {self.key_id}: the key is wrong or the data was altered"
            ) from None


def is_encrypted(blob: bytes) -> bool:
    return blob.startswith(MAGIC)


def sealed_key_id(blob: bytes) -> str:
    """The id of the key a sealed blob needs; TemplateKeyError when the blob is not one of ours."""
    key_id = blob[len(MAGIC) : len(MAGIC) + KEY_ID_CHARS].decode("ascii", "replace")
    if not is_encrypted(blob) or len(blob) < HEADER_BYTES or not KEY_ID.fullmatch(key_id):
        raise TemplateKeyError("the data is not a sealed template file")
    return key_id


class KeyProvider(Protocol):
    """Where template keys come from. `current()` seals new data; `get()` opens data sealed under any key
    still held. A KMS adapter implements these three methods (unwrapping data keys it keeps)."""

    def current(self) -> TemplateKey: ...

    def get(self, key_id: str) -> TemplateKey:
        """The key with this id; MissingKeyError when it is not (or no longer) held."""
        ...

    def has(self, key_id: str) -> bool:
        """Whether `get(key_id)` would succeed now (a file-backed provider re-reads its file first)."""
        ...


class Keyring:
    """Keys held in memory, oldest first; the newest seals. What a key file or the environment yields."""

    def __init__(self, keys: Iterable[TemplateKey]):
        self.keys = tuple(keys)
        if not self.keys:
            raise TemplateKeyError("a keyring needs at least one key")
        self._by_id = {key.key_id: key for key in self.keys}

    @classmethod
    def of(cls, keys: KeyProvider | TemplateKey | None) -> KeyProvider | None:
        """A provider for what a caller passed: a provider as is, a single key as a keyring of one."""
        return cls([keys]) if isinstance(keys, TemplateKey) else keys

    def current(self) -> TemplateKey:
        return self.keys[-1]

    def get(self, key_id: str) -> TemplateKey:
        key = self._by_id.get(key_id)
        if key is None:
            raise MissingKeyError(key_id, f"key {key_id} is not among the template keys held")
        return key

    def has(self, key_id: str) -> bool:
        return key_id in self._by_id

    def ids(self) -> tuple[str, ...]:
        return tuple(self._by_id)


def seal(keys: KeyProvider, plaintext: bytes, associated: bytes) -> bytes:
    return keys.current().encrypt(plaintext, associated)


def unseal(keys: KeyProvider, blob: bytes, associated: bytes) -> bytes:
    return keys.get(sealed_key_id(blob)).decrypt(blob, associated)
