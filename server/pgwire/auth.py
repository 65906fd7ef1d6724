"""Password authentication, sans-IO: SCRAM-SHA-256 (RFC 5802/7677) and md5, as PostgreSQL does them.

Verifiers use PostgreSQL's own formats, so they can be copied from and to
``pg_authid.rolpassword``:

- ``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`` (base64 fields)
- ``md5<hex of md5(password + user)>``

`ScramServer` takes the client's messages as bytes and returns the server's;
connection.py does the I/O. An unknown user gets the same exchange against a
mock verifier whose salt is derived from the user name, so that a client
cannot tell unknown users from wrong passwords.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import stringprep
import struct
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

MECHANISM = "SCRAM-SHA-256"
MECHANISM_PLUS = "SCRAM-SHA-256-PLUS"  # with tls-server-end-point channel binding
BINDING_TYPE = "tls-server-end-point"
ITERATIONS = 4096  # PostgreSQL's scram_iterations default
SALT_BYTES = 16
NONCE_BYTES = 18
MAX_TOKEN = 65535  # PostgreSQL's PG_MAX_AUTH_TOKEN_LENGTH

AUTH_MD5, AUTH_SASL, AUTH_SASL_CONTINUE, AUTH_SASL_FINAL = 5, 10, 11, 12


class AuthError(Exception):
    """Authentication ends the connection with FATAL `sqlstate`."""

    sqlstate = "28P01"

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class ProtocolViolation(AuthError):
    sqlstate = "08P01"


def failed(user: str) -> AuthError:
    """The one message for an unknown user and a wrong password."""
    return AuthError(f'password authentication failed for user "{user}"')


# -- verifiers ------------------------------------------------------------------


@dataclass(frozen=True)
class ScramVerifier:
    iterations: int
    salt: bytes
    stored_key: bytes
    server_key: bytes

    def __str__(self) -> str:
        b64 = _b64
        return (f"{MECHANISM}${self.iterations}:{b64(self.salt)}"
                f"${b64(self.stored_key)}:{b64(self.server_key)}")


@dataclass(frozen=True)
class Md5Verifier:
    digest: str  # 32 hex digits of md5(password + user)

    def __str__(self) -> str:
        return f"md5{self.digest}"


Verifier = ScramVerifier | Md5Verifier


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def parse_verifier(text: str) -> Verifier:
    """A stored verifier; ValueError (naming the expected formats) for anything else, plain text included."""
    if text.startswith("md5") and len(text) == 35 and all(c in "0123456789abcdef" for c in text[3:]):
        return Md5Verifier(text[3:])
    try:
        mech, params, keys = text.split("$")
        iterations, salt = params.split(":")
        stored, server = keys.split(":")
        if mech != MECHANISM:
            raise ValueError(mech)
        v = ScramVerifier(int(iterations), base64.b64decode(salt, validate=True),
                          base64.b64decode(stored, validate=True), base64.b64decode(server, validate=True))
    except ValueError:
        raise ValueError("not a password verifier: expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:"
                         "<ServerKey> or md5<32 hex digits> (make one with `meansql user add NAME`)") from None
    if v.iterations < 1 or len(v.stored_key) != 32 or len(v.server_key) != 32:
        raise ValueError("SCRAM-SHA-256 verifier has bad iterations or key lengths")
    return v


def saslprep(password: str) -> str:
    """RFC 4013 SASLprep; like PostgreSQL, a password it rejects is used as it is."""
    chars = [" " if stringprep.in_table_c12(c) else c for c in password if not stringprep.in_table_b1(c)]
    text = unicodedata.normalize("NFKC", "".join(chars))
    if not text:
        return password
    prohibited = (stringprep.in_table_c12, stringprep.in_table_c21, stringprep.in_table_c22,
                  stringprep.in_table_c3, stringprep.in_table_c4, stringprep.in_table_c5, stringprep.in_table_c6,
                  stringprep.in_table_c7, stringprep.in_table_c8, stringprep.in_table_c9, stringprep.in_table_a1)
    if any(test(c) for c in text for test in prohibited):
        return password
    if any(stringprep.in_table_d1(c) for c in text):
        if any(stringprep.in_table_d2(c) for c in text):
            return password
        if not (stringprep.in_table_d1(text[0]) and stringprep.in_table_d1(text[-1])):
            return password
    return text


def scram_verifier(password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> ScramVerifier:
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", saslprep(password).encode("utf-8"), salt, iterations)
    stored = hashlib.sha256(_hmac(salted, b"Client Key")).digest()
    return ScramVerifier(iterations, salt, stored, _hmac(salted, b"Server Key"))


def md5_verifier(user: str, password: str) -> Md5Verifier:
    return Md5Verifier(hashlib.md5((password + user).encode("utf-8")).hexdigest())


def mock_nonce(verifiers: Iterable[Verifier]) -> bytes:
    """A secret that stays the same while the configured users do (PostgreSQL keeps one in pg_control)."""
    h = hashlib.sha256(b"meansql mock authentication")
    for v in sorted(str(v) for v in verifiers):
        h.update(v.encode("ascii") + b"\x00")
    return h.digest()


def mock_verifier(user: str, nonce: bytes) -> ScramVerifier:
    """A verifier no password matches, with a salt that is the same on every attempt for this user."""
    seed = hashlib.sha256(nonce + user.encode("utf-8")).digest()
    return ScramVerifier(ITERATIONS, seed[:SALT_BYTES], hashlib.sha256(seed + b"stored").digest(),
                         hashlib.sha256(seed + b"server").digest())


# -- messages ---------------------------------------------------------------------------


def _auth(code: int, data: bytes = b"") -> bytes:
    body = struct.pack("!i", code) + data
    return b"R" + struct.pack("!i", len(body) + 4) + body


def authentication_sasl(mechanisms: Iterable[str] = (MECHANISM,)) -> bytes:
    return _auth(AUTH_SASL, b"".join(m.encode("ascii") + b"\x00" for m in mechanisms) + b"\x00")


def authentication_sasl_continue(data: bytes) -> bytes:
    return _auth(AUTH_SASL_CONTINUE, data)


def authentication_sasl_final(data: bytes) -> bytes:
    return _auth(AUTH_SASL_FINAL, data)


def authentication_md5(salt: bytes) -> bytes:
    return _auth(AUTH_MD5, salt)


def parse_sasl_initial(body: bytes) -> tuple[str, bytes]:
    """SASLInitialResponse body → (mechanism, client-first-message)."""
    end = body.find(b"\x00")
    if end < 0 or len(body) < end + 5:
        raise ProtocolViolation("invalid SASL initial response")
    mechanism = body[:end].decode("ascii", "replace")
    length = int(struct.unpack_from("!i", body, end + 1)[0])
    data = body[end + 5:]
    if length == -1:
        data = b""
    elif length != len(data):
        raise ProtocolViolation("invalid SASL initial response", "Length of the data does not match.")
    return mechanism, data


def check_md5(verifier: Md5Verifier, salt: bytes, body: bytes) -> bool:
    """A PasswordMessage answering AuthenticationMD5Password(salt)."""
    expected = "md5" + hashlib.md5(verifier.digest.encode("ascii") + salt).hexdigest()
    return hmac.compare_digest(body.rstrip(b"\x00"), expected.encode("ascii"))


# -- SCRAM ------------------------------------------------------------------------------


def _malformed(detail: str) -> ProtocolViolation:
    return ProtocolViolation("malformed SCRAM message", detail)


def _attributes(text: str) -> list[tuple[str, str]]:
    out = []
    for part in text.split(","):
        if len(part) < 2 or part[1] != "=" or not part[0].isalpha():
            raise _malformed(f"Attribute expected, but found {part[:1]!r}.")
        out.append((part[0], part[2:]))
    return out


class ScramServer:
    """The server side of one SCRAM-SHA-256 exchange.

    ``first(client_first) → server_first``, then ``final(client_final) →
    server_final`` or AuthError. With ``doomed`` (unknown user) every proof
    fails after the same work as a real check.
    """

    def __init__(self, user: str, verifier: ScramVerifier, *, doomed: bool = False,
                 server_nonce: str | None = None, binding: bytes | None = None, plus: bool = False) -> None:
        self.user = user
        self.verifier = verifier
        self.doomed = doomed
        self.binding = binding  # this connection's channel binding data, when the server offers -PLUS
        self.plus = plus  # the client chose SCRAM-SHA-256-PLUS
        self.server_nonce = server_nonce or _b64(secrets.token_bytes(NONCE_BYTES))
        self._gs2 = ""
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""

    def first(self, message: bytes) -> bytes:
        try:
            text = message.decode("utf-8")
        except UnicodeDecodeError:
            raise _malformed("Message is not valid UTF-8.") from None
        parts = text.split(",", 2)
        if len(parts) < 3:
            raise _malformed("Comma expected in the GS2 header.")
        flag, authzid, bare = parts
        if self.plus:
            if flag in ("n", "y"):
                raise _malformed("The client selected SCRAM-SHA-256-PLUS, but the SCRAM message does not include "
                                 "channel binding data.")
            if not flag.startswith("p="):
                raise _malformed(f"Unexpected channel-binding flag {flag[:1]!r}.")
            if flag[2:] != BINDING_TYPE or self.binding is None:
                raise ProtocolViolation("unsupported SCRAM channel-binding type", f'"{flag[2:]}"')
        elif flag.startswith("p="):
            raise _malformed("The client selected SCRAM-SHA-256 without channel binding, but the SCRAM message "
                             "includes channel binding data.")
        elif flag == "y" and self.binding is not None:
            # The client could bind but believes we cannot: a man in the middle may have removed -PLUS.
            raise ProtocolViolation("SCRAM channel binding negotiation error",
                                    "The client supports SCRAM channel binding but thinks the server does not.  "
                                    "However, this server does support channel binding.")
        elif flag not in ("n", "y"):
            raise _malformed(f"Unexpected channel-binding flag {flag[:1]!r}.")
        if authzid:
            raise ProtocolViolation("client uses authorization identity, but it is not supported")
        attrs = _attributes(bare)
        if len(attrs) < 2 or attrs[0][0] != "n" or attrs[1][0] != "r":
            raise _malformed("Expected n= and r= attributes.")
        if len(attrs) > 2:
            raise ProtocolViolation("client requires an unsupported SCRAM extension")
        client_nonce = attrs[1][1]
        if not client_nonce or any(not (0x21 <= ord(c) <= 0x7E) or c == "," for c in client_nonce):
            raise _malformed("Client nonce contains invalid characters.")
        self._gs2 = f"{flag},{authzid},"
        self._client_first_bare = bare
        self._nonce = client_nonce + self.server_nonce
        v = self.verifier
        self._server_first = f"r={self._nonce},s={_b64(v.salt)},i={v.iterations}"
        return self._server_first.encode("ascii")

    def final(self, message: bytes) -> bytes:
        if not self._nonce:
            raise _malformed("Client-final message before client-first.")
        try:
            text = message.decode("ascii")
        except UnicodeDecodeError:
            raise _malformed("Message is not valid ASCII.") from None
        attrs = _attributes(text)
        if len(attrs) < 3 or attrs[0][0] != "c" or attrs[1][0] != "r" or attrs[-1][0] != "p":
            raise _malformed("Expected c=, r= and p= attributes.")
        expected = self._gs2.encode("ascii") + ((self.binding or b"") if self.plus else b"")
        if attrs[0][1] != _b64(expected):
            raise ProtocolViolation("SCRAM channel binding check failed")
        if attrs[1][1] != self._nonce:
            raise _malformed("Nonce does not match.")
        try:
            proof = base64.b64decode(attrs[-1][1], validate=True)
        except ValueError:
            raise _malformed("Malformed proof in client-final-message.") from None
        if len(proof) != 32:
            raise _malformed("Malformed proof in client-final-message.")
        without_proof = text[: text.rindex(",p=")]
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        signature = _hmac(self.verifier.stored_key, auth_message)
        client_key = bytes(a ^ b for a, b in zip(proof, signature))
        ok = hmac.compare_digest(hashlib.sha256(client_key).digest(), self.verifier.stored_key)
        if not ok or self.doomed:
            raise failed(self.user)
        return f"v={_b64(_hmac(self.verifier.server_key, auth_message))}".encode("ascii")


def verifiers(users: Mapping[str, str]) -> dict[str, Verifier]:
    return {name: parse_verifier(text) for name, text in users.items()}
