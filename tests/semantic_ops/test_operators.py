"""Operator YAML: the built-in MEANS, users' files, and errors that name file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from semantic_ops.errors import OperatorDefinitionError
from semantic_ops.operators import Registry, load_file


def test_builtin_means_has_the_quick_start_fields() -> None:
    reg = Registry.load()
    op = reg.by_cascade["semantic_matches"]
    assert reg.infix == {"MEANS": "semantic_matches"}
    cell = op.cell
    assert (cell.name, cell.use_training, cell.training_strategy, cell.training_format) == ("evaluate", True, "recent", "xml")
    assert op.signature().udf_name == "meansql_semantic_matches"
    assert "{{ input.text }}" in cell.instructions and "{{ input.criterion }}" in cell.instructions


def test_user_dir_adds_and_overrides(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text(
        "cascade_id: semantic_matches\nsql_function: {name: semantic_matches, operator: MEANS, args: [{name: text}, "
        "{name: criterion}]}\ncells: [{name: evaluate, instructions: 'x', training_format: markdown}]\n")
    (tmp_path / "tone.yml").write_text(
        "cascade_id: tone\nsql_function: {name: tone_of, args: [{name: text}], returns: VARCHAR}\n"
        "cells: [{name: classify, instructions: '{{ input.text }}'}]\n")
    reg = Registry.load(tmp_path)
    assert reg.by_cascade["semantic_matches"].cell.training_format == "markdown"
    assert reg.function("TONE_OF").returns == "VARCHAR"


@pytest.mark.parametrize(("body", "field"), [
    ("cascade_id: x\ncells: [{name: a, instructions: b, training_limit: -1}]", "cells.0.training_limit"),
    ("cascade_id: x\ncells: [{name: a, instructions: b, training_format: html}]", "cells.0.training_format"),
    ("cascade_id: x\ncells: [{name: a}]", "cells.0.instructions"),
    ("cascade_id: x\ncells: [{name: a, instructions: b, colour: red}]", "cells.0.colour"),
    ("cascade_id: x\nsql_function: {name: 'bad name', args: [{name: t}]}\ncells: [{name: a, instructions: b}]",
     "sql_function.name"),
    ("cells: [{name: a, instructions: b}]", "cascade_id"),
])
def test_malformed_file_names_file_and_field(tmp_path: Path, body: str, field: str) -> None:
    path = tmp_path / "op.yaml"
    path.write_text(body)
    with pytest.raises(OperatorDefinitionError) as info:
        load_file(path)
    assert str(path) in info.value.message and f"field '{field}'" in info.value.message


def test_not_yaml(tmp_path: Path) -> None:
    path = tmp_path / "op.yaml"
    path.write_text("cascade_id: [unclosed")
    with pytest.raises(OperatorDefinitionError, match="not valid YAML"):
        load_file(path)
