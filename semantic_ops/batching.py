"""Pure: N items in one prompt, and reading the JSON list of answers back."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from semantic_ops.judges.base import JudgeRequest
from semantic_ops.operators import Operator
from semantic_ops.prompts import template

DEFAULT_BATCH = """\
{{ question }}
Answer that question for each numbered item below.

{% for item in items %}{{ loop.index }}. {% for name, value in item.items() -%}
{{ name }}: {{ value }}{% if not loop.last %} | {% endif %}{% endfor %}
{% endfor %}
Answer with only a JSON array of {{ items|length }} booleans (true or false), one per item, in order."""

_ARRAY = re.compile(r"\[.*\]", re.S)


def request(op: Operator, model: str, items: Sequence[Mapping[str, Any]]) -> JudgeRequest:
    """One chat request judging every item; the cell's batch_instructions, or a generic wrapper."""
    cell = op.cell
    question = op.description or "Does the item match?"
    body = template(cell.batch_instructions or DEFAULT_BATCH).render(items=[dict(i) for i in items], question=question)
    messages = []
    if cell.system:
        messages.append({"role": "system", "content": template(cell.system).render(input={}).strip()})
    messages.append({"role": "user", "content": body.strip()})
    return JudgeRequest(model=model, messages=tuple(messages), temperature=cell.temperature,
                        max_tokens=max(cell.max_tokens or 16, 8 * len(items) + 16))


def parse(text: str | None, n: int) -> list[bool] | None:
    """A JSON array (or {"answers": [...]}) of exactly n booleans; anything else is None."""
    if text is None:
        return None
    match = _ARRAY.search(text)
    try:
        value = json.loads(match.group(0) if match else text)
    except json.JSONDecodeError:
        return None
    if isinstance(value, dict):
        value = value.get("answers")
    if not isinstance(value, list) or len(value) != n or not all(isinstance(v, bool) for v in value):
        return None
    return value
