"""`meansql` commands: flags → Settings → app."""

from __future__ import annotations

import csv
import ctypes
import datetime as dt
import decimal
import json
import logging
import os
import signal
import sys
import threading
import uuid
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from server.config import Settings
from training.errors import MeansqlError

app = typer.Typer(help="meansql: PostgreSQL wire-protocol server with a semantic MEANS operator.",
                  no_args_is_help=True, add_completion=False)
db_app = typer.Typer(help="Database file maintenance.", no_args_is_help=True)
sql_app = typer.Typer(help="Run SQL without a client.", no_args_is_help=True)
training_app = typer.Typer(help="Annotations and training examples.", no_args_is_help=True)
user_app = typer.Typer(help="Users who may log in (password verifiers in meansql.yaml).", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(sql_app, name="sql")
app.add_typer(training_app, name="training")
app.add_typer(user_app, name="user")

log = logging.getLogger("meansql.cli")
_M_ARENA_MAX = -8  # mallopt's parameter number in glibc's malloc.h

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

DbOpt = Annotated[Optional[Path], typer.Option("--db", help="DuckDB database file (default ./meansql.duckdb).")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="meansql.yaml to read (default: beside the database).")]
UrlOpt = Annotated[Optional[str], typer.Option("--url", help="Talk to a running server, e.g. postgresql://localhost:15432/default.")]
FormatOpt = Annotated[str, typer.Option("--format", help="table, json or csv.")]
StoreUrlOpt = Annotated[Optional[str], typer.Option("--store-url", help="The store: postgresql://... or duckdb (default: as serve).")]


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": dt.datetime.now().isoformat(), "level": record.levelname, "logger": record.name,
                 "message": record.getMessage()}
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _setup_logging(settings: Settings) -> None:
    handler: logging.Handler
    if settings.log_format == "json":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_JsonFormatter())
    else:
        handler = RichHandler(console=err, show_path=False)
    logging.basicConfig(level=settings.log_level, handlers=[handler], force=True)
    for noisy in ("LiteLLM", "litellm", "httpx", "httpcore", "openai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _fail(exc: MeansqlError) -> None:
    err.print(f"[red]error[/red] ({exc.sqlstate}): {exc.message}", highlight=False)
    if exc.hint:
        err.print(f"hint: {exc.hint}", highlight=False)
    raise typer.Exit(1)


def _settings(config: Path | None, **overrides: Any) -> Settings:
    try:
        return Settings.load(config=config, overrides=overrides)
    except MeansqlError as exc:
        _fail(exc)
        raise  # unreachable


def _build(settings: Settings) -> Any:
    from server.app import App

    try:
        return App(settings)
    except MeansqlError as exc:
        _fail(exc)


def limit_heap_arenas(arenas: int = 2) -> None:
    """At most `arenas` malloc arenas for the server's threads, unless MALLOC_ARENA_MAX says otherwise.

    glibc gives threads that allocate at once arenas of their own, up to eight per core, and memory freed in one
    is not reused by the others: with fifty connection threads the heap kept growing for minutes (RSS +29% in
    three minutes of `bench/soak.py`, flat with two arenas). Called before the server starts its threads.
    """
    if os.environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_ARENA_MAX, arenas)
    except (OSError, AttributeError):  # not glibc: its allocator has its own policy
        log.debug("mallopt unavailable; heap arenas left as they are")


def limit_arrow_io_threads(threads: int = 2) -> None:
    """Arrow's I/O thread pool at `threads`, unless ARROW_IO_THREADS says otherwise.

    DuckDB scans the Arrow data the server hands it (semantic answers, rows to insert) through pyarrow's dataset
    scanner, whose I/O pool starts threads as scans overlap, up to eight, and keeps them: under fifty clients the
    server's thread count at rest crept up by that many. The data is in memory; there is no I/O to overlap.
    """
    if os.environ.get("ARROW_IO_THREADS"):
        return
    import pyarrow

    pyarrow.set_io_thread_count(threads)


@app.command()
def serve(
    db: DbOpt = None,
    config: ConfigOpt = None,
    host: Annotated[Optional[str], typer.Option(help="Address to listen on (default 127.0.0.1).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port to listen on (default 15432).")] = None,
    model: Annotated[Optional[str], typer.Option(help="litellm model, e.g. openai/gpt-4o-mini.")] = None,
    api_base: Annotated[Optional[str], typer.Option("--api-base", help="Base URL of the model server.")] = None,
    operators_dir: Annotated[Optional[Path], typer.Option("--operators-dir", help="Directory of operator YAML files.")] = None,
    log_level: Annotated[Optional[str], typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR.")] = None,
    log_format: Annotated[Optional[str], typer.Option("--log-format", help="rich or json.")] = None,
    http_port: Annotated[Optional[int], typer.Option("--http-port", help="Port of the HTTP API (default 5050; 0: any free port).")] = None,
    http: Annotated[Optional[bool], typer.Option("--http/--no-http", help="Serve the training store's HTTP API (default on).")] = None,
    upstream: Annotated[Optional[str], typer.Option("--upstream", help="Proxy mode: relay plain SQL to this PostgreSQL URL.")] = None,
    store_url: Annotated[Optional[str], typer.Option("--store-url", help="Logs, cache, training data: postgresql://... or duckdb.")] = None,
) -> None:
    """Serve the PostgreSQL wire protocol over a DuckDB file."""
    limit_heap_arenas()
    limit_arrow_io_threads()
    settings = _settings(config, db=db, host=host, port=port, model=model, api_base=api_base,
                         operators_dir=operators_dir, log_level=log_level, log_format=log_format,
                         http_port=http_port, http=http, upstream=upstream, store_url=store_url)
    _setup_logging(settings)
    application = _build(settings)
    server = application.listen()
    host_, port_ = server.server_address[:2]
    if not _is_loopback(host_) and not settings.users and settings.upstream_auth != "passthrough":
        err.print(f"[bold red]WARNING[/bold red]: listening on {host_} with no users configured: every login is "
                  "trusted, so anyone who can reach this address can read and change the database. Add a user "
                  "with `meansql user add NAME`.", highlight=False)
    out.print(f"meansql listening on {host_}:{port_} (database {settings.db}, model: {application.model_description})",
              highlight=False)
    if application.server.proxy is not None:
        out.print(f"proxy mode: plain SQL goes to {application.server.proxy.target.describe()}", highlight=False)
    out.print(f"connect with: psql postgresql://localhost:{port_}/default", highlight=False)
    try:
        http_server = application.listen_http()
    except OSError as exc:  # pg-wire is up; say loudly that HTTP is not, and keep serving SQL
        http_server = None
        err.print(f"[yellow]warning[/yellow]: the HTTP API is off: cannot listen on {settings.host}:{settings.http_port}: "
                  f"{exc.strerror} (choose another --http-port, or --no-http)", highlight=False)
    if http_server is not None:
        hh, hp = http_server.address
        out.print(f"http listening on {hh}:{hp} (training store API, docs at http://{hh}:{hp}/docs)", highlight=False)
    sys.stdout.flush()

    stop = threading.Event()

    def _stop(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    thread = threading.Thread(target=server.serve_forever, name="meansql-accept", daemon=True)
    thread.start()
    while not stop.wait(0.5):  # wake up now and then: a signal delivered to another thread does not end the wait
        pass
    out.print("meansql stopping", highlight=False)
    application.close()


def _is_loopback(host: str) -> bool:
    import ipaddress

    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="User name clients log in as.")],
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin's first line.")] = False,
    md5: Annotated[bool, typer.Option("--md5", help="Store an md5 verifier, for old clients without SCRAM.")] = False,
    print_: Annotated[bool, typer.Option("--print", help="Print the verifier instead of writing meansql.yaml.")] = False,
    db: DbOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Add or replace a user: its SCRAM-SHA-256 verifier goes into meansql.yaml (never the password)."""
    import os

    import yaml

    from server.config import ConfigError
    from server.pgwire import auth

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt(f"password for {name}", hide_input=True, confirmation_prompt=True)
    if not password:
        raise typer.BadParameter("the password is empty")
    verifier = str(auth.md5_verifier(name, password) if md5 else auth.scram_verifier(password))
    if print_:
        print(verifier)
        return
    path = Settings.config_path(config, db)
    data: Any = {}
    if path.is_file():
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            _fail(ConfigError(f"{path}: not valid YAML: {exc}"))
        if not isinstance(data, dict) or not isinstance(data.get("users", {}), dict):
            _fail(ConfigError(f"{path}: must be a mapping of setting: value, with users: a mapping"))
    data.setdefault("users", {})[name] = verifier
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        yaml.safe_dump(data, f, sort_keys=False, allow_unicode=True, width=1000)
    out.print(f"user {name} added to {path} ({'md5' if md5 else 'SCRAM-SHA-256'})", highlight=False)


@db_app.command("init")
def db_init(
    db: DbOpt = None,
    config: ConfigOpt = None,
    url: Annotated[Optional[str], typer.Option("--url", help="A PostgreSQL store to create or migrate (its meansql schema).")] = None,
) -> None:
    """Create or migrate the tables and views (idempotent)."""
    from training.store import Store

    settings = _settings(config, db=db, store_url=url)
    store_url = settings.store_postgres()
    if store_url is not None:
        from training.pgstore import PostgresStore

        pg = PostgresStore(store_url)
        try:
            version = pg.init()
        except MeansqlError as exc:
            _fail(exc)
        finally:
            pg.close()
        out.print(f"{pg.where}: schema meansql version {version}, on the database's search_path", highlight=False)
        return
    try:
        store = Store(settings.db)
        version = store.init()
        store.close()
    except MeansqlError as exc:
        _fail(exc)
    out.print(f"{settings.db}: schema version {version}", highlight=False)


def _jsonable(v: Any) -> Any:
    if isinstance(v, dt.date | dt.time | dt.datetime):
        return v.isoformat()
    if isinstance(v, decimal.Decimal | uuid.UUID):
        return str(v)
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, dt.timedelta):
        return str(v)
    return v


def _print_rows(columns: list[str], rows: list[Any], fmt: str) -> None:
    if fmt == "json":
        print(json.dumps([{c: _jsonable(v) for c, v in zip(columns, r)} for r in rows], default=str))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows([[_jsonable(v) for v in r] for r in rows])
    else:
        table = Table(*columns)
        for r in rows:
            table.add_row(*["NULL" if v is None else str(_jsonable(v)) for v in r])
        out.print(table)


def _query_url(url: str, sql: str, fmt: str, params: tuple[Any, ...] | None = None) -> None:
    import psycopg

    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.add_notice_handler(lambda d: err.print(f"{d.severity}: {d.message_primary}", highlight=False))
            cur = conn.execute(sql, params)
            while True:
                if cur.description:
                    _print_rows([d.name for d in cur.description], cur.fetchall(), fmt)
                elif cur.statusmessage and fmt == "table":
                    out.print(cur.statusmessage, highlight=False)
                if not cur.nextset():
                    break
    except psycopg.Error as exc:
        diag = getattr(exc, "diag", None)
        err.print(f"[red]error[/red] ({getattr(diag, 'sqlstate', None)}): {exc}", highlight=False)
        raise typer.Exit(1) from exc


def _query_db(settings: Settings, sql: str, fmt: str) -> None:
    application = _build(settings)
    try:
        session = application.new_session(user="cli")
        session.notice = lambda severity, message: err.print(f"{severity}: {message}", highlight=False)
        for stmt in session.split(sql):
            result = session.run(stmt)
            if result.columns is not None:
                _print_rows([c for c, _ in result.columns], list(result.rows or []), fmt)
            elif fmt == "table":
                out.print(result.tag, highlight=False)
        session.close()
    except MeansqlError as exc:
        _fail(exc)
    except Exception as exc:
        from server.errors import translate

        f = translate(exc)
        err.print(f"[red]error[/red] ({f.sqlstate}): {f.message}", highlight=False)
        raise typer.Exit(1) from exc
    finally:
        application.close()


@sql_app.command("query")
def sql_query(
    sql: Annotated[str, typer.Argument(help="SQL to run; MEANS works here too.")],
    db: DbOpt = None,
    url: UrlOpt = None,
    config: ConfigOpt = None,
    fmt: FormatOpt = "table",
) -> None:
    """Run SQL on the database file, or on a running server with --url."""
    if fmt not in ("table", "json", "csv"):
        raise typer.BadParameter("--format must be table, json or csv")
    if url:
        _query_url(url, sql, fmt)
    else:
        _query_db(_settings(config, db=db), sql, fmt)


@app.command()
def run(
    operator: Annotated[Path, typer.Argument(help="Operator YAML file.")],
    input: Annotated[str, typer.Option("--input", help='Input as JSON, e.g. {"text": "..."}.')],
    session: Annotated[Optional[str], typer.Option("--session", help="Session id recorded in unified_logs.")] = None,
    db: DbOpt = None,
    config: ConfigOpt = None,
    model: Annotated[Optional[str], typer.Option(help="litellm model (default: the operator's, then the configured one).")] = None,
) -> None:
    """Run one operator definition on one input, print its output and log the call."""
    from semantic_ops.operators import load_file

    try:
        inputs = json.loads(input)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"--input is not JSON: {exc}") from exc
    if not isinstance(inputs, dict):
        raise typer.BadParameter("--input must be a JSON object")
    settings = _settings(config, db=db, model=model)
    try:
        op = load_file(operator)
    except MeansqlError as exc:
        _fail(exc)
    application = _build(settings)
    try:
        ctx = application.executor.begin(session or f"run-{uuid.uuid4().hex[:8]}",
                                         lambda severity, message: err.print(f"{severity}: {message}", highlight=False))
        try:
            answer = application.executor.run_operator(op, inputs, ctx)
        finally:
            application.executor.end(ctx)
        out.print("NULL" if answer is None else (str(answer).lower() if isinstance(answer, bool) else str(answer)),
                  highlight=False)
    except MeansqlError as exc:
        _fail(exc)
    finally:
        application.close()


@training_app.command("mark")
def training_mark(
    trace_ids: Annotated[list[str], typer.Argument(help="trace_id values from unified_logs.")],
    untrainable: Annotated[bool, typer.Option("--untrainable", help="Mark as not trainable instead.")] = False,
    verified: Annotated[bool, typer.Option("--verified", help="A person checked the answer.")] = False,
    confidence: Annotated[float, typer.Option("--confidence", min=0.0, max=1.0, help="0 to 1.")] = 1.0,
    notes: Annotated[Optional[str], typer.Option("--notes")] = None,
    tags: Annotated[Optional[str], typer.Option("--tags", help="Comma-separated tags.")] = None,
    db: DbOpt = None,
    url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Mark logged model calls as training examples (again: the last mark wins)."""
    from training.annotations import mark_as_trainable

    tag_list = [t.strip() for t in tags.split(",") if t.strip()] if tags else None
    settings = _settings(config, db=db)
    try:
        n = mark_as_trainable(trace_ids, trainable=not untrainable, verified=verified, confidence=confidence,
                              notes=notes, tags=tag_list, db=None if url else settings.db, url=url)
    except MeansqlError as exc:
        _fail(exc)
    out.print(f"marked {n} trace(s) as {'not ' if untrainable else ''}trainable", highlight=False)


@training_app.command("stats")
def training_stats(
    cascade: Annotated[Optional[str], typer.Option("--cascade", help="Only this cascade_id.")] = None,
    db: DbOpt = None,
    url: UrlOpt = None,
    config: ConfigOpt = None,
    fmt: FormatOpt = "table",
    store_url: StoreUrlOpt = None,
) -> None:
    """Examples, trainable and verified counts per cascade and cell."""
    if url:
        sql = ("SELECT * FROM training_stats_by_cascade WHERE %s::VARCHAR IS NULL OR cascade_id = %s "
               "ORDER BY trainable_count DESC, cascade_id, cell_name")
        _query_url(url, sql, fmt, (cascade, cascade))
        return
    from training.retrieval import stats

    store = _local_store(_settings(config, db=db, store_url=store_url))
    try:
        try:
            cur = store.cursor()
            rows = stats(cur, cascade)
            cur.close()
        finally:
            store.close()
    except MeansqlError as exc:
        _fail(exc)
    columns = ["cascade_id", "cell_name", "example_count", "trainable_count", "verified_count", "avg_confidence"]
    _print_rows(columns, [[r[c] for c in columns] for r in rows], fmt)


ApiOpt = Annotated[Optional[str], typer.Option("--api", help="HTTP API of a running server, e.g. http://localhost:5050.")]
def _on_conflict(value: str) -> str:
    if value not in ("error", "skip", "update"):
        raise typer.BadParameter("--on-conflict must be error, skip or update")
    return value


OnConflictOpt = Annotated[str, typer.Option("--on-conflict", callback=_on_conflict,
                                            help="error, skip or update when source_trace_hash exists.")]


def _local_store(settings: Settings) -> Any:
    """The store serve would use: the DuckDB file, or the PostgreSQL store (store_url, else the upstream)."""
    from training.store import Store

    url = settings.store_postgres()
    try:
        if url is None:
            store = Store(settings.db)
            store.init()
            return store
        from training.pgattach import AttachedStore
        from training.pgstore import PostgresStore

        pg = PostgresStore(url)
        try:
            pg.init()
            attached = AttachedStore(pg)
        except BaseException:
            pg.close()
            raise
        attached.closing.append(pg.close)
        return attached
    except MeansqlError as exc:
        _fail(exc)


def _api_call(method: str, url: str, **kwargs: Any) -> Any:
    import httpx

    try:
        r = httpx.request(method, url, timeout=600, **kwargs)
    except httpx.HTTPError as exc:
        err.print(f"[red]error[/red]: {url}: {exc}", highlight=False)
        raise typer.Exit(1) from exc
    if r.status_code >= 400:
        err.print(f"[red]error[/red] (HTTP {r.status_code}): {r.text}", highlight=False)
        raise typer.Exit(1)
    return r


@training_app.command("import")
def training_import(
    file: Annotated[Path, typer.Argument(help="JSONL file, one example per line (as `training export` writes it).")],
    on_conflict: OnConflictOpt = "error",
    db: DbOpt = None,
    api: ApiOpt = None,
    config: ConfigOpt = None,
    store_url: StoreUrlOpt = None,
) -> None:
    """Import curated training examples; each line is reported, a bad line costs no other."""
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {file}: {exc.strerror}") from exc
    if api:
        results = _api_call("POST", f"{api.rstrip('/')}/training-examples/bulk", params={"on_conflict": on_conflict},
                            content=text.encode(), headers={"content-type": "application/x-ndjson"}).json()["results"]
    else:
        from training import examples

        items: list[Any] = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    items.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    items.append(f"line {n} is not JSON: {exc.msg}")
        store = _local_store(_settings(config, db=db, store_url=store_url))
        try:
            results = examples.bulk(store, items, on_conflict=on_conflict)  # type: ignore[arg-type]
        finally:
            store.close()
    counts: dict[str, int] = {}
    for r in results:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
        if r["status"] in ("invalid", "conflict"):
            err.print(f"line {r['index'] + 1}: {r['status']}: {r.get('error') or 'source_trace_hash exists: ' + str(r['id'])}",
                      highlight=False)
    out.print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing to import", highlight=False)
    if counts.get("invalid") or counts.get("conflict"):
        raise typer.Exit(1)


@training_app.command("export")
def training_export(
    fmt: Annotated[str, typer.Option("--format", help="jsonl, openai, csv or parquet.")] = "jsonl",
    output: Annotated[Path, typer.Option("-o", "--output", help="File to write.")] = Path("training_examples.jsonl"),
    domain: Annotated[Optional[str], typer.Option("--domain")] = None,
    cascade: Annotated[Optional[str], typer.Option("--cascade", help="Only this cascade_id.")] = None,
    min_quality: Annotated[Optional[float], typer.Option("--min-quality", help="0 to 100.")] = None,
    source_type: Annotated[Optional[str], typer.Option("--source-type")] = None,
    labels: Annotated[Optional[str], typer.Option("--labels", help="Comma-separated; any of them.")] = None,
    q: Annotated[Optional[str], typer.Option("--q", help="Full-text search.")] = None,
    db: DbOpt = None,
    api: ApiOpt = None,
    config: ConfigOpt = None,
    store_url: StoreUrlOpt = None,
) -> None:
    """Export curated examples (openai: chat fine-tuning JSONL)."""
    from training.export import FORMATS

    if fmt not in FORMATS:
        raise typer.BadParameter(f"--format must be one of {', '.join(FORMATS)}")
    query = {"domain": domain, "cascade_id": cascade, "min_quality": min_quality, "source_type": source_type,
             "labels": labels.split(",") if labels else None, "q": q}
    query = {k: v for k, v in query.items() if v is not None}
    n = 0
    if api:
        with output.open("wb") as fh:
            body = _api_call("GET", f"{api.rstrip('/')}/training-examples/export", params={**query, "format": fmt}).content
            fh.write(body)
        n = body.count(b"\n") if fmt in ("jsonl", "openai") else -1
    else:
        from pydantic import ValidationError

        from training import examples
        from training.export import export
        from training.models import ExampleFilter

        try:
            f = ExampleFilter.model_validate(query)
        except ValidationError as exc:
            raise typer.BadParameter(str(exc.errors()[0]["msg"])) from exc
        store = _local_store(_settings(config, db=db, store_url=store_url))
        try:
            seen = [0]

            def counted() -> Any:
                for e in examples.iter_examples(store, f):
                    seen[0] += 1
                    yield e

            with output.open("wb") as fh:
                for chunk in export(counted(), fmt):
                    fh.write(chunk)
            n = seen[0]
        finally:
            store.close()
    out.print(f"wrote {output}" + (f" ({n} examples)" if n >= 0 else ""), highlight=False)


@training_app.command("promote")
def training_promote(
    trace_ids: Annotated[list[str], typer.Argument(help="trace_id values from unified_logs.")],
    on_conflict: OnConflictOpt = "error",
    db: DbOpt = None,
    api: ApiOpt = None,
    config: ConfigOpt = None,
    store_url: StoreUrlOpt = None,
) -> None:
    """Promote logged (annotated) model answers into curated examples that keep the trace link."""
    if api:
        for tid in trace_ids:
            r = _api_call("POST", f"{api.rstrip('/')}/training-examples/from-trace/{tid}", params={"on_conflict": on_conflict})
            out.print(f"{tid} -> {r.json()['id']}", highlight=False)
        return
    from training import examples

    store = _local_store(_settings(config, db=db, store_url=store_url))
    try:
        for tid in trace_ids:
            example, status = examples.promote(store, tid, on_conflict=on_conflict)  # type: ignore[arg-type]
            out.print(f"{tid} -> {example.id} ({status})", highlight=False)
    except MeansqlError as exc:
        _fail(exc)
    finally:
        store.close()


@training_app.command("calibrate")
def training_calibrate(
    operator: Annotated[str, typer.Argument(help="cascade_id of the operator, e.g. semantic_matches.")],
    precision: Annotated[float, typer.Option("--precision", min=0.5, max=1.0, help="Target precision of the proxy's answers.")] = 0.95,
    db: DbOpt = None,
    url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Set a cascade's min_confidence from annotated examples so that the local judge reaches a precision."""
    if url:
        results = _calibrate_url(url, operator, precision)
    else:
        results = _calibrate_db(_settings(config, db=db), operator, precision)
    rows = [["(all)" if c[0] is None else c[0], c[1], f"{c[2]:.3f}", f"{c[3]:.3f}", f"{c[4]:.1%}"] for c in results]
    _print_rows(["criterion", "examples", "min_confidence", "precision", "answered by the local judge"], rows, "table")
    if results[0][1] == 0:
        err.print(f"no annotated examples of {operator} yet: mark some answers as trainable first", highlight=False)


Calibrated = tuple[Optional[str], int, float, float, float]  # criterion, examples, min_confidence, precision, share


def _calibrate_db(settings: Settings, operator: str, precision: float) -> list[Calibrated]:
    from semantic_ops.judges.local import calibrate

    application = _build(settings)
    try:
        op = application.registry.by_cascade.get(operator)
        if op is None:
            raise typer.BadParameter(f"no operator {operator!r}; known: {', '.join(sorted(application.registry.by_cascade))}")
        found = calibrate(application.training_store, application.embedder, op.cascade_id, op.cell.name, precision)
    except MeansqlError as exc:
        _fail(exc)
    finally:
        application.close()
    return [(c.criterion, c.examples, c.min_confidence, c.precision, c.share) for c in found]


def _calibrate_url(url: str, operator: str, precision: float) -> list[Calibrated]:
    """Calibrate in the running server (it holds the database and the embedding model)."""
    import psycopg

    from semantic_ops.judges.local import CALIBRATE

    try:
        with psycopg.connect(url, autocommit=True) as conn:
            rows = conn.execute(f"SELECT c.criterion, c.examples, c.min_confidence, c.precision, c.share "
                                f"FROM (SELECT unnest({CALIBRATE}(%s, %s)) AS c)", (operator, precision)).fetchall()
    except psycopg.Error as exc:
        diag = getattr(exc, "diag", None)
        err.print(f"[red]error[/red] ({getattr(diag, 'sqlstate', None)}): {exc}", highlight=False)
        raise typer.Exit(1) from exc
    return [tuple(r) for r in rows]  # type: ignore[misc]


def main() -> None:
    app()


if __name__ == "__main__":
    main()
