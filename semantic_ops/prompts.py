"""Pure: an operator, one input and chosen examples become chat messages."""

from __future__ import annotations

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
    context = {"input": dict(inputs)}
    system = template(cell.system).render(context).strip() if cell.system else ""
    if examples:
        block = "Examples of correct answers:\n" + format_examples(examples, cell.training_format)
        system = f"{system}\n\n{block}" if system else block
    messages = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": template(cell.instructions).render(context).strip()})
    return messages
