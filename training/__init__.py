"""The memory: logs of model calls, annotations and training examples."""

from __future__ import annotations

from training.annotations import mark_as_trainable

__all__ = ["mark_as_trainable"]
