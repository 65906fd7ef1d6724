"""A TCP relay in Python that only reads and sends: the reference for what a relay written in Python can reach.

Two threads per connection, one per direction, each reading into one buffer and sending what it read, with
TCP_NODELAY on both sockets; no message framing, no inspection. bench/proxy.py runs it beside the proxy so
that both are measured under the same load.

    .venv/bin/python -m bench.bare_relay UPSTREAM_PORT   # prints "listening on 127.0.0.1:PORT"
"""

from __future__ import annotations

import socket
import sys
import threading


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    buf = bytearray(65536)
    view = memoryview(buf)
    try:
        while n := src.recv_into(buf):
            dst.sendall(view[:n])
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def main() -> None:
    upstream = ("127.0.0.1", int(sys.argv[1]))
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    print(f"listening on 127.0.0.1:{listener.getsockname()[1]}", flush=True)
    while True:
        client, _ = listener.accept()
        up = socket.create_connection(upstream)
        for sock in (client, up):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=_pipe, args=(client, up), daemon=True).start()
        threading.Thread(target=_pipe, args=(up, client), daemon=True).start()


if __name__ == "__main__":
    main()
