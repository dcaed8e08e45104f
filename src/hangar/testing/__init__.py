"""Public test helpers: a real server process, a throwaway PostgreSQL cluster, fake upstreams.

Shipped as package code (not hidden in ``tests/``) so users can test their own integrations
against a real Hangar the way Hangar tests itself.
"""

from hangar.testing.postgres import PostgresCluster
from hangar.testing.server import ServerProcess, free_port

__all__ = ["PostgresCluster", "ServerProcess", "free_port"]
