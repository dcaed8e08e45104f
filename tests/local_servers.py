"""Loopback servers for the packages and repository tests: a PEP 503 simple index serving a wheel
built here, a tiny npm registry, and git's smart HTTP (``git http-backend``) behind a token check.
Everything binds 127.0.0.1 on a free port."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import subprocess
import tarfile
import threading
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

Route = Callable[[BaseHTTPRequestHandler], tuple[int, dict[str, str], bytes]]


@dataclass
class LocalServer:
    url: str
    hits: list[str] = field(default_factory=list)


@contextmanager
def serve(route: Route) -> Iterator[LocalServer]:
    info = LocalServer("")

    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            info.hits.append(f"{self.command} {self.path}")
            status, headers, body = route(self)
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _any

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    info.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield info
    finally:
        httpd.shutdown()
        httpd.server_close()


# ------------------------------------------------------------------------------ pip


def build_wheel(name: str, version: str, module_source: str) -> tuple[str, bytes]:
    """A pure-Python wheel with one module ``name`` (underscored); returns (filename, bytes)."""
    mod = name.replace("-", "_")
    dist = f"{mod}-{version}.dist-info"
    files = {
        f"{mod}/__init__.py": module_source.encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: hangar-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}\n"
        for path, data in files.items()
    )
    files[f"{dist}/RECORD"] = (record + f"{dist}/RECORD,,\n").encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return f"{mod}-{version}-py3-none-any.whl", buf.getvalue()


@contextmanager
def pip_index(packages: dict[str, tuple[str, bytes]]) -> Iterator[LocalServer]:
    """``packages``: project name → (wheel filename, bytes). The index is at ``<url>/simple/``."""

    def route(req: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
        parts = [p for p in req.path.split("?")[0].split("/") if p]
        if len(parts) == 2 and parts[0] == "simple" and parts[1] in packages:
            filename, data = packages[parts[1]]
            digest = hashlib.sha256(data).hexdigest()
            html = f'<html><body><a href="/files/{filename}#sha256={digest}">{filename}</a></body></html>'
            return 200, {"Content-Type": "text/html"}, html.encode()
        if len(parts) == 2 and parts[0] == "files":
            for filename, data in packages.values():
                if filename == parts[1]:
                    return 200, {"Content-Type": "application/octet-stream"}, data
        return 404, {"Content-Type": "text/plain"}, b"not found"

    with serve(route) as server:
        yield server


# ------------------------------------------------------------------------------ npm


def build_npm_tarball(name: str, version: str, index_js: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path, text in (
            ("package/package.json", json.dumps({"name": name, "version": version, "main": "index.js"})),
            ("package/index.js", index_js),
        ):
            data = text.encode()
            entry = tarfile.TarInfo(path)
            entry.size = len(data)
            entry.mode = 0o644
            tar.addfile(entry, io.BytesIO(data))
    return buf.getvalue()


@contextmanager
def npm_registry(name: str, version: str, tarball: bytes) -> Iterator[LocalServer]:
    def route(req: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
        path = req.path.split("?")[0]
        if path == f"/{name}":
            doc = {
                "name": name,
                "dist-tags": {"latest": version},
                "versions": {
                    version: {
                        "name": name,
                        "version": version,
                        "dist": {
                            "tarball": f"{server.url}/{name}/-/{name}-{version}.tgz",
                            "shasum": hashlib.sha1(tarball).hexdigest(),
                            "integrity": "sha512-"
                            + base64.b64encode(hashlib.sha512(tarball).digest()).decode(),
                        },
                    }
                },
            }
            return 200, {"Content-Type": "application/json"}, json.dumps(doc).encode()
        if path == f"/{name}/-/{name}-{version}.tgz":
            return 200, {"Content-Type": "application/octet-stream"}, tarball
        return 404, {"Content-Type": "application/json"}, b'{"error":"not found"}'

    with serve(route) as server:
        yield server


# ------------------------------------------------------------------------------ git


def make_repo(root: Path, name: str = "repo") -> Path:
    """A bare repository ``<root>/<name>.git`` with a README on ``main`` and a ``feature`` branch."""
    work = root / f"{name}-src"
    env = {**os.environ, "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}
    ident = ["-c", "user.name=t", "-c", "user.email=t@example.invalid"]

    def git(*args: str, cwd: Path = work) -> str:
        return subprocess.run(
            ["git", *ident, *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
        ).stdout.strip()

    work.mkdir(parents=True)
    git("init", "-q", "-b", "main")
    (work / "README").write_text("hello from main\n")
    git("add", "README")
    git("commit", "-q", "-m", "first")
    git("checkout", "-q", "-b", "feature")
    (work / "README").write_text("hello from feature\n")
    git("commit", "-q", "-am", "feature")
    git("checkout", "-q", "main")
    bare = root / f"{name}.git"
    git("clone", "-q", "--bare", str(work), str(bare), cwd=root)
    return bare


def commit_of(bare: Path, ref: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", str(bare), "rev-parse", ref], check=True, capture_output=True, text=True
    ).stdout.strip()


@contextmanager
def git_http(project_root: Path, token: str) -> Iterator[LocalServer]:
    """``git http-backend`` for the repositories under ``project_root``; every request must carry
    ``token`` as HTTP basic auth (any user name, the token as password) or as a bearer token.
    Requests with ``/forbidden/`` in the path get 403."""

    def route(req: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
        auth = req.headers.get("Authorization", "")
        ok = auth == f"Bearer {token}"
        if auth.startswith("Basic "):
            user_pass = base64.b64decode(auth[6:]).decode(errors="replace")
            ok = user_pass.partition(":")[2] == token
        if not ok:
            return 401, {"WWW-Authenticate": 'Basic realm="git"', "Content-Type": "text/plain"}, b"auth"
        path, _, query = req.path.partition("?")
        if "/forbidden/" in path:
            return 403, {"Content-Type": "text/plain"}, b"forbidden"
        length = int(req.headers.get("Content-Length") or 0)
        body = req.rfile.read(length) if length else b""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(project_root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": req.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": req.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": "127.0.0.1",
        }
        if req.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = req.headers["Content-Encoding"]
        if req.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = req.headers["Git-Protocol"]
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, check=False)
        head, _, payload = out.stdout.partition(b"\r\n\r\n")
        status, headers = 200, {}
        for line in head.decode(errors="replace").split("\r\n"):
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.split()[0])
            elif key:
                headers[key] = value.strip()
        return status, headers, payload

    with serve(route) as server:
        yield server
