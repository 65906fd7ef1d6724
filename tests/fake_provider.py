"""A stand-in for a paid OpenAI-compatible provider, on loopback only.

It answers /v1/chat/completions by reading the ``Criterion:`` and ``Text:``
lines of the last user message and matching keywords, /v1/embeddings with a
hashed bag of words (``vector``: deterministic, L2-normalised, ``embedding_dim``
wide, so texts sharing words are similar), records every request it
received, and can be told (POST /_control) to be slow, fail with a status code
(429 with Retry-After, 500, ...), answer garbage, or refuse requests beyond a
number in flight. Tests and bench scripts start it; `python -m tests.fake_provider`
runs it by hand.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import re
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

KEYWORDS = {
    "eco-friendly": ("bamboo", "sustainable", "reusable", "eco", "organic", "recycled", "compost"),
    "luxury": ("gold", "silk", "diamond", "premium", "cashmere"),
}

_CRITERION = re.compile(r"^Criterion:\s*(.*)$", re.M)
_TEXT = re.compile(r"^Text:\s*(.*)$", re.M)
# A batch prompt's numbered items: "3. text: ... | criterion: ..."
_BATCH_ITEM = re.compile(r"^\d+\. text: (.*) \| criterion: (.*)$", re.M)


_WORD = re.compile(r"\w+")


def vector(text: str, dim: int) -> list[float]:
    """The stand-in embedding of a text: each word adds +-1 at a position its hash picks; L2-normalised."""
    out = [0.0] * dim
    for word in _WORD.findall(text.lower()):
        h = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "big")
        out[h % dim] += 1.0 if (h >> 32) & 1 else -1.0
    norm = math.sqrt(sum(x * x for x in out)) or 1.0
    return [x / norm for x in out]


def decide(criterion: str, text: str) -> bool:
    """The stand-in's judgement: keywords of a known criterion, else the criterion's words."""
    words = KEYWORDS.get(criterion.strip().lower()) or tuple(w for w in re.findall(r"\w+", criterion.lower()) if len(w) > 2)
    low = text.lower()
    return any(w in low for w in words)


class Behaviour:
    def __init__(self) -> None:
        self.delay = 0.0
        self.fail_rate = 0.0
        self.fail_status = 500
        self.fail_first = 0          # fail this many requests, then behave
        self.retry_after: float | None = None
        self.garbage = False
        self.max_inflight = 0        # 0: no limit; beyond it answer 429
        self.answers: dict[str, str] = {}  # text -> exact answer to send
        self.fail_texts: list[str] = []    # always answer 500 for a prompt about one of these texts
        self.slow_first = 0                # the first N requests take slow_delay seconds (client timeouts)
        self.slow_delay = 5.0
        self.embedding_dim = 64            # width of the /v1/embeddings vectors
        self.on_request: Callable[[int], None] | None = None  # called with the attempt number before answering


class FakeProvider:
    """The server object: start(), url, requests, control via attributes."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, defaults: dict[str, Any] | None = None,
                 nodelay: bool = True, backlog: int = 256) -> None:
        # defaults: Behaviour attributes applied at start and again by every reset (e.g. {"delay": 0.3}).
        # nodelay: TCP_NODELAY on answers; without it the headers and the body go out as two small writes and
        # Nagle plus the client's delayed ACK can hold the body back ~40 ms (benchmarks want it on).
        # backlog: listen queue; socketserver's 5 can drop a burst of new connections (a 1 s SYN retry).
        self.defaults = dict(defaults or {})
        self.behaviour = self._default_behaviour()
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.inflight = 0
        self.max_seen_inflight = 0
        self.attempts = 0
        self.embedding_calls = 0  # /v1/embeddings requests
        self.embedded_texts = 0  # inputs they carried
        self.embedding_inputs: list[list[str]] = []  # the inputs of each request, kept apart from the chat requests
        provider = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = nodelay

            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/_requests":
                    with provider.lock:
                        self._json(200, provider.requests)
                elif self.path == "/_stats":
                    self._json(200, provider.stats())
                else:
                    self._json(404, {"error": "not found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path == "/_control":
                    for k, v in body.items():
                        setattr(provider.behaviour, k, v)
                    self._json(200, {"ok": True})
                elif self.path == "/_reset":
                    provider.reset()
                    self._json(200, {"ok": True})
                elif self.path.rstrip("/").endswith("/chat/completions"):
                    provider.chat(self, body)
                elif self.path.rstrip("/").endswith("/embeddings"):
                    provider.embeddings(self, body)
                else:
                    self._json(404, {"error": "not found"})

        class Server(ThreadingHTTPServer):
            request_queue_size = backlog

        self.server = Server((host, port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> FakeProvider:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _default_behaviour(self) -> Behaviour:
        b = Behaviour()
        for k, v in self.defaults.items():
            setattr(b, k, v)
        return b

    def stats(self) -> dict[str, Any]:
        """Counters without the request bodies: attempts, in-flight figures, distinct texts asked about."""
        with self.lock:
            texts: set[str] = set()
            for r in self.requests:
                messages = r["body"].get("messages", [])
                user = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
                texts.update(_TEXT.findall(user or ""))
            return {"attempts": self.attempts, "requests": len(self.requests), "inflight": self.inflight,
                    "max_seen_inflight": self.max_seen_inflight, "distinct_texts": len(texts),
                    "embedding_calls": self.embedding_calls, "embedded_texts": self.embedded_texts}

    def reset(self) -> None:
        with self.lock:
            self.behaviour = self._default_behaviour()
            self.requests.clear()
            self.attempts = 0
            self.max_seen_inflight = 0
            self.embedding_calls = 0
            self.embedded_texts = 0
            self.embedding_inputs.clear()

    def embeddings(self, handler: Any, body: dict[str, Any]) -> None:
        """OpenAI's embeddings API: ``input`` is a string or a list of strings; one vector each, in order."""
        texts = body.get("input", [])
        texts = [texts] if isinstance(texts, str) else list(texts)
        dim = int(self.behaviour.embedding_dim)
        with self.lock:
            self.embedding_calls += 1
            self.embedded_texts += len(texts)
            self.embedding_inputs.append(texts)
        tokens = sum(len(_WORD.findall(str(t))) for t in texts)
        handler._json(200, {
            "object": "list", "model": body.get("model", "stand-in-embedding"),
            "data": [{"object": "embedding", "index": i, "embedding": vector(str(t), dim)} for i, t in enumerate(texts)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        })

    def chat(self, handler: Any, body: dict[str, Any]) -> None:
        b = self.behaviour
        with self.lock:
            self.attempts += 1
            attempt = self.attempts
            self.inflight += 1
            self.max_seen_inflight = max(self.max_seen_inflight, self.inflight)
            over = b.max_inflight and self.inflight > b.max_inflight
            self.requests.append({"t": time.time(), "body": body, "attempt": attempt,
                                  "path": handler.path, "headers": dict(handler.headers.items())})
        try:
            if over:
                handler._json(429, {"error": {"message": "too many requests in flight"}},
                              {"Retry-After": str(b.retry_after or 1)})
                return
            if b.on_request is not None:
                b.on_request(attempt)
            if attempt <= b.slow_first:
                time.sleep(b.slow_delay)
            elif b.delay:
                time.sleep(b.delay)
            messages = body.get("messages", [])
            user = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
            text = _TEXT.findall(user)
            targeted = bool(text) and text[-1] in b.fail_texts
            if targeted or attempt <= b.fail_first or (b.fail_rate and random.random() < b.fail_rate):
                headers = {"Retry-After": str(b.retry_after)} if b.retry_after is not None else {}
                handler._json(b.fail_status, {"error": {"message": f"injected failure {b.fail_status}"}}, headers)
                return
            crit = _CRITERION.findall(user)
            batch = _BATCH_ITEM.findall(user)
            if b.garbage:
                answer = "I am not sure, it depends."
            elif text and text[-1] in b.answers:
                answer = b.answers[text[-1]]
            elif batch:
                answer = json.dumps([decide(c, t) for t, c in batch])
            elif crit and text:
                answer = "true" if decide(crit[-1], text[-1]) else "false"
            else:
                answer = "false"
            handler._json(200, {
                "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "fake"),
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": answer}}],
                "usage": {"prompt_tokens": sum(len(m.get("content", "").split()) for m in messages),
                          "completion_tokens": 1, "total_tokens": 0},
            })
        finally:
            with self.lock:
                self.inflight -= 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8089, help="0: any free port (the URL printed tells which)")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer; kept across /_reset")
    parser.add_argument("--nodelay", action="store_true", help="TCP_NODELAY: no ~40 ms Nagle/delayed-ACK stall per answer")
    parser.add_argument("--backlog", type=int, default=256, help="listen queue length (a burst of connections wants more)")
    args = parser.parse_args()
    provider = FakeProvider(port=args.port, defaults={"delay": args.delay} if args.delay else None,
                            nodelay=args.nodelay, backlog=args.backlog).start()
    print(f"stand-in provider at {provider.url}", flush=True)
    try:
        provider.thread.join()
    except KeyboardInterrupt:
        provider.stop()


if __name__ == "__main__":
    main()
