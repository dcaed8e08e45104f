"""The object graph a running server owns, built once by ``create_app``."""

from __future__ import annotations

from dataclasses import dataclass

from hangar.config import Settings
from hangar.store import Store


@dataclass
class Services:
    settings: Settings
    store: Store
