"""Storage: small repositories over one ``Database`` (SQLite or PostgreSQL)."""

from __future__ import annotations

from dataclasses import dataclass

from hangar.crypto import SecretBox
from hangar.store.agents import AgentStore
from hangar.store.db import Database, open_database
from hangar.store.environments import EnvironmentStore
from hangar.store.events import EventStore
from hangar.store.files import FileStore
from hangar.store.keys import KeyStore
from hangar.store.sessions import SessionStore
from hangar.store.tunnels import TunnelStore
from hangar.store.vaults import VaultStore
from hangar.store.work import WorkStore

__all__ = ["Database", "Store", "open_database"]


@dataclass(frozen=True)
class Store:
    """Every repository, sharing one database handle."""

    db: Database
    keys: KeyStore
    agents: AgentStore
    environments: EnvironmentStore
    sessions: SessionStore
    events: EventStore
    files: FileStore
    work: WorkStore
    vaults: VaultStore
    tunnels: TunnelStore

    @classmethod
    def open(cls, db: Database, secrets: SecretBox | None = None) -> Store:
        """``secrets`` seals vault credentials (without it, storing one fails)."""
        return cls(
            db=db,
            keys=KeyStore(db),
            agents=AgentStore(db),
            environments=EnvironmentStore(db),
            sessions=SessionStore(db),
            events=EventStore(db),
            files=FileStore(db),
            work=WorkStore(db),
            vaults=VaultStore(db, secrets),
            tunnels=TunnelStore(db, secrets),
        )
