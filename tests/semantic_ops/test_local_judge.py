"""The local judge: decisions from vectors (pure), and from the packaged model with annotated examples in a real store."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from semantic_ops.judges.base import JudgeRequest
from semantic_ops.judges.local import Examples, LocalJudge, Params, decide, is_local, leave_one_out, store_examples, threshold_for
from training.annotations import annotate
from training.embeddings import Embedder
from training.logs import LogRecord
from training.store import Store
from training.stores import DuckDBStore


def unit(*xs: float) -> np.ndarray:
    v = np.array(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_zero_shot_is_similarity_against_the_threshold() -> None:
    criterion = unit(1, 0, 0)
    texts = np.stack([unit(1, 0.2, 0), unit(0, 1, 0), unit(0.3, 1, 0)])
    got = decide(texts, criterion, Examples.empty(3), Params(threshold=0.25))
    assert [d.answer for d in got] == [True, False, True]
    assert [d.how for d in got] == ["zero-shot"] * 3
    # similarity alone is a weak signal: zero-shot, the judge is at most half sure
    assert got[0].confidence == 0.5 and got[1].confidence == 0.5 and 0 < got[2].confidence < 0.5


def test_examples_of_both_answers_vote_as_prototypes() -> None:
    criterion = unit(1, 0, 0)
    examples = Examples(np.stack([unit(0, 1, 0), unit(0, 0, 1)]), np.array([True, False]))
    got = decide(np.stack([unit(0.2, 1, 0.6), unit(0.3, 0.5, 1)]), criterion, examples)
    assert [(d.answer, d.how) for d in got] == [(True, "examples"), (False, "examples")]


def test_the_same_text_takes_its_annotated_answer() -> None:
    criterion = unit(1, 0, 0)
    text = unit(1, 0.1, 0)
    assert decide(text[None], criterion, Examples.empty(3))[0].answer is True
    flipped = decide(text[None], criterion, Examples(text[None], np.array([False])))[0]
    assert (flipped.answer, flipped.confidence, flipped.how) == (False, 1.0, "same text")


def test_calibration_finds_the_confidence_for_a_precision() -> None:
    vectors = np.stack([unit(1, 0, 0), unit(0.9, 0.1, 0), unit(0, 1, 0), unit(0.1, 0.9, 0)])
    labels = np.array([True, True, False, False])
    decisions = leave_one_out(vectors, labels, unit(1, 0, 0))
    assert [d.answer for d in decisions] == [True, True, False, False]
    min_conf, precision, share = threshold_for(decisions, list(labels), 0.95)
    assert precision == 1.0 and share == 1.0 and min_conf == min(d.confidence for d in decisions)
    wrong = threshold_for(decisions, [False, False, True, True], 0.95)
    assert wrong == (1.01, 1.0, 0.0)  # never right: the proxy answers nothing


def test_model_names() -> None:
    assert is_local("local") and is_local("local/all-MiniLM-L6-v2")
    assert not is_local("openai/gpt-4o-mini") and not is_local(None) and not is_local("localai/x")


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    e = Embedder()
    e.start()
    return e


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "j.duckdb")
    s.init()
    yield s
    s.close()


def _log(store: Store, text: str, criterion: str, answer: bool) -> str:
    rec = LogRecord(session_id="s", query_id="q", cascade_id="semantic_matches", cell_name="evaluate",
                    model="openai/stand-in", request={}, user_input=text, criterion=criterion,
                    inputs={"text": text, "criterion": criterion}, assistant_output="true" if answer else "false", answer=answer)
    store.append_logs([rec.row()]).result()
    return rec.trace_id


def _ask(judge: LocalJudge, *texts: str, criterion: str = "eco-friendly") -> list[tuple[bool | None, float | None]]:
    requests = [JudgeRequest(model=judge.model, messages=(), inputs={"text": t, "criterion": criterion}, criterion=criterion,
                             cascade_id="semantic_matches", cell_name="evaluate") for t in texts]
    outcomes = judge.judge(requests, threading.Event())
    return [({"true": True, "false": False}.get(o.text or ""), o.attempts[-1].confidence) for o in outcomes]


def test_annotations_flip_an_answer(embedder: Embedder, store: Store) -> None:
    judge = LocalJudge(embedder, store_examples(DuckDBStore(store)))
    assert judge.model == "local/all-MiniLM-L6-v2"
    before = _ask(judge, "Reusable steel water bottle", "Eco-friendly bamboo toothbrush")
    assert [a for a, _ in before] == [False, True]
    # an answer logged (say, from an LLM) is not an example until it is annotated
    steel = _log(store, "Reusable steel water bottle", "eco-friendly", True)
    bamboo = _log(store, "Eco-friendly bamboo toothbrush", "eco-friendly", False)
    assert [a for a, _ in _ask(judge, "Reusable steel water bottle", "Eco-friendly bamboo toothbrush")] == [False, True]
    annotate(store, [steel, bamboo])
    after = _ask(judge, "Reusable steel water bottle", "Eco-friendly bamboo toothbrush")
    assert after == [(True, 1.0), (False, 1.0)]
    # examples of another criterion do not count
    assert [a for a, _ in _ask(judge, "Reusable steel water bottle", criterion="made of metal")] == [True]
    # marking them untrainable takes them back out
    annotate(store, [steel, bamboo], trainable=False)
    assert [a for a, _ in _ask(judge, "Reusable steel water bottle", "Eco-friendly bamboo toothbrush")] == [False, True]


def test_examples_move_similar_texts_too(embedder: Embedder, store: Store) -> None:
    judge = LocalJudge(embedder, store_examples(DuckDBStore(store)))
    texts = ["I loved this film, a wonderful story", "A dull, boring and far too long movie"]
    train = {"An absolute delight from start to finish": True, "Beautifully acted and deeply moving": True,
             "Tedious, predictable and badly written": False, "A waste of two hours": False}
    ids = [_log(store, t, "a positive review", a) for t, a in train.items()]
    annotate(store, ids)
    got = _ask(judge, *texts, criterion="a positive review")
    assert [a for a, _ in got] == [True, False]
    assert all(c is not None and 0 < c <= 1 for _, c in got)


def test_requests_without_inputs_fail_plainly(embedder: Embedder, store: Store) -> None:
    judge = LocalJudge(embedder, store_examples(DuckDBStore(store)))
    outcome = judge.judge([JudgeRequest(model=judge.model, messages=())], threading.Event())[0]
    assert outcome.error == "the local judge needs the operator's inputs"


def test_calibrate_stores_the_threshold_a_cascade_then_uses(embedder: Embedder, store: Store) -> None:
    from semantic_ops.executor import Executor
    from semantic_ops.judges.local import calibrate
    from semantic_ops.operators import Cascade, Registry

    registry = Registry.load()
    op = registry.by_cascade["semantic_matches"].model_copy(deep=True)
    op.cells[0].cascade = Cascade(proxy="local", min_confidence=0.8)
    executor = Executor(store, registry, None, default_model=None)
    assert executor.min_confidence(op, "eco-friendly") == 0.8  # not calibrated: the YAML's
    texts = {"Bamboo toothbrush": True, "Organic cotton bag": True, "Recycled paper": True, "Compostable cup": True,
             "Plastic fork": False, "Styrofoam box": False, "Diesel engine": False, "Plastic wrap": False}
    annotate(store, [_log(store, t, "eco-friendly", a) for t, a in texts.items()])
    results = calibrate(DuckDBStore(store), embedder, "semantic_matches", "evaluate", 0.95)
    overall = results[0]
    assert overall.criterion is None and overall.examples == 8 and 0 <= overall.share <= 1
    assert overall.precision >= 0.95 or overall.share == 0
    assert executor.min_confidence(op, "eco-friendly") == overall.min_confidence
