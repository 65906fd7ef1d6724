"""Embeddings with the packaged all-MiniLM-L6-v2: vectors, the database cache, loading in the background."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import wait_for
from training.embeddings import LOCAL_DIM, Embedder, cosine
from training.errors import EmbeddingUnavailable
from training.retrieval import Example, nearest
from training.store import Store


@pytest.fixture(scope="module")
def local() -> Embedder:
    embedder = Embedder()
    embedder.start()
    return embedder


def test_vectors_are_normalised_and_mean_something(local: Embedder) -> None:
    v = local.encode(["a cat sleeps on the sofa", "a kitten naps on the couch", "quarterly tax filing deadline"])
    assert v.shape == (3, LOCAL_DIM) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    near, far = cosine(v[:1], v[1:2])[0], cosine(v[:1], v[2:3])[0]
    assert near > 0.6 and far < 0.2, (near, far)
    assert local.name == "local/all-MiniLM-L6-v2"


def test_same_text_same_vector_and_batches_of_repeats(local: Embedder) -> None:
    texts = ["repeat me"] * 5 + ["other"]
    v = local.encode(texts)
    assert np.array_equal(v[0], v[4]) and not np.array_equal(v[0], v[5])
    assert local.encode([]).shape == (0, LOCAL_DIM)


def test_vectors_are_cached_in_the_database(tmp_path: Path) -> None:
    store = Store(tmp_path / "e.duckdb")
    try:
        store.init()
        first = Embedder(store=store)
        vectors = first.encode(["bamboo toothbrush", "plastic fork"])
        assert first.encoded == 2
        cur = store.cursor()
        wait_for(lambda: cur.execute("SELECT count(*) FROM embedding_cache").fetchone() == (2,), what="cache rows")
        assert cur.execute("SELECT DISTINCT model, typeof(vector) FROM embedding_cache").fetchall() == [
            ("local/all-MiniLM-L6-v2", "FLOAT[384]")]

        def no_model(texts: list[str]) -> None:
            raise AssertionError(f"encoded {texts} again")

        again = Embedder(store=store, encoder=no_model)
        assert np.allclose(again.encode(["plastic fork", "bamboo toothbrush"]), vectors[::-1])
        assert again.encoded == 0
    finally:
        store.close()


def test_another_model_is_cached_by_name_at_its_width(tmp_path: Path) -> None:
    store = Store(tmp_path / "o.duckdb")
    try:
        store.init()
        calls: list[list[str]] = []

        def encoder(texts: list[str]) -> list[list[float]]:
            calls.append(texts)
            return [[float(len(t)), 1.0, 0.0] for t in texts]

        embedder = Embedder("openai/text-embedding-3-small", store=store, encoder=encoder)
        v = embedder.encode(["ab", "abcd", "ab"])
        assert calls == [["ab", "abcd"]] and v.shape == (3, 3)
        assert np.allclose(v[0], np.array([2, 1, 0]) / np.sqrt(5))
        cur = store.cursor()
        wait_for(lambda: cur.execute("SELECT count(*) FROM embedding_vectors").fetchone() == (2,), what="cache rows")
        assert cur.execute("SELECT DISTINCT model, len(vector) FROM embedding_vectors").fetchall() == [
            ("openai/text-embedding-3-small", 3)]
        again = Embedder("openai/text-embedding-3-small", store=store, encoder=encoder)
        assert np.allclose(again.encode(["abcd"]), v[1:2]) and calls == [["ab", "abcd"]]  # read from the table
    finally:
        store.close()


def test_start_returns_at_once_and_loads_in_the_background() -> None:
    embedder = Embedder()
    started = time.monotonic()
    embedder.start()
    assert time.monotonic() - started < 0.5
    assert embedder.ready(timeout=120)
    assert embedder.encode_one("hello").shape == (LOCAL_DIM,)


def test_an_encoder_is_required_for_other_models() -> None:
    with pytest.raises(EmbeddingUnavailable):
        Embedder("openai/text-embedding-3-small")


def _example(text: str, answer: str, criterion: str = "about animals") -> Example:
    return Example(trace_id=text, input=text, criterion=criterion, output=answer, confidence=1.0, verified=True, timestamp=None)


KNOWN = [
    _example("A puppy chewing a slipper", "true"),
    _example("Interest rates rise again", "false"),
    _example("A kitten asleep in a basket", "true"),
    _example("The recipe needs two eggs", "false"),
    _example("Quarterly earnings beat forecasts", "false"),
    _example("A tabby cat naps in the sun", "true", criterion="about pets"),
]


def test_semantic_strategy_picks_the_nearest_examples(local: Embedder) -> None:
    query = local.encode_one("a sleepy cat curled up")
    sims = (local.encode([e.input for e in KNOWN]) @ query).tolist()
    chosen = nearest(KNOWN, sims, limit=2, criterion="about animals")
    assert [e.input for e in chosen.examples] == ["A kitten asleep in a basket", "A puppy chewing a slipper"]
    assert (chosen.strategy, chosen.same_criterion, chosen.other_criteria) == ("semantic", 2, 0)
    # other criteria only fill up
    more = nearest(KNOWN, sims, limit=6, criterion="about animals")
    assert more.examples[-1].input == "A tabby cat naps in the sun" and more.other_criteria == 1
    money = nearest(KNOWN, (local.encode([e.input for e in KNOWN]) @ local.encode_one("stock market news")).tolist(),
                    limit=2, criterion="about animals")
    assert {e.input for e in money.examples} == {"Interest rates rise again", "Quarterly earnings beat forecasts"}


def test_semantic_strategy_balances_true_and_false(local: Embedder) -> None:
    query = local.encode_one("a sleepy cat curled up")
    sims = (local.encode([e.input for e in KNOWN]) @ query).tolist()

    def label(e: Example) -> bool | None:
        return {"true": True, "false": False}.get(e.output)

    chosen = nearest(KNOWN, sims, limit=2, criterion="about animals", label=label)
    # the nearest true one and the nearest false one (the puppy is nearer than any false example)
    assert [(e.input, e.output) for e in chosen.examples] == [("A kitten asleep in a basket", "true"),
                                                              ("Interest rates rise again", "false")]
    four = nearest(KNOWN, sims, limit=4, criterion="about animals", label=label)
    assert sorted(e.output for e in four.examples) == ["false", "false", "true", "true"]
    only_true = nearest(KNOWN[:1] + KNOWN[2:3], sims[:1] + sims[2:3], limit=2, criterion="about animals", label=label)
    assert len(only_true.examples) == 2  # one side only: no balancing to do
