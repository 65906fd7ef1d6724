"""Pure: an operator, one input and chosen examples become chat messages."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any
from xml.sax.saxutils import escape

import jinja2

from semantic_ops.operators import Cell
from training.retrieval import Example

_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)


@lru_cache(maxsize=256)
def template(source: str) -> jinja2.Template:
    """A compiled Jinja2 template (cached by its text)."""
    return _ENV.from_string(source)


# `{{ input.name }}`, the one construct most operator templates use.
_FIELD = re.compile(r"\{\{\s*input\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


@lru_cache(maxsize=256)
def _fields(source: str) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """A template that is only text and `{{ input.name }}` fields, as (texts, names) around and between the fields.

    None for anything else, which Jinja2 renders: other syntax (any `{` left in the text), a carriage return
    (Jinja2 turns line ends into `\\n`), or a name that is an attribute of a dict (Jinja2 would look it up as one).
    """
    pieces = _FIELD.split(source)
    texts, names = tuple(pieces[0::2]), tuple(pieces[1::2])
    if "\r" in source or any("{" in t for t in texts) or any(hasattr(dict, n) for n in names):
        return None
    return texts, names


def _render(source: str, inputs: Mapping[str, Any]) -> str:
    """The template rendered with `input` and stripped; what Jinja2 makes of it, without its per-render set-up
    (about 0.1 ms a template, for every value a query judges) when the template has only `{{ input.name }}` fields."""
    fields = _fields(source)
    if fields is not None:
        texts, names = fields
        if all(n in inputs for n in names):  # a missing one is Jinja2's error to raise
            parts = [texts[0]]
            for name, text in zip(names, texts[1:]):
                parts.append(str(inputs[name]))  # what `{{ value }}` prints without autoescape
                parts.append(text)
            return "".join(parts).strip()
    return template(source).render({"input": dict(inputs)}).strip()


def _xml(examples: Sequence[Example]) -> str:
    parts = ["<examples>"]
    for e in examples:
        parts.append("<example>")
        parts.append(f"  <input>{escape(e.input)}</input>")
        if e.criterion is not None:
            parts.append(f"  <criterion>{escape(e.criterion)}</criterion>")
        parts.append(f"  <output>{escape(e.output)}</output>")
        parts.append("</example>")
    parts.append("</examples>")
    return "\n".join(parts)


def _markdown(examples: Sequence[Example]) -> str:
    parts = ["## Training Examples"]
    for i, e in enumerate(examples, 1):
        parts.append(f"\n**Example {i}:**")
        parts.append(f"- **Input:** {e.input}")
        if e.criterion is not None:
            parts.append(f"- **Criterion:** {e.criterion}")
        parts.append(f"- **Output:** {e.output}")
    return "\n".join(parts)


def _few_shot(examples: Sequence[Example]) -> str:
    parts = []
    for i, e in enumerate(examples, 1):
        lines = [f"Example {i}:", f"Input: {e.input}"]
        if e.criterion is not None:
            lines.append(f"Criterion: {e.criterion}")
        lines.append(f"Output: {e.output}")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


FORMATS: dict[str, Callable[[Sequence[Example]], str]] = {
    "xml": _xml,
    "markdown": _markdown,
    "few_shot": _few_shot,
}


def format_examples(examples: Sequence[Example], fmt: str) -> str:
    """The examples block in one of FORMATS."""
    return FORMATS[fmt](examples)


def render(cell: Cell, inputs: Mapping[str, Any], examples: Sequence[Example]) -> list[dict[str, str]]:
    """Chat messages for one call: system (with examples, if any), then the instructions."""
    system = _render(cell.system, inputs) if cell.system else ""
    if examples:
        block = "Examples of correct answers:\n" + format_examples(examples, cell.training_format)
        system = f"{system}\n\n{block}" if system else block
    messages = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": _render(cell.instructions, inputs)})
    return messages
