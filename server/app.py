"""Composition root: builds the store, operator registry, judge, executor and listener."""

from __future__ import annotations

import logging
import sys
import threading

from semantic_ops import functions
from semantic_ops.executor import Executor, Options
from semantic_ops.judges.litellm import LiteLLMJudge, embedding_encoder
from semantic_ops.judges.local import LocalJudge, register_calibrate, store_examples
from semantic_ops.operators import Registry
from server import catalog, file_access, upstream_scan
from server.config import Settings
from server.http import HttpServer
from server.pgwire import auth, tls, upstream
from server.pgwire.connection import MeansqlServer
from server.proxy import Proxy
from server.session import Session
from training import search
from training.embeddings import LOCAL, Embedder
from training.errors import StoreError
from training.events import Publisher
from training.pgattach import AttachedStore
from training.pgstore import PostgresStore
from training.store import Store
from training.stores import DuckDBStore, TrainingStore
from training.vectors import VectorIndexes

log = logging.getLogger(__name__)


GIL_SWITCH_INTERVAL = 0.0005  # seconds
SESSION_SETUPS_AT_ONCE = 2  # sessions setting up their DuckDB connection at the same time (one per core here)


class App:
    """Everything one meansql process runs, built in one place."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.tls = tls.server_context(settings.ssl_cert, settings.ssl_key)  # a bad certificate stops start-up here
        self.registry = Registry.load(settings.operators_dir)  # a bad operator file stops start-up here
        self.store = Store(settings.db)
        try:
            self.store.init()
            catalog.install(self.store.database)
            self.training_store, store_error = self._training_store()
            self.embedder = Embedder(settings.embedding_model, store=self.store, encoder=None if settings.embedding_model == LOCAL
                                     else embedding_encoder(settings.embedding_model, api_base=settings.api_base,
                                                            api_key=settings.api_key, timeout=settings.request_timeout))
            self.judge = LiteLLMJudge(
                api_base=settings.api_base,
                api_key=settings.api_key,
                max_concurrency=settings.max_concurrency,
                timeout=settings.request_timeout,
                num_retries=settings.num_retries,
            )
            self.local_judge = LocalJudge(self.embedder, store_examples(self.training_store))
            self.vectors = VectorIndexes(self.store, settings.vector_index_threshold)  # stopped by store.close()
            self.executor = Executor(
                self.store, self.registry, self.judge, default_model=settings.model,
                defaults=Options(cache=settings.cache, on_error=settings.on_error, max_calls=settings.max_calls),
                local=self.local_judge, embedder=self.embedder,
                vectors=self.vectors, training_store=self.training_store,
            )
            self.executor.register_udfs(self.store.database)
            self.doors = self._doors(store_error)
            self.publisher = self._publisher()
            functions.register(self.store.database, self.embedder)
            register_calibrate(self.store.database, self.training_store, self.embedder, self.registry)
        except BaseException:
            if getattr(self, "doors", None) not in (None, self.store):
                self.doors.close()
            if hasattr(self, "training_store"):
                self.training_store.close()
            self.store.close()
            raise
        # Proxy mode: the upstream attached for semantic statements, or why it is not.
        self.upstream_error: str | None = None
        self.store_schema: str | None = None  # where a semantic statement finds unified_logs and the training tables
        if settings.upstream:
            self._attach_upstream()
            (catalog_name,) = self.store.database.execute("SELECT current_database()").fetchone() or ("",)
            self.store_schema = upstream_scan.store_schema(settings.upstream, settings.store_postgres(), str(catalog_name))
            self.upstream_error = self.upstream_error or store_error
        self.server: MeansqlServer | None = None
        self.session_setups = threading.BoundedSemaphore(SESSION_SETUPS_AT_ONCE)
        self.http: HttpServer | None = None
        self.files: file_access.Lock | None = None  # set once clients may connect; None: the owner's full access

    def _training_store(self) -> tuple[TrainingStore, str | None]:
        """Logs, cache and training data: the DuckDB file, or PostgreSQL's meansql schema (created or migrated now).

        In proxy mode a store that cannot be set up turns semantic statements off, with the reason, as an upstream
        that cannot be attached does; plain SQL is relayed all the same.
        """
        url = self.settings.store_postgres()
        if url is None:
            return DuckDBStore(self.store), None
        store = PostgresStore(url, claim_ttl=self.settings.claim_ttl)
        try:
            store.init()
        except StoreError as exc:
            if not self.settings.upstream:
                store.close()
                raise
            reason = f"the store at {store.where} could not be set up when meansql started: {exc.message}"
            log.warning("semantic statements are off in proxy mode: %s", reason)
            return store, reason
        return store, None

    def _doors(self, store_error: str | None) -> Store | None:
        """The Store of the HTTP API, the training commands and the event publisher: the file, or the PostgreSQL
        store attached to DuckDB (None, with a warning, when a proxy's store could not be set up)."""
        if not isinstance(self.training_store, PostgresStore):
            return self.store
        if store_error is not None:
            log.warning("the training HTTP API is off: %s", store_error)
            return None
        return AttachedStore(self.training_store)

    def _publisher(self) -> Publisher | None:
        """Events to Redis: from the file's outbox, or from PostgreSQL's when Redis is configured (each event
        goes out once, from whichever process claims it first)."""
        if self.doors is self.store:
            return Publisher(self.store, self.settings.redis_url).start()
        if self.doors is None or not self.settings.redis_url:
            return None
        assert isinstance(self.training_store, PostgresStore)
        return Publisher(self.doors, self.settings.redis_url, outbox=self.training_store).start()

    def _attach_upstream(self) -> None:
        s = self.settings
        if s.upstream_auth == "passthrough":
            # Clients log in as themselves; a scan with meansql's own credentials would read past their rights.
            self.upstream_error = "meansql logs in to the upstream as each client (upstream_auth: passthrough)"
            return
        try:
            upstream_scan.attach(self.store.database, s.upstream or "")
        except RuntimeError as exc:
            self.upstream_error = f"the upstream could not be attached when meansql started: {exc}"
            log.warning("semantic statements are off in proxy mode: %s", self.upstream_error)

    def lock_files(self) -> None:
        """Close DuckDB's access to server files before the first client connects.

        What the server itself needs from the file system is done first: the fts and vss extensions are
        loaded now rather than on the first search.
        """
        if self.files is None:
            search.available(self.store)
            if self.vectors.threshold:
                self.vectors.available()
            self.files = file_access.lock(self.store.database)

    def new_session(self, *, user: str = "", database: str = "") -> Session:
        return Session(self.store, self.executor, user=user, database=database, files=self.files,
                       setups=self.session_setups)

    def new_proxy_session(self, *, user: str = "", database: str = "") -> Session:
        """A session whose unqualified table names are the upstream's (proxy mode, upstream attached)."""
        session = self.new_session(user=user, database=database)
        upstream_scan.prepare_cursor(session.cursor, self.store_schema)
        session.keep_rows = True  # each read of an upstream table crosses the network: read kept rows once
        return session

    def listen(self) -> MeansqlServer:
        """Bind the pg-wire listener (port 0 picks a free one)."""
        s = self.settings
        self.lock_files()
        # A connection thread coming back from a socket read or a DuckDB call waits for the GIL up to one
        # switch interval (Python's default: 5 ms) behind each busy thread, several times per statement: with
        # 50 connections busy, a SELECT 1 on an idle session waited tens of milliseconds.
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        self.server = MeansqlServer(
            (s.host, s.port), self, max_message_size=s.max_message_size, users=auth.verifiers(s.users),
            ssl_context=self.tls, tls_end_point=tls.end_point_hash(s.ssl_cert) if self.tls else None,
            max_connections=s.max_connections, login_timeout=s.login_timeout,
            proxy=Proxy(upstream.Target.parse(s.upstream), self.registry, passthrough=s.upstream_auth == "passthrough",
                        semantic_off=self.upstream_error) if s.upstream else None,
        )
        # In proxy mode the relay comes first: the model loads on the first semantic statement that needs it.
        if self._needs_embeddings() and not s.upstream:
            self.embedder.start()  # the model loads in the background; the first use waits for it
        if self.settings.model:
            # litellm takes seconds to import; do it before the first query needs it.
            threading.Thread(target=self._warm_up, name="meansql-warmup", daemon=True).start()
        return self.server

    def _warm_up(self) -> None:
        """Pay now what the first semantic query would: the answer cache's first lookup (DuckDB's first scan of
        an Arrow table imports pyarrow.dataset, 0.2 s or more of CPU), then litellm's import and set-up."""
        if isinstance(self.training_store, DuckDBStore):  # PostgreSQL's lookup scans no Arrow table
            try:
                self.training_store.cache_lookup(["warm-up"])  # no answer has this key: reads a miss, writes nothing
            except Exception as exc:  # a failed warm-up only costs the first query time
                log.debug("answer cache warm-up failed: %s", exc)
        self.judge.warm_up(self.settings.model)

    def _needs_embeddings(self) -> bool:
        """Whether start-up should load the embedding model: the local judge answers, or an operator uses it.

        Otherwise it loads on first use (EMBED, SIMILAR_TO, VECTOR_SEARCH), so a server on an LLM spends no
        CPU on torch while its first queries run.
        """
        if not self.settings.model or self.settings.model == "local":
            return True
        return any(op.cell.cascade is not None or op.cell.training_strategy == "semantic"
                   for op in self.registry.by_cascade.values())

    def listen_http(self) -> HttpServer | None:
        """Start the HTTP API on its own thread (same process, same Store), unless it is turned off."""
        if self.settings.http and self.doors is not None:
            self.http = HttpServer(self.doors, self.settings.host, self.settings.http_port).start()
        return self.http

    @property
    def model_description(self) -> str:
        if self.settings.model:
            where = f" at {self.settings.api_base}" if self.settings.api_base else ""
            return f"{self.settings.model}{where}"
        return (f"the local judge ({self.local_judge.model}, offline); set MEANSQL_MODEL or model: in meansql.yaml "
                "for an LLM")

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        if self.http is not None:
            self.http.stop()
        if self.publisher is not None:
            self.publisher.stop()
        self.judge.close()
        if self.doors not in (None, self.store):
            self.doors.close()
        self.training_store.close()
        self.store.close()
        if self.files is not None:
            self.files.close()
