"""Annotated examples reach the prompt in every format and strategy, per operator."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import ServerProcess, collect_notices, create_products
from tests.fake_provider import FakeProvider

OPERATOR = """\
cascade_id: {cascade}
sql_function:
  name: {name}
  operator: {word}
  args: [{{name: text}}, {{name: criterion}}]
  returns: BOOLEAN
cells:
  - name: evaluate
    use_training: true
    training_limit: 2
    training_strategy: {strategy}
    training_format: {fmt}
    training_min_confidence: 0.5
    training_verified_only: {verified_only}
    instructions: |
      Criterion: {{{{ input.criterion }}}}
      Text: {{{{ input.text }}}}
"""

CASES = {
    # name: (word, strategy, format, verified_only, the block's marker)
    "means_xml": ("XMEANS", "recent", "xml", "false", "<example>"),
    "means_md": ("MDMEANS", "high_confidence", "markdown", "false", "**Example 1:**"),
    "means_fs": ("FSMEANS", "random", "few_shot", "true", "Example 1:\nInput: "),
}


def test_formats_strategies_and_filters(start_server: Callable[..., ServerProcess], tmp_path: Path,
                                        fresh_provider: FakeProvider) -> None:
    ops = tmp_path / "ops"
    ops.mkdir()
    for name, (word, strategy, fmt, verified_only, _) in CASES.items():
        (ops / f"{name}.yaml").write_text(OPERATOR.format(cascade=name, name=name, word=word, strategy=strategy,
                                                          fmt=fmt, verified_only=verified_only))
    server = start_server("--operators-dir", str(ops))
    with server.connect() as conn:
        notices = collect_notices(conn)
        create_products(conn)
        for name, (word, *_rest) in CASES.items():
            conn.execute(f"SELECT description {word} 'eco-friendly' FROM products")
            traces = dict(conn.execute("SELECT user_input, trace_id FROM unified_logs WHERE cascade_id = %s",
                                       (name,)).fetchall())
            # bamboo: verified, 0.6; cotton: not verified, 1.0; plastic: too little confidence
            for text, verified, conf in (("Eco-friendly bamboo toothbrush", True, 0.6),
                                         ("Sustainable cotton t-shirt", False, 1.0),
                                         ("Plastic water bottle", True, 0.2)):
                conn.execute("INSERT INTO training_annotations (trace_id, trainable, verified, confidence) "
                             "VALUES (%s, true, %s, %s)", (traces[text], verified, conf))
        for name, (word, strategy, _fmt, verified_only, marker) in CASES.items():
            fresh_provider.reset()
            notices.clear()
            conn.execute(f"SELECT 'Organic cotton bag' {word} 'eco-friendly'")
            system = fresh_provider.requests[0]["body"]["messages"][0]["content"]
            assert marker in system, (name, system)
            assert "Plastic water bottle" not in system  # below training_min_confidence
            if verified_only == "true":
                assert notices == [f"Injected 1 training examples ({strategy} strategy)"]
                assert "bamboo" in system and "cotton t-shirt" not in system
            else:
                assert notices == [f"Injected 2 training examples ({strategy} strategy)"]
            if strategy == "high_confidence":  # 1.0 before 0.6
                assert system.index("Sustainable cotton t-shirt") < system.index("Eco-friendly bamboo toothbrush")


def _ask_after_annotating(server: ServerProcess, provider: FakeProvider, judged: list[str], question: str
                          ) -> tuple[list[str], str]:
    """Judge products under some criteria, mark every call trainable, then ask one question:
    the NOTICEs of that question and the system prompt it sent."""
    with server.connect() as conn:
        create_products(conn)
        for sql in judged:
            conn.execute(sql)
        conn.execute("INSERT INTO training_annotations (trace_id, trainable) SELECT trace_id, true FROM unified_logs")
        provider.reset()
        notices = collect_notices(conn)
        conn.execute(question)
    return notices, provider.requests[0]["body"]["messages"][0]["content"]


def test_examples_of_the_same_criterion_come_first(server: ServerProcess, fresh_provider: FakeProvider) -> None:
    notices, system = _ask_after_annotating(
        server, fresh_provider,
        ["SELECT description MEANS 'eco-friendly' FROM products", "SELECT 'Gold watch' MEANS 'luxury'"],
        "SELECT 'Silk scarf' MEANS 'luxury'")
    assert notices == ["Injected 5 training examples (recent strategy): 1 for 'luxury', 4 from other criteria"]
    assert system.index("Gold watch") < system.index("<criterion>eco-friendly</criterion>")


def test_other_criteria_stay_out_while_the_same_criterion_has_enough(server: ServerProcess,
                                                                      fresh_provider: FakeProvider) -> None:
    notices, system = _ask_after_annotating(
        server, fresh_provider,
        ["SELECT description MEANS 'eco-friendly' FROM products", "SELECT description MEANS 'luxury' FROM products"],
        "SELECT 'Gold ring' MEANS 'luxury'")
    assert notices == ["Injected 5 training examples (recent strategy)"]
    assert system.count("<criterion>luxury</criterion>") == 5 and "eco-friendly" not in system
