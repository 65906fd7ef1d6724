"""The local judge: true/false answers from embeddings, offline, at no cost.

It answers a boolean operator from two things. Zero-shot, from the similarity
between the text and the criterion (true at or above a threshold). Once some
answers of the same operator and criterion are annotated as training examples,
from those: a prototype vote (is the text nearer the true examples, the
criterion counted among them, or the false ones?) and, for a text that is
nearly the same as an annotated one, that example's answer. So annotating
answers changes what it says. Its confidence (0 to 1) grows with the margin of
the decision; a cascade lets it answer only the rows it is confident about.

Pure parts (``decide``) take vectors and return decisions; ``LocalJudge``
fetches examples and vectors and speaks the Judge protocol.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import numpy.typing as npt

from semantic_ops.answers import parse_boolean
from semantic_ops.errors import SemanticError, UndefinedOperator
from semantic_ops.judges.base import Attempt, JudgeRequest, Outcome
from training.embeddings import Embedder
from training.stores import TrainingStore

if TYPE_CHECKING:
    from semantic_ops.operators import Registry

LOCAL = "local"
CALIBRATE = "meansql_calibrate"
CALIBRATION_TYPE = ('STRUCT(criterion VARCHAR, examples INTEGER, min_confidence DOUBLE, "precision" DOUBLE, '
                    "share DOUBLE)[]")

Vectors = npt.NDArray[np.float32]


def is_local(model: str | None) -> bool:
    """Whether a model name means the local judge ("local", or "local/<embedding model>")."""
    return model is not None and (model == LOCAL or model.startswith(LOCAL + "/"))


@dataclass(frozen=True)
class Params:
    """The local judge's knobs (defaults measured by bench/accuracy.py)."""

    threshold: float = 0.25  # zero-shot: similarity of text and criterion from which the answer is true
    margin_scale: float = 0.10  # a decision margin this wide (in cosine) is full confidence
    same_text: float = 0.95  # an annotated text at least this similar is the same text: its answer wins
    neighbour_weight: float = 0.5  # with examples of one answer only: pull of a near example on the margin
    neighbour_width: float = 0.05
    zero_shot_confidence: float = 0.5  # the most sure it is with no example of the criterion (similarity alone is a weak signal)


@dataclass(frozen=True)
class Decision:
    answer: bool
    confidence: float
    how: str  # "zero-shot", "examples" or "same text"


@dataclass(frozen=True)
class Examples:
    """Annotated answers of one operator and criterion, as vectors."""

    vectors: Vectors  # (n, dim)
    labels: npt.NDArray[np.bool_]  # (n,)

    @classmethod
    def empty(cls, dim: int) -> Examples:
        return cls(np.zeros((0, dim), dtype=np.float32), np.zeros(0, dtype=bool))


def _unit(v: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    n = float(np.linalg.norm(v))
    return np.asarray(v / n if n > 0 else v, dtype=np.float64)


def decide(texts: Vectors, criterion: npt.NDArray[np.float32], examples: Examples, params: Params = Params()) -> list[Decision]:
    """Answers for texts (rows of normalised vectors) against one criterion and its examples."""
    if len(texts) == 0:
        return []
    x = texts.astype(np.float64)
    zero_shot = x @ criterion.astype(np.float64) - params.threshold
    n_true, n_false = int(examples.labels.sum()), int((~examples.labels).sum())
    ex = examples.vectors.astype(np.float64)
    sims = x @ ex.T if len(ex) else np.zeros((len(x), 0))
    if n_true and n_false:
        # Prototypes: the criterion counts as one true example.
        true_c = _unit(ex[examples.labels].sum(axis=0) + criterion)
        false_c = _unit(ex[~examples.labels].sum(axis=0))
        margin = x @ true_c - x @ false_c
        how = "examples"
    elif n_true or n_false:
        sign = np.where(examples.labels, 1.0, -1.0)
        pull = (np.exp((sims - 1.0) / params.neighbour_width) * sign).sum(axis=1) * params.neighbour_weight
        margin = zero_shot + pull
        how = "examples"
    else:
        margin = zero_shot
        how = "zero-shot"
    cap = params.zero_shot_confidence if how == "zero-shot" else 1.0
    out = []
    for i, m in enumerate(margin):
        if sims.shape[1]:
            j = int(np.argmax(sims[i]))
            if sims[i, j] >= params.same_text:
                out.append(Decision(bool(examples.labels[j]), 1.0, "same text"))
                continue
        out.append(Decision(bool(m >= 0), float(cap * min(1.0, abs(m) / params.margin_scale)), how))
    return out


def leave_one_out(vectors: Vectors, labels: npt.NDArray[np.bool_], criterion: npt.NDArray[np.float32],
                  params: Params = Params()) -> list[Decision]:
    """Each example decided by the others (what the judge would say had it not been annotated)."""
    out = []
    for i in range(len(labels)):
        keep = np.arange(len(labels)) != i
        out.extend(decide(vectors[i:i + 1], criterion, Examples(vectors[keep], labels[keep]), params))
    return out


def threshold_for(decisions: Sequence[Decision], truth: Sequence[bool], target: float) -> tuple[float, float, float]:
    """The lowest confidence at which the answers' precision reaches target: (min_confidence, precision, share answered)."""
    order = sorted(range(len(decisions)), key=lambda i: -decisions[i].confidence)
    best = (1.01, 1.0, 0.0)  # nothing is confident enough: every row goes to the LLM
    right = 0
    for rank, i in enumerate(order, start=1):
        right += decisions[i].answer == truth[i]
        nxt = order[rank] if rank < len(order) else None
        if nxt is not None and decisions[nxt].confidence == decisions[i].confidence:
            continue  # a threshold cannot split equal confidences
        if right / rank >= target:
            best = (decisions[i].confidence, right / rank, rank / len(order))
    return best


ExampleSource = Callable[[str, str, str | None], list[tuple[str, bool]]]


def annotated_answers(store: TrainingStore, cascade_id: str, cell_name: str) -> list[tuple[str | None, str, bool]]:
    """(criterion, text, answer) of every trainable annotated call of an operator cell whose answer is true or false."""
    candidates = store.example_candidates(cascade_id=cascade_id, cell_name=cell_name, min_confidence=0.0,
                                          verified_only=False)
    out = []
    for e in candidates:
        answer = parse_boolean(e.output)
        if answer is not None and e.input:
            out.append((e.criterion, e.input, answer))
    return out


def store_examples(store: TrainingStore) -> ExampleSource:
    """Trainable annotated answers (text, answer) of an operator cell and criterion, from the store."""

    def fetch(cascade_id: str, cell_name: str, criterion: str | None) -> list[tuple[str, bool]]:
        return [(text, answer) for c, text, answer in annotated_answers(store, cascade_id, cell_name) if c == criterion]

    return fetch


class LocalJudge:
    """A Judge that answers true/false operators from embeddings (see the module's doc)."""

    def __init__(self, embedder: Embedder, examples: ExampleSource, params: Params = Params()) -> None:
        self.embedder = embedder
        self.examples = examples
        self.params = params
        self.name = embedder.name
        self.model = f"{LOCAL}/{embedder.name.removeprefix(LOCAL + '/')}"

    def judge(self, requests: list[JudgeRequest], cancel: threading.Event,
              progress: Callable[[int], None] | None = None) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(requests)
        groups: dict[tuple[str, str, str | None], list[int]] = {}
        for i, r in enumerate(requests):
            if r.inputs is None or r.cascade_id is None:
                outcomes[i] = Outcome([Attempt(1, error="the local judge needs the operator's inputs")])
                continue
            groups.setdefault((r.cascade_id, r.cell_name or "", r.criterion), []).append(i)
        done = 0
        for (cascade_id, cell_name, criterion), indexes in groups.items():
            if cancel.is_set():
                break
            started = time.monotonic()
            decisions = self.decide(cascade_id, cell_name, criterion,
                                    [_text(requests[i].inputs or {}) for i in indexes])
            each = (time.monotonic() - started) * 1000 / len(indexes)
            for i, d in zip(indexes, decisions):
                outcomes[i] = Outcome([Attempt(1, text="true" if d.answer else "false", cost=0.0, latency_ms=each,
                                               status=200, confidence=d.confidence, prompt_tokens=0, completion_tokens=0)])
            done += len(indexes)
            if progress is not None:
                progress(done)
        return [o if o is not None else Outcome([Attempt(1, error="cancelled")]) for o in outcomes]

    def decide(self, cascade_id: str, cell_name: str, criterion: str | None, texts: list[str]) -> list[Decision]:
        """Decisions for texts under one operator cell and criterion, with its annotated examples."""
        annotated = self.examples(cascade_id, cell_name, criterion)
        vectors = self.embedder.encode([*texts, criterion or "", *(t for t, _ in annotated)])
        n = len(texts)
        examples = Examples(vectors[n + 1:], np.array([a for _, a in annotated], dtype=bool)) if annotated \
            else Examples.empty(vectors.shape[1])
        return decide(vectors[:n], vectors[n], examples, self.params)

    def close(self) -> None:
        return None


def _text(inputs: Any) -> str:
    value = inputs.get("text", next(iter(inputs.values()), None))
    return "" if value is None else str(value)


@dataclass(frozen=True)
class Calibration:
    """A cascade threshold measured on annotated examples (criterion None: all of the operator's)."""

    criterion: str | None
    min_confidence: float
    precision: float
    share: float  # of the examples, those the proxy would answer
    examples: int


PER_CRITERION = 20  # a criterion with at least this many annotated examples gets its own threshold


def calibrate(store: TrainingStore, embedder: Embedder, cascade_id: str, cell_name: str, target: float,
              params: Params = Params()) -> list[Calibration]:
    """Thresholds at which the local judge reaches ``target`` precision, each example judged by the others; stored."""
    by_criterion: dict[str | None, dict[str, bool]] = {}
    for criterion, text, answer in annotated_answers(store, cascade_id, cell_name):
        by_criterion.setdefault(criterion, {})[text] = answer  # one vote per distinct text
    decisions: list[Decision] = []
    truth: list[bool] = []
    results: list[Calibration] = []
    for criterion, answers in by_criterion.items():
        texts = list(answers)
        vectors = embedder.encode([*texts, criterion or ""])
        labels = np.array([answers[t] for t in texts], dtype=bool)
        found = leave_one_out(vectors[:-1], labels, vectors[-1], params)
        decisions += found
        truth += labels.tolist()
        if len(texts) >= PER_CRITERION:
            results.append(Calibration(criterion, *threshold_for(found, labels.tolist(), target), len(texts)))
    overall = Calibration(None, *threshold_for(decisions, truth, target), len(truth))
    results.insert(0, overall)
    store.save_calibration([(cascade_id, c.criterion, c.min_confidence, target, c.examples, c.share) for c in results])
    return results


def register_calibrate(con: Any, store: TrainingStore, embedder: Embedder, registry: Registry) -> None:
    """Create MEANSQL_CALIBRATE(operator, precision): the thresholds it stored, one struct per criterion, (all) first.

    ``SELECT c.* FROM (SELECT unnest(meansql_calibrate('semantic_matches', 0.95)) AS c)`` gives them as rows.
    """

    def run(operator: str, precision: float) -> list[dict[str, Any]]:
        op = registry.by_cascade.get(operator)
        if op is None:
            raise UndefinedOperator(f"no operator {operator!r}; known: {', '.join(sorted(registry.by_cascade))}")
        if not 0.5 <= precision <= 1.0:
            raise SemanticError(f"the target precision must be between 0.5 and 1, got {precision}")
        return [{"criterion": c.criterion, "examples": c.examples, "min_confidence": c.min_confidence,
                 "precision": c.precision, "share": c.share}
                for c in calibrate(store, embedder, op.cascade_id, op.cell.name, precision)]

    con.create_function(CALIBRATE, run, ["VARCHAR", "DOUBLE"], duckdb.sqltype(CALIBRATION_TYPE), side_effects=True)
