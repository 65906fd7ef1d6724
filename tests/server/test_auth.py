"""SCRAM-SHA-256 and md5, sans-IO: known vectors and the exchanges' failure paths (pure)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
import subprocess
from pathlib import Path

import pytest

from server.pgwire import auth, tls

# RFC 7677 section 3: user "user", password "pencil".
RFC_CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
RFC_SERVER_FIRST = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
RFC_CLIENT_FINAL = (b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
RFC_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def _hand_computed_keys(password: bytes, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    """StoredKey and ServerKey written out from RFC 5802 section 3, independently of the module."""
    u = hmac.new(password, salt + b"\x00\x00\x00\x01", hashlib.sha256).digest()
    salted = bytearray(u)
    for _ in range(iterations - 1):
        u = hmac.new(password, u, hashlib.sha256).digest()
        salted = bytearray(a ^ b for a, b in zip(salted, u))
    client_key = hmac.new(bytes(salted), b"Client Key", hashlib.sha256).digest()
    server_key = hmac.new(bytes(salted), b"Server Key", hashlib.sha256).digest()
    return hashlib.sha256(client_key).digest(), server_key


def test_verifier_of_the_rfc_7677_vector_matches_a_hand_computation() -> None:
    v = auth.scram_verifier("pencil", salt=RFC_SALT, iterations=4096)
    assert (v.stored_key, v.server_key) == _hand_computed_keys(b"pencil", RFC_SALT, 4096)
    text = str(v)
    assert text.startswith("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$")
    assert auth.parse_verifier(text) == v


def test_rfc_7677_exchange() -> None:
    server = auth.ScramServer("user", auth.scram_verifier("pencil", salt=RFC_SALT), server_nonce=RFC_SERVER_NONCE)
    assert server.first(RFC_CLIENT_FIRST) == RFC_SERVER_FIRST
    assert server.final(RFC_CLIENT_FINAL) == RFC_SERVER_FINAL


def test_wrong_proof_and_unknown_user_fail_with_the_same_error() -> None:
    wrong = auth.ScramServer("user", auth.scram_verifier("pencil2", salt=RFC_SALT), server_nonce=RFC_SERVER_NONCE)
    wrong.first(RFC_CLIENT_FIRST)
    with pytest.raises(auth.AuthError) as e1:
        wrong.final(RFC_CLIENT_FINAL)
    # A doomed exchange fails even when the proof is right.
    doomed = auth.ScramServer("user", auth.scram_verifier("pencil", salt=RFC_SALT), doomed=True,
                              server_nonce=RFC_SERVER_NONCE)
    doomed.first(RFC_CLIENT_FIRST)
    with pytest.raises(auth.AuthError) as e2:
        doomed.final(RFC_CLIENT_FINAL)
    assert (e1.value.sqlstate, e1.value.message) == (e2.value.sqlstate, e2.value.message) == (
        "28P01", 'password authentication failed for user "user"')


def test_mock_verifier_salt_is_stable_per_user_and_secret() -> None:
    nonce = auth.mock_nonce([auth.scram_verifier("x")])
    a, b, c = auth.mock_verifier("ghost", nonce), auth.mock_verifier("ghost", nonce), auth.mock_verifier("other", nonce)
    assert a == b and a.salt != c.salt and len(a.salt) == 16 and a.iterations == 4096
    assert auth.mock_verifier("ghost", auth.mock_nonce([])).salt != a.salt


def test_client_that_supports_channel_binding_but_was_not_offered_it_is_accepted() -> None:
    # libpq over TLS sends "y,," when the server offers only SCRAM-SHA-256; c= is then base64("y,,").
    server = auth.ScramServer("user", auth.scram_verifier("pencil", salt=RFC_SALT), server_nonce=RFC_SERVER_NONCE)
    server.first(b"y,,n=,r=abc")
    nonce = "abc" + RFC_SERVER_NONCE
    with pytest.raises(auth.AuthError) as exc:
        server.final(f"c=biws,r={nonce},p={base64.b64encode(bytes(32)).decode()}".encode())
    assert exc.value.sqlstate == "08P01"  # the gs2 header must be echoed as it was sent
    server2 = auth.ScramServer("user", auth.scram_verifier("pencil", salt=RFC_SALT), server_nonce=RFC_SERVER_NONCE)
    server2.first(b"y,,n=,r=abc")
    with pytest.raises(auth.AuthError) as exc2:
        server2.final(f"c=eSws,r={nonce},p={base64.b64encode(bytes(32)).decode()}".encode())
    assert exc2.value.sqlstate == "28P01"


@pytest.mark.parametrize("message", [
    b"", b"n,", b"p=tls-server-end-point,,n=,r=abc", b"n,a=admin,n=,r=abc", b"n,,r=abc", b"n,,n=,r=",
    b"n,,n=,r=a,m=ext", b"\xff,,n=,r=abc",
])
def test_malformed_client_first_is_a_protocol_violation(message: bytes) -> None:
    server = auth.ScramServer("user", auth.scram_verifier("pencil", salt=RFC_SALT))
    with pytest.raises(auth.AuthError) as exc:
        server.first(message)
    assert exc.value.sqlstate == "08P01"


def test_nonce_mismatch_is_a_protocol_violation() -> None:
    server = auth.ScramServer("user", auth.scram_verifier("pencil", salt=RFC_SALT), server_nonce="other")
    server.first(RFC_CLIENT_FIRST)
    with pytest.raises(auth.AuthError) as exc:
        server.final(RFC_CLIENT_FINAL)
    assert (exc.value.sqlstate, exc.value.detail) == ("08P01", "Nonce does not match.")


def test_md5_verifier_and_response() -> None:
    v = auth.md5_verifier("postgres", "postgres")
    assert str(v) == "md53175bce1d3201d16594cebf9d7eb3f9d"  # PostgreSQL's well-known value
    assert auth.parse_verifier(str(v)) == v
    salt = b"\x01\x02\x03\x04"
    answer = "md5" + hashlib.md5(b"3175bce1d3201d16594cebf9d7eb3f9d" + salt).hexdigest()
    assert auth.check_md5(v, salt, answer.encode() + b"\x00")
    assert not auth.check_md5(v, salt, b"md5" + b"0" * 32 + b"\x00")
    assert auth.authentication_md5(salt) == b"R\x00\x00\x00\x0c\x00\x00\x00\x05" + salt


def test_messages() -> None:
    assert auth.authentication_sasl() == b"R" + struct.pack("!ii", 23, 10) + b"SCRAM-SHA-256\x00\x00"
    body = b"SCRAM-SHA-256\x00" + struct.pack("!i", len(RFC_CLIENT_FIRST)) + RFC_CLIENT_FIRST
    assert auth.parse_sasl_initial(body) == ("SCRAM-SHA-256", RFC_CLIENT_FIRST)
    with pytest.raises(auth.AuthError):
        auth.parse_sasl_initial(b"SCRAM-SHA-256\x00" + struct.pack("!i", 99) + b"short")


@pytest.mark.parametrize("text", ["secret", "md5xyz", "SCRAM-SHA-256$4096:abc", "SCRAM-SHA-256$x:AA==$AA==:AA==",
                                  "SCRAM-SHA-1$4096:AA==$AA==:AA=="])
def test_plain_text_and_broken_verifiers_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="meansql user add|key lengths"):
        auth.parse_verifier(text)


def test_saslprep() -> None:
    assert auth.saslprep("I\u00adX") == "IX"  # soft hyphen maps to nothing
    assert auth.saslprep("\u2168") == "IX"  # NFKC
    assert auth.saslprep("a\u00a0b") == "a b"  # non-ASCII space
    assert auth.saslprep("a\x07b") == "a\x07b"  # prohibited: used as it is, as PostgreSQL does
    assert auth.scram_verifier("\u2168", salt=RFC_SALT) == auth.scram_verifier("IX", salt=RFC_SALT)


def _client_final(password: bytes, salt: bytes, client_first_bare: str, server_first: str, channel: str) -> str:
    """A SCRAM client's final message, written out from RFC 5802 independently of the module."""
    attrs = dict(a.split("=", 1) for a in server_first.split(","))
    u = hmac.new(password, salt + b"\x00\x00\x00\x01", hashlib.sha256).digest()
    salted = bytearray(u)
    for _ in range(int(attrs["i"]) - 1):
        u = hmac.new(password, u, hashlib.sha256).digest()
        salted = bytearray(a ^ b for a, b in zip(salted, u))
    client_key = hmac.new(bytes(salted), b"Client Key", hashlib.sha256).digest()
    without_proof = f"c={channel},r={attrs['r']}"
    message = f"{client_first_bare},{server_first},{without_proof}".encode()
    signature = hmac.new(hashlib.sha256(client_key).digest(), message, hashlib.sha256).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature))
    return f"{without_proof},p={base64.b64encode(proof).decode()}"


BINDING = hashlib.sha256(b"the server certificate").digest()


def test_scram_sha_256_plus_binds_the_exchange_to_the_certificate() -> None:
    gs2 = b"p=tls-server-end-point,,"
    server = auth.ScramServer("user", auth.scram_verifier("pencil", salt=RFC_SALT), binding=BINDING, plus=True)
    server_first = server.first(gs2 + b"n=,r=abc").decode()
    final = _client_final(b"pencil", RFC_SALT, "n=,r=abc", server_first, base64.b64encode(gs2 + BINDING).decode())
    assert server.final(final.encode()).startswith(b"v=")
    # A client that saw another certificate (a man in the middle's) fails the binding check.
    other = auth.ScramServer("user", auth.scram_verifier("pencil", salt=RFC_SALT), binding=BINDING, plus=True)
    server_first = other.first(gs2 + b"n=,r=abc").decode()
    forged = _client_final(b"pencil", RFC_SALT, "n=,r=abc", server_first,
                           base64.b64encode(gs2 + hashlib.sha256(b"another").digest()).decode())
    with pytest.raises(auth.AuthError) as exc:
        other.final(forged.encode())
    assert (exc.value.sqlstate, exc.value.message) == ("08P01", "SCRAM channel binding check failed")


@pytest.mark.parametrize(("message", "plus", "text"), [
    (b"n,,n=,r=abc", True, "does not include channel binding data"),
    (b"p=tls-unique,,n=,r=abc", True, "unsupported SCRAM channel-binding type"),
    (b"y,,n=,r=abc", False, "SCRAM channel binding negotiation error"),
])
def test_channel_binding_negotiation_errors(message: bytes, plus: bool, text: str) -> None:
    server = auth.ScramServer("user", auth.scram_verifier("pencil", salt=RFC_SALT), binding=BINDING, plus=plus)
    with pytest.raises(auth.AuthError) as exc:
        server.first(message)
    assert exc.value.sqlstate == "08P01" and text in f"{exc.value.message} {exc.value.detail}"


@pytest.mark.parametrize(("key", "digest"), [
    (["-newkey", "rsa:2048", "-sha256"], "sha256"),
    (["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384", "-sha384"], "sha384"),
    (["-newkey", "rsa:2048", "-sha1"], "sha256"),  # RFC 5929: SHA-1 is replaced by SHA-256
])
def test_end_point_hash_of_a_certificate(tmp_path: Path, key: list[str], digest: str) -> None:
    cert = tmp_path / "server.crt"
    subprocess.run(["openssl", "req", "-x509", *key, "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-keyout", str(tmp_path / "server.key"), "-out", str(cert)], check=True, capture_output=True)
    der = subprocess.run(["openssl", "x509", "-in", str(cert), "-outform", "DER"], check=True,
                         capture_output=True).stdout
    assert tls.end_point_hash(cert) == hashlib.new(digest, der).digest()
    ed = tmp_path / "ed.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ed25519", "-nodes", "-days", "1", "-subj", "/CN=x",
                    "-keyout", str(tmp_path / "ed.key"), "-out", str(ed)], check=True, capture_output=True)
    assert tls.end_point_hash(ed) is None  # no hash defined: only SCRAM-SHA-256 is offered
