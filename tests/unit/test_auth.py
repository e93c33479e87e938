"""auth.py: nonces, scrambles and their verification; PyMySQL's private helpers."""

from __future__ import annotations

import ast
import hashlib
import importlib
import inspect
from collections.abc import Callable, Iterator

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from mysqlgate.protocol import auth
from mysqlgate.protocol.constants import CACHING_SHA2_PASSWORD, NATIVE_PASSWORD

PLUGINS = [NATIVE_PASSWORD, CACHING_SHA2_PASSWORD]
NONCE = bytes(range(1, 21))

# Every private name mysqlgate takes from PyMySQL (STYLE.md: aiomysql broke when PyMySQL
# removed a private function it used). Keep in step with mysqlgate/protocol/auth.py.
PYMYSQL_PRIVATE_NAMES = [
    ("pymysql._auth", "scramble_native_password"),
    ("pymysql._auth", "scramble_caching_sha2"),
    ("pymysql._auth", "sha2_rsa_encrypt"),
]


@pytest.mark.parametrize(("module", "name"), PYMYSQL_PRIVATE_NAMES)
def test_pymysql_private_name_exists(module: str, name: str) -> None:
    assert callable(getattr(importlib.import_module(module), name))


def test_the_private_name_list_is_complete() -> None:
    """Each name auth.py imports from a private PyMySQL module is in the list above."""
    tree = ast.parse(inspect.getsource(auth))
    used = {
        (node.module, alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pymysql")
        and any(part.startswith("_") for part in node.module.split("."))
        for alias in node.names
    }
    assert used
    assert used <= set(PYMYSQL_PRIVATE_NAMES)


def test_new_nonce_shape() -> None:
    nonces = {auth.new_nonce() for _ in range(200)}
    assert len(nonces) == 200
    for nonce in nonces:
        assert len(nonce) == 20
        assert b"\x00" not in nonce and b"$" not in nonce


def test_new_nonce_never_holds_nul_or_dollar_whatever_urandom_returns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def every_byte_value() -> Iterator[bytes]:
        while True:
            for start in range(0, 256, 32):
                yield bytes(range(start, start + 32))

    values = every_byte_value()
    monkeypatch.setattr(auth.os, "urandom", lambda n: next(values)[:n])
    for _ in range(32):  # covers every byte value urandom can return, several times
        nonce = auth.new_nonce()
        assert len(nonce) == 20
        assert 0 not in nonce, nonce
        assert 0x24 not in nonce, nonce  # '$' (0xA4 & 0x7F == 0x24)


def native_reference(password: bytes, nonce: bytes) -> bytes:
    """SHA1(password) XOR SHA1(nonce + SHA1(SHA1(password)))."""
    stage1 = hashlib.sha1(password).digest()
    mix = hashlib.sha1(nonce + hashlib.sha1(stage1).digest()).digest()
    return bytes(a ^ b for a, b in zip(stage1, mix, strict=True))


def caching_sha2_reference(password: bytes, nonce: bytes) -> bytes:
    """SHA256(password) XOR SHA256(SHA256(SHA256(password)) + nonce)."""
    p1 = hashlib.sha256(password).digest()
    mix = hashlib.sha256(hashlib.sha256(p1).digest() + nonce).digest()
    return bytes(a ^ b for a, b in zip(p1, mix, strict=True))


@pytest.mark.parametrize(
    ("plugin", "reference", "size"),
    [(NATIVE_PASSWORD, native_reference, 20), (CACHING_SHA2_PASSWORD, caching_sha2_reference, 32)],
)
@pytest.mark.parametrize("password", [b"secret", b"p\xc3\xa4ss w\x00rd", b"x" * 100])
def test_scramble_matches_the_documented_algorithm(
    plugin: str, reference: Callable[[bytes, bytes], bytes], size: int, password: bytes
) -> None:
    got = auth.scramble(plugin, password, NONCE)
    assert got == reference(password, NONCE)
    assert len(got) == size


@pytest.mark.parametrize("plugin", PLUGINS)
def test_verify(plugin: str) -> None:
    response = auth.scramble(plugin, b"secret", NONCE)
    assert auth.verify(plugin, b"secret", NONCE, response)
    assert not auth.verify(plugin, b"Secret", NONCE, response)
    assert not auth.verify(plugin, b"secret", NONCE[::-1], response)
    assert not auth.verify(plugin, b"secret", NONCE, response[:-1])
    assert not auth.verify(plugin, b"secret", NONCE, b"")


@pytest.mark.parametrize("plugin", PLUGINS)
def test_empty_password(plugin: str) -> None:
    assert auth.scramble(plugin, b"", NONCE) == b""
    assert auth.verify(plugin, b"", NONCE, b"")
    assert not auth.verify(plugin, b"", NONCE, auth.scramble(plugin, b"x", NONCE))


def test_unsupported_plugin() -> None:
    with pytest.raises(ValueError):
        auth.scramble("sha256_password", b"secret", NONCE)
    assert not auth.verify("sha256_password", b"", NONCE, b"")
    assert not auth.verify("mysql_clear_password", b"secret", NONCE, b"secret")


def test_rsa_encrypt_password() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    encrypted = auth.rsa_encrypt_password(b"secret", NONCE, pem)
    plain = key.decrypt(
        encrypted,
        padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(),
                     label=None),
    )
    # The password and its NUL, XOR the nonce (repeated as needed).
    assert bytes(c ^ NONCE[i % len(NONCE)] for i, c in enumerate(plain)) == b"secret\x00"


def test_password_digest() -> None:
    digest = auth.password_digest(b"secret")
    assert digest == hashlib.sha256(b"secret").hexdigest()[:12]
    assert auth.password_digest(b"other") != digest
