"""The one way this program encrypts data at rest: Fernet (AES-128-CBC + HMAC-SHA256).

Three things are sealed with it, each under its own key: ``enc:`` secret values in
the config (``config.secrets``), cached OAuth tokens (``oauth.cache``) and the
details kept for mail moved to an error folder (``incoming``). It sits in ``config``
because that is the lowest layer that seals.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.fernet import Fernet


def _fernet(key: bytes) -> Fernet:
    # cryptography's Rust bindings cost ~45 ms to import; plan, apply and validate
    # import this module but seal nothing unless the config holds an enc: value.
    from cryptography.fernet import Fernet

    return Fernet(key)


class SealError(Exception):
    """The key is not a Fernet key, or the sealed text is damaged or sealed under another key."""


def new_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def check_key(key: bytes | str) -> bytes:
    """``key`` as bytes if it is a usable Fernet key (32 url-safe base64 bytes); else SealError."""
    raw = key.encode() if isinstance(key, str) else key
    try:
        _fernet(raw)
    except (ValueError, TypeError):
        raise SealError("not a Fernet key (32 url-safe base64 bytes)") from None
    return raw


def seal(key: bytes | str, plaintext: bytes | str) -> str:
    data = plaintext.encode() if isinstance(plaintext, str) else plaintext
    return _fernet(check_key(key)).encrypt(data).decode()


def unseal(key: bytes | str, sealed: str) -> bytes:
    from cryptography.fernet import InvalidToken

    try:
        return _fernet(check_key(key)).decrypt(sealed.encode())
    except (InvalidToken, ValueError):
        raise SealError("wrong key or damaged value") from None
