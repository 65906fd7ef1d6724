"""Pure pieces: answer parsing and prompt rendering."""

from __future__ import annotations

import datetime as dt

import pytest

from semantic_ops.answers import parse_boolean
from semantic_ops.operators import Cell
from semantic_ops.prompts import format_examples, render
from training.retrieval import Example


@pytest.mark.parametrize(("text", "expected"), [
    ("true", True), ("TRUE", True), ("Yes.", True), (" yes!\n", True), ("'true'", True), ("**False**", False),
    ("no", False), ("False.", False), ("maybe", None), ("true, because it is bamboo", None), ("", None),
    (None, None), ("1", None), ("yes no", None),
])
def test_parse_boolean_is_strict(text: str | None, expected: bool | None) -> None:
    assert parse_boolean(text) is expected


EX = [Example("t1", "bamboo toothbrush", "eco-friendly", "true", 1.0, True, dt.datetime(2026, 1, 1)),
      Example("t2", "a < b & c", None, "false", 0.5, False, None)]


def test_xml_format_escapes() -> None:
    assert format_examples(EX, "xml") == (
        "<examples>\n<example>\n  <input>bamboo toothbrush</input>\n  <criterion>eco-friendly</criterion>\n"
        "  <output>true</output>\n</example>\n<example>\n  <input>a &lt; b &amp; c</input>\n"
        "  <output>false</output>\n</example>\n</examples>"
    )


def test_markdown_and_few_shot_formats() -> None:
    assert format_examples(EX[:1], "markdown") == (
        "## Training Examples\n\n**Example 1:**\n- **Input:** bamboo toothbrush\n"
        "- **Criterion:** eco-friendly\n- **Output:** true"
    )
    assert format_examples(EX, "few_shot") == (
        "Example 1:\nInput: bamboo toothbrush\nCriterion: eco-friendly\nOutput: true\n\n"
        "Example 2:\nInput: a < b & c\nOutput: false"
    )


def test_render_puts_examples_in_the_system_message() -> None:
    cell = Cell(name="evaluate", system="Judge.", instructions="Criterion: {{ input.criterion }}\nText: {{ input.text }}",
                training_format="few_shot")
    msgs = render(cell, {"text": "steel bottle", "criterion": "eco"}, EX[:1])
    assert msgs[0]["role"] == "system" and msgs[0]["content"].startswith("Judge.\n\nExamples of correct answers:\nExample 1:")
    assert msgs[1] == {"role": "user", "content": "Criterion: eco\nText: steel bottle"}
    assert render(cell, {"text": "x", "criterion": "y"}, [])[0] == {"role": "system", "content": "Judge."}


@pytest.mark.parametrize("source", [
    "You judge whether a text matches a criterion. Answer with exactly one word: true or false.\n",
    "Does the text match?\n\nCriterion: {{ input.criterion }}\nText: {{input.text}}\n\nAnswer true or false.\n",
    "  {{ input.text }}  ",
    "{{ input.text }}{{ input.text }} }} and } alone",
    "Text: {{ input.text | upper }}",
    "{% if input.criterion %}C: {{ input.criterion }}{% endif %} T: {{ input.text }}",
    "Line one\r\nText: {{ input.text }}\r\n",
    "{# note #}Text: {{ input.text }}",
])
@pytest.mark.parametrize("inputs", [
    {"text": "bamboo {{ input.criterion }} bottle\n", "criterion": "eco-friendly"},
    {"text": 42, "criterion": 2.5},
    {"text": "  padded  ", "criterion": None},
    {"text": "x", "criterion": "y", "keys": "k"},
])
def test_render_is_what_jinja_makes_of_the_template(source: str, inputs: dict[str, object]) -> None:
    from semantic_ops.prompts import template

    cell = Cell(name="c", system=source, instructions=source)
    expected = template(source).render({"input": dict(inputs)}).strip()
    assert render(cell, inputs, []) == [{"role": "system", "content": expected}, {"role": "user", "content": expected}]


def test_render_looks_up_a_dict_attribute_name_as_jinja_does() -> None:
    cell = Cell(name="c", system="", instructions="Keys: {{ input.keys }}")
    assert render(cell, {"keys": "k"}, [])[0]["content"].startswith("Keys: <built-in method keys")


def test_render_of_a_missing_input_fails_as_jinja_does() -> None:
    import jinja2

    cell = Cell(name="c", system="", instructions="Text: {{ input.text }} {{ input.missing }}")
    with pytest.raises(jinja2.UndefinedError):
        render(cell, {"text": "x"}, [])
