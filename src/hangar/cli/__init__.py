"""The ``hangar`` command line: serve | migrate | keys | doctor."""

from __future__ import annotations

from hangar.cli.main import app, main

__all__ = ["app", "main"]
