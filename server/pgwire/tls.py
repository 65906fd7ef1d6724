"""TLS for the pg-wire listener: the server context and PostgreSQL's start-up rules around SSLRequest."""

from __future__ import annotations

import hashlib
import socket
import ssl
from pathlib import Path
from typing import Any

from server.config import ConfigError


def server_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """A server-side context from PEM files; None when TLS is not configured."""
    if cert is None or key is None:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # PostgreSQL's ssl_min_protocol_version default
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS certificate {cert} and key {key}: {exc}") from exc
    return ctx


def has_unread_data(rfile: Any, sock: socket.socket) -> bool:
    """Bytes already sent after an SSLRequest (before our answer): unencrypted, perhaps injected.

    Looks at the buffered reader (``rfile``) and the socket without blocking.
    """
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        return bool(rfile.peek(1))
    except OSError:
        return False
    finally:
        sock.settimeout(timeout)


# Signature algorithms of a certificate and the hash tls-server-end-point channel binding uses for them
# (RFC 5929 section 4.1: MD5 and SHA-1 are replaced by SHA-256), by the DER bytes of their OIDs.
_SIGNATURE_HASHES = {
    bytes.fromhex("2a864886f70d010104"): "sha256",  # md5WithRSAEncryption
    bytes.fromhex("2a864886f70d010105"): "sha256",  # sha1WithRSAEncryption
    bytes.fromhex("2a864886f70d01010b"): "sha256",  # sha256WithRSAEncryption
    bytes.fromhex("2a864886f70d01010c"): "sha384",  # sha384WithRSAEncryption
    bytes.fromhex("2a864886f70d01010d"): "sha512",  # sha512WithRSAEncryption
    bytes.fromhex("2a864886f70d01010e"): "sha224",  # sha224WithRSAEncryption
    bytes.fromhex("2a8648ce3d0401"): "sha256",  # ecdsa-with-SHA1
    bytes.fromhex("2a8648ce3d040301"): "sha224",  # ecdsa-with-SHA224
    bytes.fromhex("2a8648ce3d040302"): "sha256",  # ecdsa-with-SHA256
    bytes.fromhex("2a8648ce3d040303"): "sha384",  # ecdsa-with-SHA384
    bytes.fromhex("2a8648ce3d040304"): "sha512",  # ecdsa-with-SHA512
}


def _tlv(der: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start, end) of the DER value at pos."""
    tag, first = der[pos], der[pos + 1]
    if first < 0x80:
        return tag, pos + 2, pos + 2 + first
    n = first & 0x7F
    length = int.from_bytes(der[pos + 2:pos + 2 + n], "big")
    return tag, pos + 2 + n, pos + 2 + n + length


def end_point_hash(cert: Path | None) -> bytes | None:
    """The tls-server-end-point channel binding data of the certificate (RFC 5929), for SCRAM-SHA-256-PLUS.

    None when there is no certificate or its signature algorithm has no defined hash (Ed25519, RSA-PSS):
    then only SCRAM-SHA-256 is offered, as PostgreSQL built without that support does.
    """
    if cert is None:
        return None
    try:
        der = ssl.PEM_cert_to_DER_cert(cert.read_text())
        _, start, _ = _tlv(der, 0)  # Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, ... }
        _, _, tbs_end = _tlv(der, start)
        tag, alg_start, _ = _tlv(der, tbs_end)
        oid_tag, oid_start, oid_end = _tlv(der, alg_start)
    except (OSError, ValueError, IndexError):
        return None
    if tag != 0x30 or oid_tag != 0x06:
        return None
    name = _SIGNATURE_HASHES.get(der[oid_start:oid_end])
    return hashlib.new(name, der).digest() if name else None
