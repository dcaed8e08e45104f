"""Environments on the wire (SDK ``BetaEnvironment`` and its create/update params, API.md §1.2, §4).

Requests are parsed into small typed objects; the stored form of an environment is its
``data`` (description, config, metadata, scope), and the echo always carries a fully
populated config:

- cloud: ``{type:"cloud", networking, packages}``, where networking is ``{type:"unrestricted"}``
  or ``{type:"limited", allowed_hosts, allow_mcp_servers, allow_package_managers}`` and
  packages lists all six managers plus ``type:"packages"``;
- self-hosted: ``{type:"self_hosted"}``.

On update the config is merged per field: an omitted (or null) field keeps its stored value.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any, Final, Literal

from pydantic import ConfigDict, Field

from hangar.errors import InvalidRequest
from hangar.wire.common import Strict, check_metadata, merge_metadata, parse, ts

NAME_MAX: Final = 255
DESCRIPTION_MAX: Final = 2048
ALLOWED_HOSTS_MAX: Final = 256
HOST_MAX: Final = 253
PACKAGES_MAX: Final = 256  # per manager
PACKAGE_SPEC_MAX: Final = 256
MANAGERS: Final = ("apt", "cargo", "gem", "go", "npm", "pip")
CONFIG_TYPES: Final = ("cloud", "self_hosted")
NETWORKING_TYPES: Final = ("unrestricted", "limited")


class _Req(Strict):
    # strict: "true" is not a boolean and 1 is not a string; a bad type is a 400.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# -- request bodies ------------------------------------------------------------------------


class UnrestrictedNetworkIn(_Req):
    type: Literal["unrestricted"]


class LimitedNetworkIn(_Req):
    type: Literal["limited"]
    allowed_hosts: list[str] | None = None
    allow_mcp_servers: bool | None = None
    allow_package_managers: bool | None = None


class PackagesIn(_Req):
    type: Literal["packages"] | None = None
    apt: list[str] | None = None
    cargo: list[str] | None = None
    gem: list[str] | None = None
    go: list[str] | None = None
    npm: list[str] | None = None
    pip: list[str] | None = None


class _CloudIn(_Req):
    type: Literal["cloud"]
    networking: Any = None
    packages: Any = None


class SelfHostedIn(_Req):
    type: Literal["self_hosted"]


@dataclass(frozen=True)
class CloudIn:
    """A cloud config as sent: ``None`` fields were omitted or null."""

    networking: UnrestrictedNetworkIn | LimitedNetworkIn | None
    packages: PackagesIn | None


ConfigIn = CloudIn | SelfHostedIn


class _CreateIn(_Req):
    name: str = Field(min_length=1, max_length=NAME_MAX)
    config: Any = None
    description: str | None = Field(default=None, max_length=DESCRIPTION_MAX)
    metadata: Any = None
    scope: Literal["organization", "account"] | None = None


class _UpdateIn(_Req):
    name: str | None = Field(default=None, min_length=1, max_length=NAME_MAX)
    config: Any = None
    description: str | None = Field(default=None, max_length=DESCRIPTION_MAX)
    metadata: Any = None
    scope: Literal["organization", "account"] | None = None


def _object(data: Any, path: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise InvalidRequest(f"{path}: expected an object")
    return data


def _tag(data: dict[str, Any], path: str, choices: tuple[str, ...]) -> str:
    if "type" not in data:
        raise InvalidRequest(f"{path}.type: field required")
    tag = data["type"]
    if not isinstance(tag, str) or tag not in choices:
        raise InvalidRequest(
            f"{path}.type: {json.dumps(tag)} is not a valid value; expected one of {', '.join(choices)}"
        )
    return tag


def parse_config(data: Any, path: str = "config") -> ConfigIn | None:
    """Parse a request's ``config`` (null → ``None``), naming the JSON path of any fault."""
    if data is None:
        return None
    obj = _object(data, path)
    if _tag(obj, path, CONFIG_TYPES) == "self_hosted":
        return parse(SelfHostedIn, obj, prefix=f"{path}.")
    cloud = parse(_CloudIn, obj, prefix=f"{path}.")
    networking: UnrestrictedNetworkIn | LimitedNetworkIn | None = None
    if cloud.networking is not None:
        net = _object(cloud.networking, f"{path}.networking")
        if _tag(net, f"{path}.networking", NETWORKING_TYPES) == "limited":
            networking = parse(LimitedNetworkIn, net, prefix=f"{path}.networking.")
        else:
            networking = parse(UnrestrictedNetworkIn, net, prefix=f"{path}.networking.")
    packages = None
    if cloud.packages is not None:
        packages = parse(PackagesIn, _object(cloud.packages, f"{path}.packages"), prefix=f"{path}.packages.")
    return CloudIn(networking=networking, packages=packages)


# -- resolving and checking a config --------------------------------------------------------


def _default_limited() -> dict[str, Any]:
    return {
        "type": "limited",
        "allowed_hosts": [],
        "allow_mcp_servers": False,
        "allow_package_managers": False,
    }


def _networking(
    new: UnrestrictedNetworkIn | LimitedNetworkIn | None, cur: dict[str, Any] | None
) -> dict[str, Any]:
    if new is None:
        return dict(cur) if cur is not None else {"type": "unrestricted"}
    if isinstance(new, UnrestrictedNetworkIn):
        return {"type": "unrestricted"}
    # Same type as stored: merge per field. A switch to limited starts from the defaults.
    base = cur if cur is not None and cur.get("type") == "limited" else _default_limited()
    return {
        "type": "limited",
        "allowed_hosts": list(new.allowed_hosts if new.allowed_hosts is not None else base["allowed_hosts"]),
        "allow_mcp_servers": (
            new.allow_mcp_servers if new.allow_mcp_servers is not None else base["allow_mcp_servers"]
        ),
        "allow_package_managers": (
            new.allow_package_managers
            if new.allow_package_managers is not None
            else base["allow_package_managers"]
        ),
    }


def _packages(new: PackagesIn | None, cur: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "packages"}
    for manager in MANAGERS:
        given: list[str] | None = getattr(new, manager) if new is not None else None
        kept: list[str] = list(cur.get(manager) or []) if cur is not None else []
        out[manager] = list(given) if given is not None else kept
    return out


def resolve_config(new: ConfigIn | None, current: dict[str, Any] | None) -> dict[str, Any]:
    """The full stored config after applying ``new`` to ``current`` (``None`` on create)."""
    if current is None:
        if isinstance(new, SelfHostedIn):
            return {"type": "self_hosted"}
        cloud = new if new is not None else CloudIn(networking=None, packages=None)
        config = {"type": "cloud", "networking": _networking(cloud.networking, None)}
        config["packages"] = _packages(cloud.packages, None)
        check_config(config)
        return config
    if new is None:
        return current
    new_type = "self_hosted" if isinstance(new, SelfHostedIn) else "cloud"
    if new_type != current["type"]:
        raise InvalidRequest(
            f'config.type: cannot change the environment type from "{current["type"]}" to "{new_type}"',
            error_code="invalid_config_type_change",
        )
    if isinstance(new, SelfHostedIn):
        return {"type": "self_hosted"}
    config = {
        "type": "cloud",
        "networking": _networking(new.networking, current.get("networking")),
        "packages": _packages(new.packages, current.get("packages")),
    }
    check_config(config)
    return config


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://|^//")
_PORT = re.compile(r"^[^:/\[\]]+:[0-9]*(/.*)?$")
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_NUMERIC = re.compile(r"^[0-9.]+$")


def _is_hostname(text: str) -> bool:
    if not text or len(text) > HOST_MAX or _NUMERIC.match(text):
        return False
    return all(_LABEL.match(label) for label in text.split("."))


def check_host(entry: str) -> None:
    """One ``allowed_hosts`` entry: a bare hostname, an IPv4 address or ``*.domain``."""
    quoted = json.dumps(entry)
    if _SCHEME.match(entry):
        raise InvalidRequest(
            f"`allowed_hosts` entry {quoted} contains a URL scheme. "
            'Entries must be bare hostnames like "google.com".'
        )
    if _PORT.match(entry):
        raise InvalidRequest(
            f"`allowed_hosts` entry {quoted} contains a port. Entries must be bare hostnames without ports."
        )
    if _NUMERIC.match(entry):
        try:
            ipaddress.IPv4Address(entry)
            return
        except ValueError:
            pass
    elif _is_hostname(entry[2:] if entry.startswith("*.") else entry):
        return
    raise InvalidRequest(
        f"`allowed_hosts` entry {quoted} is not a valid host. Entries must be bare hostnames, "
        'IPv4 addresses or wildcards like "*.example.com".'
    )


def _check_package(spec: str, path: str) -> None:
    if not spec:
        raise InvalidRequest(f"{path}: must not be empty")
    if len(spec) > PACKAGE_SPEC_MAX:
        raise InvalidRequest(f"{path}: must be at most {PACKAGE_SPEC_MAX} characters")
    if spec.startswith("-"):
        raise InvalidRequest(f"{path}: {json.dumps(spec)} must name a package, not an option")
    if any(ch.isspace() or not ch.isprintable() for ch in spec):
        raise InvalidRequest(f"{path}: {json.dumps(spec)} must not contain whitespace or control characters")


def check_config(config: dict[str, Any]) -> None:
    """Semantic rules of a resolved cloud config (hosts, package specs, limited + packages)."""
    networking, packages = config["networking"], config["packages"]
    if networking["type"] == "limited":
        hosts: list[str] = networking["allowed_hosts"]
        if len(hosts) > ALLOWED_HOSTS_MAX:
            raise InvalidRequest(
                f"config.networking.allowed_hosts: at most {ALLOWED_HOSTS_MAX} entries are allowed, "
                f"got {len(hosts)}"
            )
        for host in hosts:
            check_host(host)
    for manager in MANAGERS:
        specs: list[str] = packages[manager]
        if len(specs) > PACKAGES_MAX:
            raise InvalidRequest(
                f"config.packages.{manager}: at most {PACKAGES_MAX} entries are allowed, got {len(specs)}"
            )
        for i, spec in enumerate(specs):
            _check_package(spec, f"config.packages.{manager}[{i}]")
    if (
        networking["type"] == "limited"
        and not networking["allow_package_managers"]
        and any(packages[m] for m in MANAGERS)
    ):
        raise InvalidRequest(
            "config.packages: packages require `config.networking.allow_package_managers` "
            "to be true under limited networking"
        )


# -- create / update ---------------------------------------------------------------------


def _check_scope(scope: str | None) -> None:
    if scope == "account":
        raise InvalidRequest('scope: "account" is not supported; only "organization" is allowed')


@dataclass(frozen=True)
class NewEnvironment:
    name: str
    data: dict[str, Any]  # description, config, metadata, scope


def parse_create(body: dict[str, Any]) -> NewEnvironment:
    req = parse(_CreateIn, body)
    config = resolve_config(parse_config(req.config), None)
    check_metadata(req.metadata)
    _check_scope(req.scope)
    return NewEnvironment(
        name=req.name,
        data={
            "description": req.description,
            "config": config,
            "metadata": dict(req.metadata or {}),
            "scope": "organization",
        },
    )


@dataclass(frozen=True)
class EnvironmentPatch:
    """A parsed update; ``apply`` runs against the stored environment inside the write."""

    fields: frozenset[str]
    name: str | None
    description: str | None
    config: ConfigIn | None
    metadata: dict[str, str | None] | None

    def apply(
        self, env_id: str, name: str, data: dict[str, Any], archived: bool
    ) -> tuple[str, dict[str, Any]]:
        if archived:
            raise InvalidRequest(
                f"Environment {env_id} is archived and cannot be updated.", error_code="environment_archived"
            )
        out = dict(data)
        if self.name is not None:
            name = self.name
        if "description" in self.fields:
            out["description"] = self.description
        out["config"] = resolve_config(self.config, data["config"])
        out["metadata"] = merge_metadata(data.get("metadata") or {}, self.metadata, empty_deletes=True)
        return name, out


def parse_update(body: dict[str, Any]) -> EnvironmentPatch:
    req = parse(_UpdateIn, body)
    config = parse_config(req.config)
    check_metadata(req.metadata, patch=True)
    _check_scope(req.scope)
    return EnvironmentPatch(
        fields=frozenset(req.model_fields_set),
        name=req.name,
        description=req.description,
        config=config,
        metadata=req.metadata,
    )


# -- responses ---------------------------------------------------------------------------


def environment_object(
    env_id: str,
    name: str,
    data: dict[str, Any],
    created_at: int,
    updated_at: int,
    archived_at: int | None,
) -> dict[str, Any]:
    """The ``BetaEnvironment`` echo (timestamps are strings)."""
    return {
        "type": "environment",
        "id": env_id,
        "name": name,
        "description": data.get("description"),
        "config": data["config"],
        "metadata": dict(data.get("metadata") or {}),
        "scope": data.get("scope") or "organization",
        "created_at": ts(created_at),
        "updated_at": ts(updated_at),
        "archived_at": ts(archived_at),
    }


def deleted_object(env_id: str) -> dict[str, Any]:
    return {"id": env_id, "type": "environment_deleted"}
