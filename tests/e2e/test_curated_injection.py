"""Curated training_examples reach the prompt of their operator: training_source and training_min_quality."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import ServerProcess, collect_notices, create_products
from tests.fake_provider import FakeProvider

OPERATOR = """\
cascade_id: {name}
sql_function:
  name: {name}
  operator: {word}
  args: [{{name: text}}, {{name: criterion}}]
  returns: BOOLEAN
cells:
  - name: evaluate
    use_training: true
    training_limit: 5
    training_source: {source}
    training_min_quality: 70
    instructions: |
      Criterion: {{{{ input.criterion }}}}
      Text: {{{{ input.text }}}}
"""


def test_training_source_logs_curated_both(start_server: Callable[..., ServerProcess], tmp_path: Path,
                                           fresh_provider: FakeProvider) -> None:
    ops = tmp_path / "ops"
    ops.mkdir()
    for name, word, source in (("cur_logs", "LMEANS", "logs"), ("cur_only", "CMEANS", "curated"), ("cur_both", "BMEANS", "both")):
        (ops / f"{name}.yaml").write_text(OPERATOR.format(name=name, word=word, source=source))
    server = start_server("--operators-dir", str(ops))
    with server.connect() as conn:
        notices = collect_notices(conn)
        create_products(conn)
        for name in ("cur_logs", "cur_only", "cur_both"):
            word = {"cur_logs": "LMEANS", "cur_only": "CMEANS", "cur_both": "BMEANS"}[name]
            conn.execute(f"SELECT 'Eco-friendly bamboo toothbrush' {word} 'eco-friendly'")
            conn.execute("INSERT INTO training_annotations (trace_id, trainable) "
                         "SELECT trace_id, true FROM unified_logs WHERE cascade_id = %s", (name,))
            conn.execute("INSERT INTO training_examples (input_text, input_structured, output_text, quality_score, "
                         "cascade_id, cell_name) VALUES ('Recycled paper notebook', '{\"criterion\": \"eco-friendly\"}', "
                         "'true', 90, %s, 'evaluate'), ('Cheap plastic straw', '{}', 'false', 40, %s, 'evaluate')",
                         (name, name))
        prompts = {}
        for name, word in (("cur_logs", "LMEANS"), ("cur_only", "CMEANS"), ("cur_both", "BMEANS")):
            fresh_provider.reset()
            notices.clear()
            conn.execute(f"SELECT 'Organic cotton bag' {word} 'eco-friendly'")
            prompts[name] = (list(notices), fresh_provider.requests[0]["body"]["messages"][0]["content"])
    for _, system in prompts.values():
        assert "Cheap plastic straw" not in system  # quality 40 < training_min_quality 70
    assert prompts["cur_logs"][0] == ["Injected 1 training examples (recent strategy)"]
    assert "bamboo" in prompts["cur_logs"][1] and "notebook" not in prompts["cur_logs"][1]
    assert prompts["cur_only"][0] == ["Injected 1 training examples (recent strategy)"]
    assert "<input>Recycled paper notebook</input>" in prompts["cur_only"][1] and "bamboo" not in prompts["cur_only"][1]
    assert "<criterion>eco-friendly</criterion>" in prompts["cur_only"][1]
    assert prompts["cur_both"][0] == ["Injected 2 training examples (recent strategy)"]
    assert "notebook" in prompts["cur_both"][1] and "bamboo" in prompts["cur_both"][1]
