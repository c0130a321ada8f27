"""Secret encryption at rest (provider API keys and other credentials).

Fernet (AES-128-CBC + HMAC-SHA256) with a key ring: ``SPARKOPS_ENCRYPTION_KEYS`` lists keys,
newest first. New secrets are encrypted with the first; any key in the ring decrypts, so a key is
rotated by putting a new one first, running ``manage.py rotate_secrets``, then dropping the old.
"""

import base64
import hashlib
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class DecryptionError(Exception):
    """The ciphertext was made with a key no longer in the ring, or was tampered with."""


def _fernet_key(key: str) -> bytes:
    # Accept a real Fernet key as is; derive one from any other string (e.g. local SECRET_KEY).
    try:
        if len(base64.urlsafe_b64decode(key.encode())) == 32:
            return key.encode()
    except ValueError:
        pass
    return base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest())


@cache
def _ring(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(_fernet_key(k)) for k in keys])


def _current_ring() -> MultiFernet:
    keys = tuple(settings.SPARKOPS_ENCRYPTION_KEYS) or (settings.SECRET_KEY,)
    return _ring(keys)


def encrypt(plaintext: str) -> str:
    return _current_ring().encrypt(plaintext.encode()).decode()


UNKNOWN_KEY = "Cannot decrypt: the key that encrypted this is not in SPARKOPS_ENCRYPTION_KEYS."


def decrypt(ciphertext: str) -> str:
    try:
        return _current_ring().decrypt(ciphertext.encode()).decode()
    except InvalidToken as exc:
        raise DecryptionError(UNKNOWN_KEY) from exc


def rotate(ciphertext: str) -> str:
    """Re-encrypt under the newest key. Raises DecryptionError, like decrypt."""
    try:
        return _current_ring().rotate(ciphertext.encode()).decode()
    except InvalidToken as exc:
        raise DecryptionError(UNKNOWN_KEY) from exc


def generate_key() -> str:
    return Fernet.generate_key().decode()
