"""``environment_variable`` credentials in a sandbox: the sandbox sees a placeholder, the egress
proxy puts the value into requests to the credential's hosts only (TLS intercepted with the
session's CA), and nowhere else. Every server is the tests' own, on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from hangar.config import Settings
from hangar.sandbox.inject import PLACEHOLDER_PREFIX, EnvCredential
from tests.canary import CanaryScan, RecordingServer, TestCA, new_canary

from .conftest import MakeExecutor, needs_bwrap, run

pytestmark = needs_bwrap


@pytest.fixture
def test_ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path)


@pytest.fixture
def inject_settings(tmp_path: Path, test_ca: TestCA) -> Settings:
    return Settings(data_dir=tmp_path / "data", egress_upstream_ca_file=test_ca.cert_file)


@pytest.fixture
def allowed(test_ca: TestCA) -> Iterator[RecordingServer]:
    with RecordingServer(tls=test_ca.server_context("127.0.0.1")) as server:
        yield server


@pytest.fixture
def other(test_ca: TestCA) -> Iterator[RecordingServer]:
    with RecordingServer(tls=test_ca.server_context("localhost")) as server:
        yield server


def credential(value: str, hosts: tuple[str, ...] | None = ("127.0.0.1",), **kw: bool) -> EnvCredential:
    return EnvCredential("vcrd_test", "vlt_test", "API_TOKEN", value, hosts, **kw)


LIMITED = {"type": "limited", "allowed_hosts": ["127.0.0.1", "localhost"]}


async def test_placeholder_inside_value_only_to_the_allowed_host(
    make_executor: MakeExecutor, inject_settings: Settings, allowed: RecordingServer, other: RecordingServer
) -> None:
    canary = new_canary("sbx")
    ex = make_executor(settings_=inject_settings, networking=LIMITED, credentials=[credential(canary)])
    a, b = allowed.port, other.port
    # The tests' hosts are loopback ones, which NO_PROXY would send to the sandbox's own lo.
    out, err = await run(ex, "unset NO_PROXY no_proxy; echo $API_TOKEN; env | grep -c hangar-ph-")
    placeholder = ex.secret_environment["API_TOKEN"]
    assert not err and out.splitlines() == [placeholder, "1"] and placeholder.startswith(PLACEHOLDER_PREFIX)

    # curl through the proxy: the session CA is trusted (no -k), header and body substituted.
    out, err = await run(
        ex,
        f'curl -sS -H "Authorization: Bearer $API_TOKEN" -d "token=$API_TOKEN" https://127.0.0.1:{a}/curl',
    )
    assert (out, err) == ("ok", False)
    # Chunked body, Basic credentials, Python's urllib (SSL_CERT_FILE, HTTPS_PROXY).
    out, err = await run(
        ex,
        f'printf "x=%s" "$API_TOKEN" | curl -sS -H "Transfer-Encoding: chunked" --data-binary @- '
        f"https://127.0.0.1:{a}/chunked && curl -sS -u user:$API_TOKEN https://127.0.0.1:{a}/basic && "
        'python3 -c "import os, urllib.request as u; print(u.urlopen(u.Request('
        f"'https://127.0.0.1:{a}/py', data=os.environ['API_TOKEN'].encode())).read().decode())\"",
    )
    assert (out, err) == ("ok\nok\nok", False)
    # Another host: a plain tunnel (the sandbox cannot verify its cert: -k), the placeholder as is.
    out, err = await run(
        ex, f'curl -sSk -H "Authorization: Bearer $API_TOKEN" -d "token=$API_TOKEN" https://localhost:{b}/x'
    )
    assert (out, err) == ("ok", False)

    by_path = {r.path: r for r in allowed.requests}
    assert by_path["/curl"].headers["authorization"] == f"Bearer {canary}"
    assert by_path["/curl"].body == f"token={canary}".encode()
    assert by_path["/chunked"].body == f"x={canary}".encode()
    assert by_path["/basic"].headers["authorization"] == "Basic " + base64.b64encode(
        f"user:{canary}".encode()
    ).decode("ascii")
    assert by_path["/py"].body == canary.encode()
    assert other.requests[0].headers["authorization"] == f"Bearer {placeholder}"
    assert other.requests[0].body == f"token={placeholder}".encode()

    # What the sandbox can see holds the placeholder only.
    scan = CanaryScan(canary)
    out, _ = await run(ex, "env; cat /proc/self/environ; cat /proc/1/environ; ls -la /run/hangar")
    scan.add("environment", out)
    out, _ = await run(
        ex,
        'grep -rlaF "$(echo ' + base64.b64encode(canary.encode()).decode() + ' | base64 -d)" '
        "/workspace /tmp /home /run /etc/ssl /dev/shm 2>/dev/null; echo done",
    )
    assert out == "done"
    scan.add_dir("workspace", ex.workdir)
    scan.add("other host", other.raw())
    scan.add("allowed host", allowed.raw(), expected=True)
    scan.check()


async def test_injection_locations_and_rotation(
    make_executor: MakeExecutor, inject_settings: Settings, allowed: RecordingServer
) -> None:
    canary = new_canary("hdr")
    ex = make_executor(
        settings_=inject_settings, networking=LIMITED, credentials=[credential(canary, body=False)]
    )
    a = allowed.port
    command = f'curl -sS --noproxy "" -H "X-Key: $API_TOKEN" -d "k=$API_TOKEN" https://127.0.0.1:{a}/h'
    assert await run(ex, command) == ("ok", False)
    placeholder = ex.secret_environment["API_TOKEN"]
    assert allowed.requests[-1].headers["x-key"] == canary
    assert allowed.requests[-1].body == f"k={placeholder}".encode()  # body injection is off
    # A rotated value applies to the next request; the placeholder (and the sandbox) stay.
    rotated = new_canary("rot")
    ex.configure(credentials=[credential(rotated, header=False, body=True)])
    assert ex.secret_environment["API_TOKEN"] == placeholder
    assert await run(ex, command) == ("ok", False)
    assert allowed.requests[-1].headers["x-key"] == placeholder
    assert allowed.requests[-1].body == f"k={rotated}".encode()


async def test_a_credential_host_the_environment_blocks_is_reported_once(
    make_executor: MakeExecutor, inject_settings: Settings
) -> None:
    cred = EnvCredential("vcrd_x", "vlt_x", "API_TOKEN", new_canary("blk"), ("*.blocked.example",))
    ex = make_executor(
        settings_=inject_settings,
        networking={"type": "limited", "allowed_hosts": ["127.0.0.1"]},
        credentials=[cred],
    )
    out, _ = await run(ex, "curl -sS -o /dev/null -w '%{http_code}' https://api.blocked.example/")
    assert "403" in out
    errors = ex.take_session_errors()
    assert [(e["type"], e["credential_id"], e["vault_id"]) for e in errors] == [
        ("credential_host_unreachable_error", "vcrd_x", "vlt_x")
    ]
    assert "api.blocked.example" in errors[0]["message"] and cred.secret_value not in errors[0]["message"]
    await run(ex, "curl -sS https://api.blocked.example/ ; curl -sS https://other.example/")
    assert ex.take_session_errors() == []  # once per credential; other.example is not its host


async def test_unrestricted_networking_goes_through_the_proxy_too(
    make_executor: MakeExecutor, inject_settings: Settings, allowed: RecordingServer
) -> None:
    canary = new_canary("unr")
    ex = make_executor(settings_=inject_settings, networking=None, credentials=[credential(canary)])
    a = allowed.port
    command = f'curl -sS --noproxy "" -H "X-Key: $API_TOKEN" https://127.0.0.1:{a}/p; echo $HTTPS_PROXY'
    out, err = await run(ex, command)
    assert not err and out.startswith("ok\nhttp://sandbox:"), out
    assert allowed.requests[-1].headers["x-key"] == canary
    # A direct connection, bypassing the proxy, carries the placeholder only.
    out, err = await run(ex, f'curl -sSk --noproxy "*" -H "X-Key: $API_TOKEN" https://127.0.0.1:{a}/direct')
    assert (out, err) == ("ok", False)
    assert allowed.requests[-1].headers["x-key"] == ex.secret_environment["API_TOKEN"]
    # The proxy's loopback port wants the session's token.
    assert ex.proxy is not None and ex.proxy.tcp_port is not None
    reply = await asyncio.to_thread(
        _raw_request, ex.proxy.tcp_port, f"CONNECT 127.0.0.1:{a} HTTP/1.1\r\n\r\n"
    )
    assert reply.startswith("HTTP/1.1 407")


def _raw_request(port: int, text: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(text.encode())
        return s.recv(4096).decode("latin-1")


async def test_large_bodies_and_the_body_limit(
    make_executor: MakeExecutor,
    inject_settings: Settings,
    allowed: RecordingServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    canary = new_canary("big")
    ex = make_executor(settings_=inject_settings, networking=LIMITED, credentials=[credential(canary)])
    a = allowed.port
    # 2 MiB: curl asks `Expect: 100-continue`, the proxy answers it and substitutes at the end.
    command = (
        f'{{ head -c 2097152 /dev/zero | tr "\\0" x; echo -n "$API_TOKEN"; }} | '
        f"curl -sS --noproxy '' -o /dev/null -w '%{{http_code}}' --data-binary @- https://127.0.0.1:{a}/big"
    )
    assert await run(ex, command) == ("200", False)
    body = allowed.requests[-1].body
    assert len(body) == 2097152 + len(canary) and body.endswith(canary.encode())
    monkeypatch.setattr("hangar.sandbox.inject.MAX_BODY_BYTES", 1024 * 1024)
    out, _ = await run(ex, command)
    assert out.startswith("413"), out
    # Chunked, the size is learnt mid-body: the proxy answers 413 and drains the rest, so the
    # client reads the answer instead of a connection reset.
    chunked = command.replace("--data-binary", "-H 'Transfer-Encoding: chunked' --data-binary")
    for _ in range(3):
        out, _ = await run(ex, chunked)
        assert out.startswith("413"), out
    assert len(allowed.requests) == 1  # the refused requests never reached the host


async def test_the_real_host_certificate_is_verified(
    make_executor: MakeExecutor, settings: Settings, allowed: RecordingServer
) -> None:
    """Without the tests' CA in the proxy's trust store, the value is not sent: 502."""
    ex = make_executor(settings_=settings, networking=LIMITED, credentials=[credential(new_canary("tls"))])
    out, err = await run(
        ex, f"curl -sS --noproxy '' -H \"X-Key: $API_TOKEN\" https://127.0.0.1:{allowed.port}/v"
    )
    assert err and "502" in out, out
    assert allowed.requests == []


async def test_plain_http_to_an_allowed_host_is_substituted(
    make_executor: MakeExecutor, inject_settings: Settings
) -> None:
    canary = new_canary("http")
    ex = make_executor(settings_=inject_settings, networking=LIMITED, credentials=[credential(canary)])
    with RecordingServer() as plain:
        command = (
            f'curl -sS --noproxy "" -H "X-Key: $API_TOKEN" -d "k=$API_TOKEN" http://127.0.0.1:{plain.port}/p'
        )
        assert await run(ex, command) == ("ok", False)
        command = command.replace("127.0.0.1", "localhost")  # not the credential's host
        assert await run(ex, command) == ("ok", False)
    placeholder = ex.secret_environment["API_TOKEN"]
    first, second = plain.requests
    assert (first.headers["x-key"], first.body) == (canary, f"k={canary}".encode())
    assert (second.headers["x-key"], second.body) == (placeholder, f"k={placeholder}".encode())
