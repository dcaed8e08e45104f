"""Fixtures: real ``hangar serve`` processes on SQLite and PostgreSQL, driven by the official client.

Every test that takes ``server`` or ``client`` runs once per backend. Set
``HANGAR_TEST_BACKENDS=sqlite`` to run only one locally; CI runs both.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import anthropic
import pytest

from hangar.testing import PostgresCluster, ServerProcess

API_KEY = "sk-hangar-test-" + "k" * 32
BACKENDS = [
    b.strip() for b in os.environ.get("HANGAR_TEST_BACKENDS", "sqlite,postgres").split(",") if b.strip()
]

# Files that take minutes of mostly waiting (server restarts in a loop, many CLI processes), longest
# first. `scripts/test` distributes whole files over the workers in collection order
# (`--dist loadfile --no-loadscope-reorder`): started first, these overlap the rest of the suite
# instead of trailing it on one worker.
SLOW_FIRST = (
    "tests/api/test_crash_recovery.py",
    "tests/api/test_cli.py",
    "tests/api/test_vault_validate_and_keys.py",
    "tests/api/test_durability.py",
    "tests/tunnel/test_agent_tunnel.py",
    "tests/api/test_hangar_worker.py",
    "tests/api/test_environment_worker.py",
)


@pytest.hookimpl(trylast=True)  # after pytest's own grouping by fixture parameters
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {path: i for i, path in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))  # stable


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def database_url_for(backend: str, request: pytest.FixtureRequest) -> str | None:
    if backend == "postgres":
        cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
        return cluster.create_database()
    return None


@pytest.fixture(scope="session")
def server(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    data_dir = tmp_path_factory.mktemp(f"hangar-{backend}")
    proc = ServerProcess(data_dir, api_key=API_KEY, database_url=database_url_for(backend, request))
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def make_server(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[type[ServerProcess] | object]:
    """Factory for tests that need their own server (restarts, special settings)."""
    started: list[ServerProcess] = []

    def make(
        env: dict[str, str] | None = None, data_dir: Path | None = None, database_url: str | None = None
    ) -> ServerProcess:
        url = database_url if database_url is not None else database_url_for(backend, request)
        proc = ServerProcess(
            data_dir or tmp_path / f"srv{len(started)}", api_key=API_KEY, database_url=url, env=env
        )
        started.append(proc)
        return proc.start()

    yield make
    for proc in started:
        proc.stop()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=server.base_url, api_key=API_KEY, max_retries=0) as c:
        yield c
