"""``github_repository`` session resources: validation at session create and token rotation.

Any git URL over ``https://`` or ``http://`` is accepted (not only GitHub). The token is sealed
(:mod:`hangar.crypto`, bound to the resource's row) in the resource's ``secret`` column and never
returned; the clone itself happens when the session first runs (:mod:`hangar.runtime.provision`).
"""

from __future__ import annotations

import posixpath
import re
from typing import Any, Final
from urllib.parse import urlsplit

from hangar.errors import InvalidRequest
from hangar.ids import new_id
from hangar.sandbox.resources import default_repo_mount
from hangar.services import Services
from hangar.store.db import now_us
from hangar.store.sessions import resource_aad
from hangar.wire.common import ts

FIELDS: Final = ("type", "url", "authorization_token", "checkout", "mount_path")
MAX_URL: Final = 2048
MAX_TOKEN: Final = 8192
MOUNT_ROOTS: Final = ("/workspace/", "/mnt/")
RESERVED: Final = ("/mnt/session", "/mnt/memory", "/mnt/clone")
_SHA = re.compile(r"^[0-9a-fA-F]{4,64}$")
_BRANCH_BAD = re.compile(r"[\x00-\x20~^:?*\[\\]|\.\.|@\{|^-|/$|\.lock$")


def check_url(raw: Any, path: str) -> str:
    if not isinstance(raw, str) or not raw:
        raise InvalidRequest(f"{path}: field required")
    if len(raw) > MAX_URL:
        raise InvalidRequest(f"{path}: at most {MAX_URL} characters")
    parts = urlsplit(raw)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise InvalidRequest(f"{path}: expected an https:// (or http://) git repository URL")
    if parts.username is not None or parts.password is not None:
        raise InvalidRequest(f"{path}: must not contain credentials; use authorization_token")
    if any(c.isspace() or c == "\x00" for c in raw):
        raise InvalidRequest(f"{path}: must not contain whitespace")
    return raw


def check_token(raw: Any, path: str) -> str:
    if not isinstance(raw, str) or not raw:
        raise InvalidRequest(f"{path}: expected a non-empty string")
    if len(raw) > MAX_TOKEN or any(c in raw for c in "\x00\r\n"):
        raise InvalidRequest(f"{path}: expected a token of at most {MAX_TOKEN} characters on one line")
    return raw


def check_checkout(raw: Any, path: str) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{path}: expected an object")
    kind = raw.get("type")
    if kind == "branch":
        for key in raw:
            if key not in ("type", "name"):
                raise InvalidRequest(f"{path}.{key}: unknown field")
        name = raw.get("name")
        if not isinstance(name, str) or not name or len(name) > 255 or _BRANCH_BAD.search(name):
            raise InvalidRequest(f"{path}.name: expected a branch name")
        return {"type": "branch", "name": name}
    if kind == "commit":
        for key in raw:
            if key not in ("type", "sha"):
                raise InvalidRequest(f"{path}.{key}: unknown field")
        sha = raw.get("sha")
        if not isinstance(sha, str) or not _SHA.match(sha):
            raise InvalidRequest(f"{path}.sha: expected a commit SHA (hexadecimal)")
        return {"type": "commit", "sha": sha}
    raise InvalidRequest(f'{path}.type: "{kind}" is not a valid value; expected one of branch, commit')


def check_mount(raw: Any, url: str, path: str) -> str:
    if raw is None:
        raw = default_repo_mount(url)
    if not isinstance(raw, str) or not raw.startswith("/") or "\x00" in raw:
        raise InvalidRequest(f"{path}: expected an absolute path")
    if ".." in raw.split("/"):
        raise InvalidRequest(f'Invalid github_repository resource: mount path "{raw}" escapes its root')
    normal = posixpath.normpath(raw)
    if not normal.startswith(MOUNT_ROOTS) or any(normal == r or normal.startswith(r + "/") for r in RESERVED):
        raise InvalidRequest(
            f"{path}: must be a path under /workspace/ or /mnt/ (not /mnt/session or /mnt/memory)"
        )
    return normal


def check_overlap(taken: list[str], new: str) -> None:
    for existing in taken:
        if existing == new or existing.startswith(new + "/") or new.startswith(existing + "/"):
            raise InvalidRequest(
                f"Invalid github_repository resource: `mount_path` overlaps another resource: {new}"
            )


def build_repository_resource(
    svc: Services, item: dict[str, Any], path: str, taken: list[str]
) -> tuple[dict[str, Any], str | None]:
    """A validated repository resource and its sealed token (``None``: no token)."""
    for key in item:
        if key not in FIELDS:
            raise InvalidRequest(f"{path}.{key}: unknown field")
    url = check_url(item.get("url"), f"{path}.url")
    token = item.get("authorization_token")
    if token is not None:
        token = check_token(token, f"{path}.authorization_token")
    checkout = check_checkout(item.get("checkout"), f"{path}.checkout")
    mount = check_mount(item.get("mount_path"), url, f"{path}.mount_path")
    check_overlap(taken, mount)
    at = ts(now_us())
    resource: dict[str, Any] = {
        "type": "github_repository",
        "id": new_id("resource"),
        "url": url,
        "mount_path": mount,
        "checkout": checkout,
        "created_at": at,
        "updated_at": at,
    }
    sealed = svc.store.vaults.box.seal_json(token, resource_aad(resource["id"])) if token else None
    return resource, sealed


def rotate_token(svc: Services, resource: dict[str, Any], body: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The resource after ``POST …/resources/{id} {authorization_token}`` and its sealed token."""
    for key in body:
        if key != "authorization_token":
            raise InvalidRequest(f"{key}: unknown field")
    if "authorization_token" not in body:
        raise InvalidRequest("authorization_token: field required")
    token = check_token(body["authorization_token"], "authorization_token")
    updated = {**resource, "updated_at": ts(now_us())}
    return updated, svc.store.vaults.box.seal_json(token, resource_aad(resource["id"]))
