"""The client side of start-up used by proxy mode: pure pieces (the login itself runs in tests/proxy)."""

from __future__ import annotations

import pytest

from server.pgwire import auth, upstream


def test_scram_client_and_server_agree() -> None:
    verifier = auth.scram_verifier("pässword")
    client = upstream.ScramClient("pässword")
    server = auth.ScramServer("alice", verifier)
    server_first = server.first(client.first())
    server_final = server.final(client.final(server_first))
    client.verify(server_final)  # the server proved it knows the verifier


def test_scram_client_with_a_wrong_password_is_refused_and_a_fake_server_is_caught() -> None:
    client = upstream.ScramClient("wrong")
    server = auth.ScramServer("alice", auth.scram_verifier("right"))
    with pytest.raises(auth.AuthError):
        server.final(client.final(server.first(client.first())))
    client = upstream.ScramClient("right")
    impostor = auth.ScramServer("alice", auth.scram_verifier("right"))  # another salt: not the real verifier
    first = impostor.first(client.first())
    client.final(first)
    with pytest.raises(upstream.UpstreamError, match="SCRAM signature does not match"):
        client.verify(b"v=" + b"A" * 44)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://app:s%40cret@db:6543/shop", ("db", 6543, "shop", "app", "s@cret", "prefer")),
        ("postgres://app@localhost/shop?sslmode=require", ("localhost", 5432, "shop", "app", None, "require")),
        ("postgresql:///shop?host=/var/run/postgresql", ("/var/run/postgresql", 5432, "shop", "", None, "prefer")),
    ],
)
def test_target_from_url(url: str, expected: tuple[object, ...]) -> None:
    t = upstream.Target.parse(url)
    assert (t.host, t.port, t.database, t.user, t.password, t.sslmode) == expected
    assert "cret" not in t.describe()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://x@h/db", "postgresql://"),
        ("postgresql://h/db?sslmode=sometimes", "sslmode must be one of"),
        ("postgresql://h/db?target_session_attrs=any", "unsupported upstream URL parameter"),
    ],
)
def test_bad_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        upstream.Target.parse(url)


def test_a_bad_upstream_setting_stops_start_up_with_its_name() -> None:
    from server.config import ConfigError, Settings

    with pytest.raises(ConfigError, match="setting 'upstream'.*postgresql://"):
        Settings.load(overrides={"upstream": "mysql://x@h/db"}, environ={})
