"""Typed errors of the matcher. All are ValueErrors: each one is the caller's input being unusable,
so a service maps them to a 4xx answer, and each message names the file, row, field or asset."""

from __future__ import annotations

from cluster.errors import BenchmatchError


class MatcherError(BenchmatchError, ValueError):
    """Base class: the input to the matcher cannot be used as given."""


class RequirementsError(MatcherError):
    """Requirements failed validation. `errors` holds (field, message) pairs, fields dotted."""

    def __init__(self, message: str, errors: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.errors = errors or []


class CandidateError(MatcherError):
    """A candidate table (CSV or DataFrame) is malformed; the message names the row and column."""


class NoDataError(MatcherError):
    """There is nothing to match on: no result rows for the asset, or no candidates at all."""


class ModelError(MatcherError):
    """A performance model cannot be fitted, saved or loaded (names the file or metric)."""
