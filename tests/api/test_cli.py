"""The ``hangar`` command line, run as a real subprocess against real databases."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import anthropic
import httpx
import pytest
from anthropic.types.beta import BetaEnvironment

from hangar.testing import ServerProcess, free_port
from tests.helpers import strict

CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith(("HANGAR_", "ANTHROPIC_"))}
LINE = re.compile(r"^(OK|WARN|FAIL)  +([^:]+): (.*)$")


def hangar(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m hangar ARGS`` with no inherited HANGAR_*/ANTHROPIC_* settings."""
    return subprocess.run(
        [sys.executable, "-m", "hangar", *args],
        env={**CLEAN_ENV, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def db_args(server: ServerProcess) -> list[str]:
    """The flags that point a CLI command at ``server``'s database."""
    args = ["--data-dir", str(server.data_dir)]
    return args + (["--database-url", server.database_url] if server.database_url else [])


def create_key(server: ServerProcess, *extra: str) -> str:
    done = hangar("keys", "create", *extra, *db_args(server))
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    assert key.startswith("sk-hangar-") and "\n" not in key
    return key


def get(server: ServerProcess, path: str, key: str) -> httpx.Response:
    return httpx.get(server.base_url + path, headers={"authorization": f"Bearer {key}"}, timeout=10)


def listed(server: ServerProcess, *extra: str) -> list[dict[str, object]]:
    done = hangar("keys", "list", "--json", *extra, *db_args(server))
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


# --- keys -----------------------------------------------------------------------------------


def test_keys_create_list_revoke(server: ServerProcess) -> None:
    key = create_key(server, "--name", "ci robot")
    assert get(server, "/v1/agents", key).status_code == 200

    rows = [r for r in listed(server) if r["name"] == "ci robot"]
    assert len(rows) == 1
    row = rows[0]
    assert str(row["id"]).startswith("apikey_")
    assert row["kind"] == "admin" and row["workspace"] == "Default" and row["environment_id"] is None
    assert row["ends_with"] == key[-4:] and row["revoked_at"] is None
    table = hangar("keys", "list", *db_args(server))
    assert table.returncode == 0 and row["id"] in table.stdout and key not in table.stdout

    revoked = hangar("keys", "revoke", str(row["id"]), *db_args(server))
    assert revoked.returncode == 0, revoked.stderr
    # The running server notices at once: no cache, no restart.
    r = get(server, "/v1/agents", key)
    assert r.status_code == 401
    assert r.json()["error"] == {"type": "authentication_error", "message": "Authentication failed"}
    assert r.json()["request_id"] == r.headers["request-id"]

    assert row["id"] not in [r["id"] for r in listed(server)]
    [gone] = [r for r in listed(server, "--all") if r["id"] == row["id"]]
    assert gone["revoked_at"] is not None
    again = hangar("keys", "revoke", str(row["id"]), *db_args(server))
    assert again.returncode == 1 and "no active key" in again.stderr
    unknown = hangar("keys", "revoke", "apikey_nope", *db_args(server))
    assert unknown.returncode == 1


def test_environment_key(server: ServerProcess, client: anthropic.Anthropic) -> None:
    env = strict(BetaEnvironment, client.beta.environments.create(name="cli-env-key"))
    key = create_key(server, "--environment", env.id, "--name", "worker")
    [row] = [r for r in listed(server) if r["ends_with"] == key[-4:] and r["name"] == "worker"]
    assert row["kind"] == "environment" and row["environment_id"] == env.id
    assert row["workspace"] == "Default"

    missing = hangar("keys", "create", "--environment", "env_000000000000000000000nope", *db_args(server))
    assert missing.returncode == 1 and "no environment env_000000000000000000000nope" in missing.stderr
    assert missing.stdout == ""
    malformed = hangar("keys", "create", "--environment", "agent_123", *db_args(server))
    assert malformed.returncode == 2 and "not an environment id" in malformed.stderr
    other = hangar("keys", "create", "--environment", env.id, "--workspace", "elsewhere", *db_args(server))
    assert other.returncode == 1 and "is not in workspace 'elsewhere'" in other.stderr


# --- serve ----------------------------------------------------------------------------------


def start_serve(tmp_path: Path, env: dict[str, str], name: str) -> tuple[subprocess.Popen[str], str, Path]:
    """``hangar serve`` with settings from the environment only (no flags)."""
    port = free_port()
    log = tmp_path / f"{name}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hangar", "serve"],
            env={**CLEAN_ENV, "HANGAR_PORT": str(port), **env},
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return proc, base, log
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"serve did not start:\n{log.read_text()}")


def stop(proc: subprocess.Popen[str], sig: signal.Signals = signal.SIGTERM) -> tuple[int, float]:
    started = time.monotonic()
    proc.send_signal(sig)
    try:
        code = proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return code, time.monotonic() - started


def test_first_start_prints_one_admin_key_and_stores_only_its_hash(tmp_path: Path) -> None:
    data_dir = tmp_path / "from-env"
    proc, base, log = start_serve(tmp_path, {"HANGAR_DATA_DIR": str(data_dir)}, "first")
    try:
        found = re.findall(r"sk-hangar-[A-Za-z0-9_-]+", log.read_text())
        assert len(found) == 1, log.read_text()  # printed once, and only once
        key = found[0]
        r = httpx.get(base + "/v1/agents", headers={"authorization": f"Bearer {key}"}, timeout=10)
        assert r.status_code == 200, r.text
    finally:
        code, _ = stop(proc)
    assert code == 0

    assert (data_dir / "hangar.db").exists()  # $HANGAR_DATA_DIR was honoured
    stored = b"".join(p.read_bytes() for p in data_dir.rglob("hangar.db*") if p.is_file())
    assert key.encode() not in stored
    assert hashlib.sha256(key.encode()).hexdigest().encode() in stored

    # A second start has an admin key already: nothing new is created or printed.
    proc, base, log = start_serve(tmp_path, {"HANGAR_DATA_DIR": str(data_dir)}, "second")
    try:
        assert "sk-hangar-" not in log.read_text()
        r = httpx.get(base + "/v1/agents", headers={"authorization": f"Bearer {key}"}, timeout=10)
        assert r.status_code == 200
    finally:
        assert stop(proc)[0] == 0


def test_hangar_api_key_is_registered_not_printed(tmp_path: Path) -> None:
    key = "sk-hangar-chosen-" + "c" * 30
    proc, base, log = start_serve(
        tmp_path, {"HANGAR_DATA_DIR": str(tmp_path / "d"), "HANGAR_API_KEY": key}, "k"
    )
    try:
        assert "sk-hangar-" not in log.read_text()
        r = httpx.get(base + "/v1/agents", headers={"x-api-key": key}, timeout=10)
        assert r.status_code == 200
    finally:
        assert stop(proc)[0] == 0


def test_revoked_hangar_api_key_refuses_to_start(tmp_path: Path) -> None:
    key = "sk-hangar-revoked-" + "r" * 30
    args = ["--data-dir", str(tmp_path / "d")]
    proc, _, _ = start_serve(tmp_path, {"HANGAR_DATA_DIR": str(tmp_path / "d"), "HANGAR_API_KEY": key}, "r")
    assert stop(proc)[0] == 0
    [row] = [json.loads(line) for line in hangar("keys", "list", "--json", *args).stdout.splitlines()]
    assert hangar("keys", "revoke", row["id"], *args).returncode == 0
    done = hangar("serve", "--port", str(free_port()), *args, env={"HANGAR_API_KEY": key}, timeout=30)
    assert done.returncode == 1
    assert f"HANGAR_API_KEY: that key ({row['id']}) was revoked" in done.stderr


def test_serve_flags_override_environment(tmp_path: Path) -> None:
    port = free_port()
    data_dir = tmp_path / "flag-dir"
    env = {
        **CLEAN_ENV,
        "HANGAR_DATA_DIR": str(tmp_path / "env-dir"),
        "HANGAR_PORT": "1",
        "HANGAR_HOST": "0.0.0.9",
    }
    cmd = [sys.executable, "-m", "hangar", "serve", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--data-dir", str(data_dir)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None and time.monotonic() < deadline
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert (data_dir / "hangar.db").exists() and not (tmp_path / "env-dir").exists()
    assert f"Hangar listening on http://127.0.0.1:{port}" in err.decode()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_gracefully_with_status_0(make_server: object, sig: signal.Signals) -> None:
    srv: ServerProcess = make_server()  # type: ignore[operator]
    assert srv.proc is not None
    with httpx.Client(base_url=srv.base_url, headers={"x-api-key": srv.api_key}) as http:
        assert http.get("/v1/agents").status_code == 200  # leaves a keep-alive connection open
        started = time.monotonic()
        srv.proc.send_signal(sig)
        code = srv.proc.wait(15)
    assert code == 0, srv.log()
    assert time.monotonic() - started < 4
    assert "Hangar stopped." in srv.log()
    assert "Traceback" not in srv.log()


def test_sigterm_ends_open_event_streams_cleanly_and_promptly(make_server: object) -> None:
    """An open event stream (the normal state of a busy server) must not hold the shutdown:
    it ends cleanly, so the client sees the end of the stream (and may reconnect), not an error."""
    srv: ServerProcess = make_server()  # type: ignore[operator]
    assert srv.proc is not None
    with anthropic.Anthropic(base_url=srv.base_url, api_key=srv.api_key, max_retries=0) as client:
        env = client.beta.environments.create(name="shutdown")
        agent = client.beta.agents.create(name="shutdown", model="scripted")
        session = client.beta.sessions.create(agent=agent.id, environment_id=env.id)
        with client.beta.sessions.events.stream(session.id) as stream:
            client.beta.sessions.events.send(
                session.id, events=[{"type": "user.message", "content": [{"type": "text", "text": "hi"}]}]
            )
            assert next(iter(stream)).type == "user.message"  # the stream is live
            started = time.monotonic()
            srv.proc.send_signal(signal.SIGTERM)
            for _ in stream:  # whatever was still on its way; then the stream ends without an error
                pass
        code = srv.proc.wait(15)
    assert code == 0, srv.log()
    assert time.monotonic() - started < 4
    assert "timeout graceful shutdown exceeded" not in srv.log()
    assert "Exception in ASGI application" not in srv.log()


def test_invalid_setting_is_a_clear_error(tmp_path: Path) -> None:
    done = hangar("serve", env={"HANGAR_PORT": "99999"}, cwd=tmp_path)
    assert done.returncode == 2
    assert "invalid setting port" in done.stderr and "Traceback" not in done.stderr


# --- migrate --------------------------------------------------------------------------------


def test_migrate_and_check(tmp_path: Path) -> None:
    args = ["--data-dir", str(tmp_path / "m")]
    check = hangar("migrate", "--check", *args)
    assert check.returncode == 1 and "empty" in check.stdout
    assert not (tmp_path / "m" / "hangar.db").exists()  # --check changes nothing
    done = hangar("migrate", *args)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"database at revision \w+ \(was empty\)\n", done.stdout)
    again = hangar("migrate", *args)
    assert again.returncode == 0 and "(was" not in again.stdout
    assert hangar("migrate", "--check", *args).returncode == 0


# --- doctor ---------------------------------------------------------------------------------


def fake_tools(tmp_path: Path, **scripts: str) -> dict[str, str]:
    """A PATH holding only the given tools, each a shell script with the given body."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in list(bin_dir.iterdir()):
        name.unlink()
    for name, body in scripts.items():
        tool = bin_dir / name
        tool.write_text(f"#!/bin/sh\n{body}\n")
        tool.chmod(0o755)
    return {"PATH": str(bin_dir)}


def doctor(tmp_path: Path, env: dict[str, str], *args: str) -> tuple[int, dict[str, tuple[str, str]]]:
    done = hangar("doctor", "--data-dir", str(tmp_path / "doc"), *args, env=env)
    lines = done.stdout.splitlines()
    assert lines and re.fullmatch(r"\d+ ok, \d+ warning\(s\), \d+ failure\(s\)", lines[-1]), done.stdout
    checks: dict[str, tuple[str, str]] = {}
    for line in lines[:-1]:
        m = LINE.match(line)
        assert m, f"malformed doctor line: {line!r}"
        checks[m[2]] = (m[1], m[3])
    return done.returncode, checks


def test_doctor_all_ok(tmp_path: Path) -> None:
    assert hangar("migrate", "--data-dir", str(tmp_path / "doc")).returncode == 0
    env = fake_tools(tmp_path, bwrap="exit 0", socat="exit 0", prlimit="exit 0")
    code, checks = doctor(tmp_path, {**env, "HANGAR_ANTHROPIC_API_KEY": "sk-ant-test"})
    assert code == 0
    assert {name: level for name, (level, _) in checks.items()} == {
        "data dir": "OK",
        "database": "OK",
        "sandbox bwrap": "OK",
        "sandbox socat": "OK",
        "sandbox prlimit": "OK",
        "model routes": "OK",
        "anthropic key": "OK",
        "upstream": "OK",
    }
    assert "(current)" in checks["database"][1]
    assert checks["upstream"][1] == "https://api.anthropic.com (default)"
    assert "claude-* -> anthropic" in checks["model routes"][1]


def test_doctor_warnings_do_not_fail(tmp_path: Path) -> None:
    env = fake_tools(tmp_path, bwrap="exit 0")
    code, checks = doctor(tmp_path, env)
    assert code == 0
    assert checks["database"][0] == "WARN" and "hangar migrate" in checks["database"][1]
    assert not (tmp_path / "doc").exists()  # doctor creates nothing
    assert checks["sandbox socat"] == (
        "WARN",
        "socat not found: sandboxes with networking cannot reach the network (fix: apt-get install socat)",
    )
    assert (
        checks["sandbox prlimit"][0] == "WARN"
        and "apt-get install util-linux" in checks["sandbox prlimit"][1]
    )
    assert checks["anthropic key"][0] == "WARN"
    assert "HANGAR_ANTHROPIC_API_KEY" in checks["anthropic key"][1]


def test_doctor_failures(tmp_path: Path) -> None:
    code, checks = doctor(tmp_path, fake_tools(tmp_path))
    assert code == 1
    assert checks["sandbox bwrap"][0] == "FAIL"
    assert "apt-get install bubblewrap" in checks["sandbox bwrap"][1]

    broken = fake_tools(tmp_path, bwrap="echo 'bwrap: No permissions to create new namespace' >&2; exit 1")
    code, checks = doctor(tmp_path, broken)
    assert code == 1
    assert checks["sandbox bwrap"][0] == "FAIL"
    assert "No permissions to create new namespace" in checks["sandbox bwrap"][1]

    env = {**fake_tools(tmp_path, bwrap="exit 0"), "HANGAR_MODEL_ROUTES": '{"gpt-*": "nonesuch"}'}
    env["HANGAR_ANTHROPIC_BASE_URL"] = "api.example.com"
    code, checks = doctor(tmp_path, env)
    assert code == 1
    assert (
        checks["model routes"][0] == "FAIL" and "unknown provider(s): nonesuch" in checks["model routes"][1]
    )
    assert checks["upstream"][0] == "FAIL" and "not an http(s) URL" in checks["upstream"][1]

    env = {**fake_tools(tmp_path, bwrap="exit 0"), "HANGAR_MODEL_ROUTES": '{"llama-*": "openai"}'}
    code, checks = doctor(tmp_path, env)
    assert code == 1
    assert checks["openai upstream"][0] == "FAIL" and "(llama-*)" in checks["openai upstream"][1]
    assert "HANGAR_OPENAI_BASE_URL" in checks["openai upstream"][1]
    code, checks = doctor(tmp_path, {**env, "HANGAR_OPENAI_BASE_URL": "http://127.0.0.1:11434/v1"})
    assert code == 0 and checks["openai upstream"] == ("OK", "http://127.0.0.1:11434/v1")

    code, checks = doctor(
        tmp_path, fake_tools(tmp_path, bwrap="exit 0"), "--database-url", "postgresql://u:pw@127.0.0.1:1/x"
    )
    assert code == 1
    level, text = checks["database"]
    assert level == "FAIL" and "cannot reach postgresql://u:***@127.0.0.1:1/x" in text and "pw" not in text


def test_doctor_on_the_servers_database(server: ServerProcess, tmp_path: Path) -> None:
    done = hangar("doctor", *db_args(server), env=fake_tools(tmp_path, bwrap="exit 0"))
    [line] = [line for line in done.stdout.splitlines() if " database: " in line]
    assert line.startswith("OK") and "reachable" in line and "(current)" in line
