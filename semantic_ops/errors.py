"""Errors raised while parsing, rewriting or executing semantic operators."""

from __future__ import annotations

from training.errors import MeansqlError


class SemanticError(MeansqlError):
    """Base of the semantic layer's errors."""


class SemanticSyntaxError(SemanticError, code="42601"):
    """A semantic operator is written wrongly (e.g. MEANS with no criterion)."""


class SemanticTypeError(SemanticError, code="42804"):
    """An argument of a semantic operator has the wrong type."""


class UndefinedOperator(SemanticError, code="42883"):
    """A semantic function or operator that the registry does not know."""


class OperatorDefinitionError(SemanticError, code="F0000"):
    """An operator YAML file is malformed; names the file and the field."""


class ModelNotConfigured(SemanticError, code="22023"):
    """A semantic operator ran with no model configured."""


class ModelCallFailed(SemanticError, code="38000"):
    """A model call still failed after its retries."""


class QueryCanceled(SemanticError, code="57014"):
    """The query was cancelled or ran past statement_timeout."""


class BudgetExceeded(SemanticError, code="54000"):
    """The query needs more model calls than meansql.max_calls allows."""
