"""Settings: the one table of meansql's settings.

Each field is a YAML key of meansql.yaml, an environment variable
``MEANSQL_<NAME>`` and, where the CLI offers it, a flag ``--<name>``.
Precedence: flag, then environment, then meansql.yaml, then the default.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from server.pgwire import auth, upstream
from training.errors import MeansqlError


class ConfigError(MeansqlError, code="F0000"):
    """meansql.yaml or an environment variable holds a bad value."""


class Settings(BaseModel):
    """Everything meansql can be told, with the default it assumes."""

    model_config = ConfigDict(extra="forbid")

    db: Path = Field(Path("meansql.duckdb"), description="DuckDB database file holding tables, logs and training data.")
    host: str = Field("127.0.0.1", description="Address the pg-wire server listens on.")
    port: int = Field(15432, ge=0, le=65535, description="Port of the pg-wire server (0: any free port).")
    model: str | None = Field(None, description="litellm model name used by operators that name none, e.g. openai/gpt-4o-mini; "
                                               "none: the local judge answers true/false operators.")
    embedding_model: str = Field(
        "local", description="Embedding model: local (the packaged all-MiniLM-L6-v2, offline) or a litellm embedding model.")
    vector_index_threshold: int = Field(
        0, ge=0, description="Vectors from which a nearest-neighbour search (VECTOR_SEARCH, the semantic strategy) "
        "goes through an in-memory HNSW index, built in the background, instead of an exact scan (0: always exact).")
    api_base: str | None = Field(None, description="Base URL of an OpenAI-compatible or self-hosted model server.")
    api_key: str | None = Field(None, description="API key passed to litellm; default: the provider's usual variable (OPENAI_API_KEY, ...).")
    operators_dir: Path | None = Field(None, description="Directory of operator YAML files that add to or override the built-ins.")
    max_concurrency: int = Field(64, ge=1, le=1024, description="Model calls in flight at once.")
    request_timeout: float = Field(30.0, gt=0, le=60, description="Seconds one model call may take before it is retried.")
    num_retries: int = Field(8, ge=0, le=10, description="Retries of a model call on 429, 5xx, timeouts and connection errors.")
    max_calls: int = Field(0, ge=0, description="Default of SET meansql.max_calls: most model calls one query may make (0: none).")
    cache: bool = Field(True, description="Default of SET meansql.cache: reuse answers judged before for the same prompt.")
    on_error: Literal["error", "null"] = Field(
        "error", description="Default of SET meansql.on_error: a value whose call failed fails the query, or is NULL.")
    http: bool = Field(True, description="Serve the HTTP API of the training store (OpenAPI docs at /docs) beside pg-wire.")
    http_port: int = Field(5050, ge=0, le=65535, description="Port of the HTTP API (0: any free port).")
    redis_url: str | None = Field(None, description="Redis to publish training events to (pub/sub channel training_events), e.g. redis://localhost:6379/0.")
    max_message_size: int = Field(256 * 1024 * 1024, ge=1024, le=1 << 30, description="Largest frontend message body accepted, in bytes.")
    users: dict[str, str] = Field(
        default_factory=dict, description="Users who may log in, name: password verifier (SCRAM-SHA-256$... or md5...); "
        "none: every login is trusted.")
    ssl_cert: Path | None = Field(None, description="TLS certificate file (PEM); with ssl_key, clients may use sslmode=require.")
    ssl_key: Path | None = Field(None, validate_default=True, description="TLS private key file (PEM) of ssl_cert.")
    max_connections: int = Field(100, ge=1, le=10_000, description="Most client sessions at once; one more gets FATAL 53300.")
    login_timeout: float = Field(60.0, gt=0, le=600, description="Seconds a connection may take to finish start-up and authentication.")
    upstream: str | None = Field(
        None, description="Proxy mode: the PostgreSQL to relay plain SQL to, postgresql://user:password@host:5432/db "
        "(sslmode= disable, prefer, require, verify-ca or verify-full; sslrootcert=).")
    upstream_auth: Literal["url", "passthrough"] = Field(
        "url", description="How meansql logs in to the upstream: as the URL's user (url), or as the client with "
        "the client's password, which meansql then asks for in clear (passthrough).")
    store_url: str | None = Field(
        None, description="Where logs, the answer cache and training data live: a PostgreSQL URL (its meansql schema, "
        "shared by many meansql processes) or duckdb (the db file); default: the upstream in proxy mode, else the db file.")
    claim_ttl: float = Field(
        30.0, gt=0, le=3600, description="Seconds a claim on a value being judged lasts unless its process renews it: "
        "how long others wait for a process that died mid-call before judging the value themselves.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Server log level.")
    log_format: Literal["rich", "json"] = Field("rich", description="Server log format: rich for people, json lines for machines.")

    @field_validator("users", mode="before")
    @classmethod
    def _users(cls, value: Any) -> Any:
        if isinstance(value, str):  # MEANSQL_USERS holds JSON
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not a JSON object of name: verifier: {exc}") from exc
        if isinstance(value, dict):
            for name, verifier in value.items():
                try:
                    auth.parse_verifier(str(verifier))
                except ValueError as exc:
                    raise ValueError(f"user {name}: {exc}") from exc
        return value

    @field_validator("upstream")
    @classmethod
    def _upstream(cls, value: str | None) -> str | None:
        if value:
            upstream.Target.parse(value)
        return value or None

    @field_validator("store_url")
    @classmethod
    def _store_url(cls, value: str | None) -> str | None:
        if value and value != "duckdb" and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL or duckdb")
        return value or None

    def store_postgres(self) -> str | None:
        """The PostgreSQL URL of the store, or None for the DuckDB file."""
        if self.store_url == "duckdb":
            return None
        if self.store_url:
            return self.store_url
        return self.upstream if self.upstream and self.upstream_auth == "url" else None

    @field_validator("ssl_key")
    @classmethod
    def _tls_pair(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if (value is None) != (info.data.get("ssl_cert") is None):
            raise ValueError("ssl_cert and ssl_key must be given together")
        return value

    @classmethod
    def config_path(cls, config: Path | None = None, db: Path | None = None,
                    environ: Mapping[str, str] | None = None) -> Path:
        """The meansql.yaml that load() reads: --config, else beside the database."""
        environ = os.environ if environ is None else environ
        return config or Path(db or environ.get(cls.env_name("db")) or cls.model_fields["db"].default).parent / "meansql.yaml"

    @classmethod
    def env_name(cls, field: str) -> str:
        return f"MEANSQL_{field.upper()}"

    @classmethod
    def load(
        cls,
        *,
        config: Path | None = None,
        overrides: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        """Settings from a YAML file, the environment and explicit overrides (e.g. CLI flags)."""
        environ = os.environ if environ is None else environ
        overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
        values: dict[str, Any] = {}
        db = Path(overrides.get("db") or environ.get(cls.env_name("db")) or cls.model_fields["db"].default)
        path = config or db.parent / "meansql.yaml"
        if config is not None and not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        if path.is_file():
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError as exc:
                raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
            if not isinstance(data, dict):
                raise ConfigError(f"{path}: must be a mapping of setting: value")
            values.update(data)
        for name in cls.model_fields:
            env = environ.get(cls.env_name(name))
            if env not in (None, ""):
                values[name] = env
        values.update(overrides)
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            raise ConfigError(
                f"setting '{field}' ({cls.env_name(field)} or {field}: in {path}): {first['msg']}"
            ) from exc
