"""upstream_login.py: mysqlgate's own login to the upstream server, packet by packet.

The integration tests log in to real MariaDB and MySQL servers with both plugins; here
each branch of the conversation is driven on its own, including those a test server
rarely takes (a switch to a plugin mysqlgate lacks, caching_sha2's RSA exchange)."""

from __future__ import annotations

import hashlib
import os
import ssl
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from mysqlgate.config import Upstream
from mysqlgate.errors import ServerError, UpstreamAuthError, UpstreamUnavailable
from mysqlgate.protocol import auth
from mysqlgate.protocol.constants import CACHING_SHA2_PASSWORD, CLIENT, NATIVE_PASSWORD
from mysqlgate.protocol.messages import ERR, AuthSwitchRequest, Handshake, HandshakeResponse
from mysqlgate.upstream_login import BASE_CAPABILITIES, AuthConversation, plan_login, tls_context

NONCE = b"abcdefghij0123456789"
OK = b"\x00\x00\x00\x02\x00\x00\x00"
PASSWORD = b"s3cret"


def upstream(**changes: object) -> Upstream:
    values: dict[str, object] = dict(
        user="app", password=PASSWORD.decode(), host="db.example", port=3306,
        unix_socket=None, database=None, ssl_mode="disabled", ssl_ca=None, connect_timeout=5.0,
    )
    values.update(changes)
    return Upstream(**values)  # type: ignore[arg-type]


def handshake(capabilities: int = BASE_CAPABILITIES | CLIENT.SSL | CLIENT.CONNECT_WITH_DB,
              plugin: str = NATIVE_PASSWORD) -> Handshake:
    return Handshake(b"9.7.0", 7, NONCE, capabilities, 255, 2, plugin)


def conversation(plugin: str = NATIVE_PASSWORD, secure: bool = False) -> AuthConversation:
    return AuthConversation("app", PASSWORD, plugin, NONCE, secure)


# -- the handshake response ----------------------------------------------------------


def test_the_response_answers_the_greetings_nonce_with_its_plugin() -> None:
    plan = plan_login(handshake(plugin=CACHING_SHA2_PASSWORD), upstream(), 0, 45)
    response = HandshakeResponse.parse(plan.response)
    assert response.user == b"app"
    assert response.auth_plugin == CACHING_SHA2_PASSWORD
    assert response.auth_response == auth.scramble(CACHING_SHA2_PASSWORD, PASSWORD, NONCE)
    assert response.charset == 45
    assert not plan.tls and plan.ssl_request == b""


def test_a_plugin_mysqlgate_lacks_is_answered_as_native_until_the_server_switches() -> None:
    plan = plan_login(handshake(plugin="client_ed25519"), upstream(), 0, 45)
    assert HandshakeResponse.parse(plan.response).auth_plugin == NATIVE_PASSWORD
    assert plan.conversation.plugin == NATIVE_PASSWORD


def test_flags_asked_are_those_the_server_offers() -> None:
    offered = BASE_CAPABILITIES & ~CLIENT.SESSION_TRACK
    plan = plan_login(handshake(offered), upstream(), CLIENT.FOUND_ROWS, 45)
    assert not plan.capabilities & CLIENT.SESSION_TRACK  # not offered
    assert not plan.capabilities & CLIENT.FOUND_ROWS  # the client's flag, not offered
    plan = plan_login(handshake(BASE_CAPABILITIES | CLIENT.FOUND_ROWS), upstream(),
                      CLIENT.FOUND_ROWS, 45)
    assert plan.capabilities & CLIENT.FOUND_ROWS


def test_a_database_in_the_url_is_asked_for_at_login() -> None:
    plan = plan_login(handshake(), upstream(database="shop"), 0, 45)
    assert plan.capabilities & CLIENT.CONNECT_WITH_DB
    assert HandshakeResponse.parse(plan.response).database == b"shop"
    plan = plan_login(handshake(), upstream(), 0, 45)
    assert not plan.capabilities & CLIENT.CONNECT_WITH_DB


@pytest.mark.parametrize("mode", ["preferred", "required", "verify_ca", "verify_identity"])
def test_tls_when_offered_with_an_ssl_request_first(mode: str) -> None:
    plan = plan_login(handshake(), upstream(ssl_mode=mode), 0, 45)
    assert plan.tls and plan.capabilities & CLIENT.SSL
    request = plan.ssl_request
    assert len(request) == 32  # capabilities, max packet, charset, filler: no user
    assert int.from_bytes(request[:4], "little") == plan.capabilities


@pytest.mark.parametrize("mode", ["required", "verify_ca", "verify_identity"])
def test_tls_required_but_not_offered_is_refused(mode: str) -> None:
    with pytest.raises(UpstreamUnavailable, match=f"does not offer TLS.*{mode}"):
        plan_login(handshake(BASE_CAPABILITIES), upstream(ssl_mode=mode), 0, 45)


def test_connections_share_one_tls_context_per_mode_and_ca_file(tmp_path: Path) -> None:
    # Each context loads the CA store (tens of ms, about a megabyte): made once.
    first, name = tls_context(upstream(ssl_mode="preferred"))
    again, _ = tls_context(upstream(ssl_mode="preferred", host="other.example"))
    assert again is first and name is None
    assert first.verify_mode == ssl.CERT_NONE and not first.check_hostname
    identity, name = tls_context(upstream(ssl_mode="verify_identity"))
    assert identity is not first and identity.check_hostname and name == "db.example"
    verify_ca, _ = tls_context(upstream(ssl_mode="verify_ca"))
    assert verify_ca.verify_mode == ssl.CERT_REQUIRED and not verify_ca.check_hostname
    # A CA file replaced on disk (a rotated certificate) is read again.
    ca = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca))
    with_ca, _ = tls_context(upstream(ssl_mode="verify_ca", ssl_ca=str(ca)))
    assert tls_context(upstream(ssl_mode="verify_ca", ssl_ca=str(ca)))[0] is with_ca
    os.utime(ca, ns=(1, 1))
    assert tls_context(upstream(ssl_mode="verify_ca", ssl_ca=str(ca)))[0] is not with_ca


def test_preferred_tls_not_offered_goes_on_in_the_clear() -> None:
    plan = plan_login(handshake(BASE_CAPABILITIES), upstream(ssl_mode="preferred"), 0, 45)
    assert not plan.tls and not plan.capabilities & CLIENT.SSL


def test_no_tls_over_a_unix_socket_which_counts_as_secure() -> None:
    plan = plan_login(handshake(plugin=CACHING_SHA2_PASSWORD),
                      upstream(ssl_mode="required", unix_socket="/run/mysqld.sock"), 0, 45)
    assert not plan.tls
    plan.conversation.answer(b"\x01" + bytes((auth.FAST_AUTH_OK,)))
    full = plan.conversation.answer(b"\x01" + bytes((auth.PERFORM_FULL_AUTH,)))
    assert full == PASSWORD + b"\x00"


# -- the conversation ---------------------------------------------------------------


def test_ok_ends_it() -> None:
    talk = conversation()
    assert talk.answer(OK) is None
    assert talk.done


def test_a_refused_password_names_the_account_and_the_setting() -> None:
    talk = conversation()
    refusal = ERR(1045, "Access denied for user 'app'@'localhost'", "28000").build()
    with pytest.raises(UpstreamAuthError, match=r"'app'.*1045.*upstream\.password"):
        talk.answer(refusal)
    assert not talk.done


def test_other_errors_are_the_servers_own() -> None:
    with pytest.raises(ServerError) as raised:
        conversation().answer(ERR(1226, "User 'app' has exceeded ...", "42000").build())
    assert raised.value.err.code == 1226


def test_a_plugin_switch_answers_the_new_nonce_and_is_remembered() -> None:
    talk = conversation(CACHING_SHA2_PASSWORD)
    new_nonce = b"ZYXWVUTSRQPONMLKJIHG"
    reply = talk.answer(AuthSwitchRequest(NATIVE_PASSWORD, new_nonce).build())
    assert reply == auth.scramble(NATIVE_PASSWORD, PASSWORD, new_nonce)
    assert (talk.plugin, talk.nonce) == (NATIVE_PASSWORD, new_nonce)  # for COM_CHANGE_USER
    assert not talk.done


def test_a_switch_to_a_plugin_mysqlgate_lacks_is_refused_clearly() -> None:
    with pytest.raises(UpstreamAuthError, match="'client_ed25519'.*not support"):
        conversation().answer(AuthSwitchRequest("client_ed25519", NONCE).build())


def test_caching_sha2_fast_path_waits_for_the_ok() -> None:
    talk = conversation(CACHING_SHA2_PASSWORD)
    assert talk.answer(b"\x01" + bytes((auth.FAST_AUTH_OK,))) is None
    assert not talk.done
    talk.answer(OK)
    assert talk.done


def test_caching_sha2_full_auth_sends_the_password_in_clear_only_when_secure() -> None:
    talk = conversation(CACHING_SHA2_PASSWORD, secure=True)
    assert talk.answer(b"\x01" + bytes((auth.PERFORM_FULL_AUTH,))) == PASSWORD + b"\x00"


def test_caching_sha2_full_auth_in_the_clear_encrypts_with_the_servers_key() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    talk = conversation(CACHING_SHA2_PASSWORD, secure=False)
    assert talk.answer(b"\x01" + bytes((auth.PERFORM_FULL_AUTH,))) == auth.REQUEST_PUBLIC_KEY
    encrypted = talk.answer(b"\x01" + pem)
    assert encrypted is not None
    clear = key.decrypt(encrypted, padding.OAEP(mgf=padding.MGF1(hashes.SHA1()),
                                                algorithm=hashes.SHA1(), label=None))
    # The password with its NUL, XOR the nonce: never the password itself on the wire.
    expected = bytes(b ^ NONCE[i % len(NONCE)] for i, b in enumerate(PASSWORD + b"\x00"))
    assert clear == expected
    assert PASSWORD not in encrypted
    talk.answer(OK)
    assert talk.done


def test_an_unexpected_packet_is_a_clear_error() -> None:
    with pytest.raises(UpstreamUnavailable, match="unexpected packet during upstream login"):
        conversation(NATIVE_PASSWORD).answer(b"\x01\x03")  # caching_sha2 news to native
    with pytest.raises(UpstreamUnavailable):
        conversation().answer(b"")


def test_the_nonce_is_what_the_proof_answers() -> None:
    # A sanity check of the fixture: native proofs differ per nonce, so the tests above
    # that compare replies do tell the two nonces apart.
    assert auth.scramble(NATIVE_PASSWORD, PASSWORD, NONCE) != \
        auth.scramble(NATIVE_PASSWORD, PASSWORD, hashlib.sha1(NONCE).digest())
