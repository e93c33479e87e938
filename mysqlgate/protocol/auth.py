"""Auth plugins: compute and verify scrambles.

The only module that imports PyMySQL's private auth helpers (pinned minor version;
tests/unit/test_auth.py imports each one so an upgrade that drops one fails loudly).
"""

from __future__ import annotations

import hashlib
import hmac
import os

from pymysql._auth import scramble_caching_sha2, scramble_native_password, sha2_rsa_encrypt

from .constants import CACHING_SHA2_PASSWORD, NATIVE_PASSWORD

__all__ = [
    "new_nonce", "scramble", "verify", "rsa_encrypt_password", "SUPPORTED_PLUGINS",
    "FAST_AUTH_OK", "PERFORM_FULL_AUTH", "REQUEST_PUBLIC_KEY",
]

SUPPORTED_PLUGINS = (NATIVE_PASSWORD, CACHING_SHA2_PASSWORD)

# caching_sha2_password's AuthMoreData bytes.
FAST_AUTH_OK = 3
PERFORM_FULL_AUTH = 4
REQUEST_PUBLIC_KEY = b"\x02"


def new_nonce() -> bytes:
    """20 random bytes, none NUL or '$' (clients treat the nonce as a C string)."""
    out = bytearray()
    while len(out) < 20:
        for b in os.urandom(32):
            c = b & 0x7F  # 7-bit, as servers do
            if c not in (0, 0x24) and len(out) < 20:
                out.append(c)
    return bytes(out)


def scramble(plugin: str, password: bytes, nonce: bytes) -> bytes:
    """What a client sends for `plugin` given the server's nonce."""
    if not password:
        return b""
    if plugin == NATIVE_PASSWORD:
        return bytes(scramble_native_password(password, nonce))
    if plugin == CACHING_SHA2_PASSWORD:
        return bytes(scramble_caching_sha2(password, nonce))
    raise ValueError(f"unsupported auth plugin {plugin!r}")


def verify(plugin: str, password: bytes, nonce: bytes, response: bytes) -> bool:
    """Whether `response` proves knowledge of `password` for our nonce."""
    if plugin not in SUPPORTED_PLUGINS:
        return False
    expected = scramble(plugin, password, nonce)
    return hmac.compare_digest(expected, response)


def rsa_encrypt_password(password: bytes, nonce: bytes, public_key_pem: bytes) -> bytes:
    """caching_sha2 full auth without TLS: the password XOR nonce, RSA-OAEP encrypted."""
    return bytes(sha2_rsa_encrypt(password, nonce, public_key_pem))


def password_digest(password: bytes) -> str:
    """A stable, non-reversible fingerprint for logs and comparisons."""
    return hashlib.sha256(password).hexdigest()[:12]
