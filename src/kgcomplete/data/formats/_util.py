"""Helpers shared by the format readers."""

from __future__ import annotations

from ..vocabulary import align  # noqa: F401  (metadata Series -> array in vocabulary order)
