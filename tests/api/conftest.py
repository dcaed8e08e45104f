"""Fixtures shared by the API test modules (pytest finds fixtures here by name)."""

from tests.vault_helpers import rec

__all__ = ["rec"]
