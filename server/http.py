"""The HTTP door: a FastAPI app over the same Store as the pg-wire listener, served by uvicorn in a thread."""

from __future__ import annotations

import logging
import socket
import threading
import time

import uvicorn
from fastapi import FastAPI

from training.api import exception_handlers, router
from training.store import Store

log = logging.getLogger(__name__)


def build_app(store: Store) -> FastAPI:
    """The FastAPI app: the training-example API and the studio's endpoints; OpenAPI docs at /docs."""
    app = FastAPI(title="meansql training store", version="1", docs_url="/docs", openapi_url="/openapi.json",
                  description="Curated training examples (the TrainingExampleService) and annotations of logged calls.")
    app.state.store = store
    app.include_router(router)
    exception_handlers(app)
    return app


class HttpServer:
    """uvicorn serving build_app(store) on its own thread, in this process."""

    def __init__(self, store: Store, host: str, port: int) -> None:
        self.sock = socket.create_server((host, port), reuse_port=False)
        # Accepted sockets inherit it: a response written as headers then body must not wait for the
        # client's delayed ACK (about 40 ms per request on loopback otherwise).
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.address: tuple[str, int] = self.sock.getsockname()[:2]
        config = uvicorn.Config(build_app(store), log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, name="meansql-http",
                                       daemon=True)

    def start(self, timeout: float = 30.0) -> HttpServer:
        """Start serving; returns once uvicorn has started, so its start-up does not run beside the first requests
        (or the first statements of the pg-wire server in the same process)."""
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(f"the HTTP API on {self.address[0]}:{self.address[1]} did not start")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the HTTP API on {self.address[0]}:{self.address[1]} did not start in {timeout:.0f} s")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
