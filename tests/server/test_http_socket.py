"""The HTTP API's sockets: small responses are not held back by Nagle's algorithm."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx

from server.http import HttpServer
from training.store import Store


def test_accepted_http_connections_send_without_delay(tmp_path: Path) -> None:
    store = Store(tmp_path / "h.duckdb")
    store.init()
    server = HttpServer(store, "127.0.0.1", 0).start()
    try:
        assert server.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        with httpx.Client(base_url=f"http://{server.address[0]}:{server.address[1]}", timeout=10) as client:
            page = client.get("/training-examples/", params={"limit": 5})
        assert page.status_code == 200 and page.json()["total"] == 0
        # Linux hands the listener's TCP_NODELAY to every socket accept() returns.
        with socket.create_connection(server.address) as probe:
            probe.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            head = probe.recv(64)
        assert head.startswith(b"HTTP/1.1 200")
    finally:
        server.stop()
        store.close()
