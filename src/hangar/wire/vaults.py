"""Vaults and credentials on the wire (API §1.8, BEHAVIOUR §12): request parsing and objects.

A credential's ``auth`` is split in two as soon as it is parsed:

- the **public** part (stored as JSON, echoed in responses): URLs, names, client id, expiry,
  networking, injection locations, the token-endpoint auth *type*;
- the **secret** part (sealed before it is stored, never echoed): ``token``, ``access_token``,
  ``refresh_token``, ``client_secret``, ``secret_value``.

Parse faults copy the hosted credential parser: ``Failed to parse request body: unknown field
"client_id"`` (immutable fields are unknown to the update parser), and
``Failed to parse request body: <path>: <fault>`` for the others. Semantic faults name their
path without the prefix, and the probed ones keep the hosted wording
(``auth.expires_at must be in the future.``, the ``allowed_hosts`` messages).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from hangar.errors import InvalidRequest
from hangar.wire.common import check_metadata, merge_metadata, parse_ts, ts
from hangar.wire.environments import check_host

PARSE_PREFIX = "Failed to parse request body: "

DISPLAY_NAME_MAX = 255
URL_MAX = 2048
SECRET_MAX = 65_536
TEXT_MAX = 2048
SECRET_NAME_MAX = 255
ALLOWED_HOSTS_MAX = 16
CREDENTIALS_PER_VAULT = 20

AUTH_TYPES = ("mcp_oauth", "static_bearer", "environment_variable")
ENDPOINT_AUTH_TYPES = ("none", "client_secret_basic", "client_secret_post")

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# -- parse helpers ----------------------------------------------------------------------------


def _fault(path: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{PARSE_PREFIX}{path}: {message}")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _object(value: Any, path: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    """``value`` as a JSON object whose keys are all in ``allowed`` (the first other one is named)."""
    if not isinstance(value, dict):
        raise _fault(path or "body", "expected an object")
    for key in value:
        if key not in allowed:
            raise InvalidRequest(f'{PARSE_PREFIX}unknown field "{key}"')
    return value


def _string(
    obj: dict[str, Any], key: str, path: str, *, required: bool = False, max_len: int, min_len: int = 1
) -> str | None:
    """``obj[key]`` as a string (``None`` when absent or null; an error when ``required``)."""
    where = _join(path, key)
    value = obj.get(key)
    if value is None:
        if required:
            raise _fault(where, "field required")
        return None
    if not isinstance(value, str):
        raise _fault(where, "expected a string")
    if len(value) < min_len:
        raise _fault(where, "must not be empty" if min_len == 1 else f"must be at least {min_len} characters")
    if len(value) > max_len:
        raise _fault(where, f"must be at most {max_len} characters")
    return value


def _required(obj: dict[str, Any], key: str, path: str, *, max_len: int) -> str:
    value = _string(obj, key, path, required=True, max_len=max_len)
    assert value is not None
    return value


def _tag(obj: dict[str, Any], path: str, choices: tuple[str, ...]) -> str:
    where = _join(path, "type")
    value = obj.get("type")
    if value is None:
        raise _fault(where, "field required")
    if value not in choices:
        raise _fault(where, f"{json.dumps(value)} is not a valid value; expected one of {', '.join(choices)}")
    return str(value)


def _url(value: str, path: str) -> str:
    parts = urlsplit(value)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or any(ch.isspace() or not ch.isprintable() for ch in value)
    ):
        raise InvalidRequest(f"{path}: {json.dumps(value)} is not a valid URL; expected an http or https URL")
    return value


def _future(value: str, path: str, now_us: int) -> int:
    micros = parse_ts(value, f"{PARSE_PREFIX}{path}")
    if micros <= now_us:
        raise InvalidRequest(f"{path} must be in the future.")
    return micros


def _expires(obj: dict[str, Any], path: str, now_us: int) -> int | None:
    value = obj.get("expires_at")
    if value is None:
        return None
    if not isinstance(value, str):
        raise _fault(_join(path, "expires_at"), "expected an RFC 3339 timestamp string")
    return _future(value, _join(path, "expires_at"), now_us)


def match_key(kind: str, value: str) -> str:
    """What must be unique among a vault's active credentials (see ``store.schema``)."""
    return hashlib.sha256(f"{kind}\x00{value}".encode()).hexdigest()


def parse_display_name(value: Any, path: str, *, min_len: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _fault(path, "expected a string")
    if len(value) < min_len:
        raise _fault(path, "must not be empty")
    if len(value) > DISPLAY_NAME_MAX:
        raise _fault(path, f"must be at most {DISPLAY_NAME_MAX} characters")
    return value


# -- vaults -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewVault:
    display_name: str
    metadata: dict[str, str]


@dataclass(frozen=True)
class VaultPatch:
    display_name: str | None
    metadata: dict[str, str | None] | None

    def apply(self, name: str, metadata: dict[str, str]) -> tuple[str, dict[str, str]]:
        new_name = self.display_name if self.display_name is not None else name
        return new_name, merge_metadata(metadata, self.metadata)


def parse_vault_create(body: dict[str, Any]) -> NewVault:
    _object(body, "", ("display_name", "metadata"))
    if body.get("display_name") is None:
        raise _fault("display_name", "field required")
    name = parse_display_name(body["display_name"], "display_name", min_len=1)
    assert name is not None
    metadata = body.get("metadata")
    check_metadata(metadata)
    return NewVault(name, dict(metadata or {}))


def parse_vault_update(body: dict[str, Any]) -> VaultPatch:
    _object(body, "", ("display_name", "metadata"))
    name = parse_display_name(body.get("display_name"), "display_name", min_len=1)
    metadata = body.get("metadata")
    check_metadata(metadata, patch=True)
    return VaultPatch(name, metadata)


def vault_object(
    vault_id: str,
    display_name: str,
    metadata: dict[str, str],
    created_at: int,
    updated_at: int,
    archived_at: int | None,
) -> dict[str, Any]:
    return {
        "type": "vault",
        "id": vault_id,
        "display_name": display_name,
        "metadata": metadata,
        "created_at": ts(created_at),
        "updated_at": ts(updated_at),
        "archived_at": ts(archived_at),
    }


def vault_deleted(vault_id: str) -> dict[str, Any]:
    return {"id": vault_id, "type": "vault_deleted"}


# -- credentials: create ------------------------------------------------------------------------


@dataclass(frozen=True)
class NewCredential:
    auth_type: str
    auth: dict[str, Any]
    """The public part of ``auth`` (stored as JSON; ``expires_at`` in microseconds)."""
    secret: dict[str, Any]
    """The secret part of ``auth`` (sealed before it is stored)."""
    match_key: str
    display_name: str | None
    metadata: dict[str, str]


def _networking(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fault(path, "expected an object")
    kind = _tag(value, path, ("unrestricted", "limited"))
    if kind == "unrestricted":
        _object(value, path, ("type",))
        return {"type": "unrestricted"}
    _object(value, path, ("type", "allowed_hosts"))
    hosts = value.get("allowed_hosts")
    where = _join(path, "allowed_hosts")
    if hosts is None:
        raise _fault(where, "field required")
    if not isinstance(hosts, list):
        raise _fault(where, "expected an array")
    for i, host in enumerate(hosts):
        if not isinstance(host, str):
            raise _fault(f"{where}[{i}]", "expected a string")
    if not hosts:
        raise InvalidRequest(f"{where}: at least one host is required")
    if len(hosts) > ALLOWED_HOSTS_MAX:
        raise InvalidRequest(f"{where}: at most {ALLOWED_HOSTS_MAX} entries are allowed, got {len(hosts)}")
    for host in hosts:
        check_host(host)
    return {"type": "limited", "allowed_hosts": list(hosts)}


def _locations(value: Any, path: str, current: dict[str, bool] | None) -> dict[str, bool]:
    """Injection locations: on create (``current`` None) a missing field is ``false``; on
    update it keeps its value. Both off, or a null, is refused."""
    if not isinstance(value, dict):
        raise InvalidRequest(f"{path}: expected an object with `header` and/or `body` booleans")
    _object(value, path, ("header", "body"))
    out = dict(current) if current is not None else {"header": False, "body": False}
    for key in ("header", "body"):
        if key in value:
            if not isinstance(value[key], bool):
                raise InvalidRequest(f"{_join(path, key)}: expected a boolean")
            out[key] = value[key]
    if not (out["header"] or out["body"]):
        raise InvalidRequest(f"{path}: at least one of `header` and `body` must be true")
    return {"header": out["header"], "body": out["body"]}


def _secret_name(obj: dict[str, Any], path: str) -> str:
    name = _required(obj, "secret_name", path, max_len=SECRET_NAME_MAX)
    if not _ENV_NAME.match(name):
        raise InvalidRequest(
            f"{_join(path, 'secret_name')}: {json.dumps(name)} is not a valid environment variable name "
            "(letters, digits and underscores, not starting with a digit)"
        )
    return name


def _endpoint_auth_create(value: Any, path: str) -> tuple[dict[str, Any], str | None]:
    if not isinstance(value, dict):
        raise _fault(path, "expected an object")
    kind = _tag(value, path, ENDPOINT_AUTH_TYPES)
    if kind == "none":
        _object(value, path, ("type",))
        return {"type": "none"}, None
    _object(value, path, ("type", "client_secret"))
    return {"type": kind}, _required(value, "client_secret", path, max_len=SECRET_MAX)


def _refresh_create(value: Any, path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    allowed = ("client_id", "refresh_token", "token_endpoint", "token_endpoint_auth", "scope", "resource")
    obj = _object(value, path, allowed)
    client_id = _required(obj, "client_id", path, max_len=TEXT_MAX)
    refresh_token = _required(obj, "refresh_token", path, max_len=SECRET_MAX)
    endpoint = _url(_required(obj, "token_endpoint", path, max_len=URL_MAX), _join(path, "token_endpoint"))
    if obj.get("token_endpoint_auth") is None:
        raise _fault(_join(path, "token_endpoint_auth"), "field required")
    endpoint_auth, client_secret = _endpoint_auth_create(
        obj["token_endpoint_auth"], _join(path, "token_endpoint_auth")
    )
    scope = _string(obj, "scope", path, max_len=TEXT_MAX, min_len=0)
    resource = _string(obj, "resource", path, max_len=URL_MAX)
    public = {
        "client_id": client_id,
        "token_endpoint": endpoint,
        "token_endpoint_auth": endpoint_auth,
        "scope": scope or None,
        "resource": resource,
    }
    secret: dict[str, Any] = {"refresh_token": refresh_token}
    if client_secret is not None:
        secret["client_secret"] = client_secret
    return public, secret


def parse_auth_create(
    value: Any, now_us: int, path: str = "auth"
) -> tuple[str, dict[str, Any], dict[str, Any], str]:
    """``(type, public auth, secret auth, match key)`` of a credential's create ``auth``."""
    if not isinstance(value, dict):
        raise _fault(path, "expected an object")
    kind = _tag(value, path, AUTH_TYPES)
    if kind == "static_bearer":
        _object(value, path, ("type", "mcp_server_url", "token"))
        url = _url(_required(value, "mcp_server_url", path, max_len=URL_MAX), _join(path, "mcp_server_url"))
        token = _required(value, "token", path, max_len=SECRET_MAX)
        return kind, {"type": kind, "mcp_server_url": url}, {"token": token}, match_key("mcp", url)
    if kind == "mcp_oauth":
        _object(value, path, ("type", "mcp_server_url", "access_token", "expires_at", "refresh"))
        url = _url(_required(value, "mcp_server_url", path, max_len=URL_MAX), _join(path, "mcp_server_url"))
        access = _required(value, "access_token", path, max_len=SECRET_MAX)
        expires = _expires(value, path, now_us)
        public: dict[str, Any] = {"type": kind, "mcp_server_url": url, "expires_at": expires, "refresh": None}
        secret: dict[str, Any] = {"access_token": access}
        if value.get("refresh") is not None:
            refresh_public, refresh_secret = _refresh_create(value["refresh"], _join(path, "refresh"))
            public["refresh"] = refresh_public
            secret.update(refresh_secret)
        return kind, public, secret, match_key("mcp", url)
    _object(value, path, ("type", "secret_name", "secret_value", "networking", "injection_location"))
    name = _secret_name(value, path)
    secret_value = _required(value, "secret_value", path, max_len=SECRET_MAX)
    if value.get("networking") is None:
        raise _fault(_join(path, "networking"), "field required")
    networking = _networking(value["networking"], _join(path, "networking"))
    if "injection_location" in value:
        locations = _locations(value["injection_location"], _join(path, "injection_location"), None)
    else:
        locations = {"header": True, "body": True}
    public = {"type": kind, "secret_name": name, "networking": networking, "injection_location": locations}
    return kind, public, {"secret_value": secret_value}, match_key("env", name)


def parse_credential_create(body: dict[str, Any], now_us: int | None = None) -> NewCredential:
    _object(body, "", ("auth", "display_name", "metadata"))
    if body.get("auth") is None:
        raise _fault("auth", "field required")
    now = now_us if now_us is not None else time.time_ns() // 1000
    kind, public, secret, key = parse_auth_create(body["auth"], now)
    name = parse_display_name(body.get("display_name"), "display_name", min_len=0)
    metadata = body.get("metadata")
    check_metadata(metadata)
    return NewCredential(kind, public, secret, key, name, dict(metadata or {}))


# -- credentials: update ------------------------------------------------------------------------


@dataclass(frozen=True)
class CredentialPatch:
    auth: dict[str, Any] | None
    """The ``auth`` of the request, checked for shape (applied by :meth:`apply_auth`)."""
    display_name: str | None
    metadata: dict[str, str | None] | None
    now_us: int

    def apply_auth(
        self, kind: str, public: dict[str, Any], secret: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The stored ``(public, secret)`` auth after this update; refuses what cannot change."""
        if self.auth is None:
            return public, secret
        sent = self.auth["type"]
        if sent != kind:
            raise InvalidRequest(
                f"auth.type: {json.dumps(sent)} does not match the credential's type {json.dumps(kind)}; "
                "the type of a credential cannot change"
            )
        public, secret = json.loads(json.dumps(public)), dict(secret)
        if kind == "static_bearer":
            if self.auth.get("token") is not None:
                secret["token"] = self.auth["token"]
        elif kind == "mcp_oauth":
            self._apply_oauth(public, secret)
        else:
            if self.auth.get("secret_value") is not None:
                secret["secret_value"] = self.auth["secret_value"]
            if self.auth.get("networking") is not None:
                public["networking"] = self.auth["networking"]
            if "injection_location" in self.auth:
                public["injection_location"] = _locations(
                    self.auth["injection_location"], "auth.injection_location", public["injection_location"]
                )
        return public, secret

    def _apply_oauth(self, public: dict[str, Any], secret: dict[str, Any]) -> None:
        auth = self.auth
        assert auth is not None
        if auth.get("access_token") is not None:
            secret["access_token"] = auth["access_token"]
        if auth.get("expires_at") is not None:
            public["expires_at"] = auth["expires_at"]
        refresh = auth.get("refresh")
        if refresh is None:
            return
        if public.get("refresh") is None:
            raise InvalidRequest(
                "auth.refresh: this credential has no refresh configuration (`token_endpoint` and "
                "`client_id` are set only at create); create a new credential to add one"
            )
        if refresh.get("refresh_token") is not None:
            secret["refresh_token"] = refresh["refresh_token"]
        if refresh.get("scope") is not None:
            public["refresh"]["scope"] = refresh["scope"] or None
        endpoint_auth = refresh.get("token_endpoint_auth")
        if endpoint_auth is not None:
            stored = public["refresh"]["token_endpoint_auth"]["type"]
            if stored == "none":
                raise InvalidRequest(
                    "auth.refresh.token_endpoint_auth: this credential's token endpoint uses no client "
                    'authentication (type "none"), so it has no client secret to replace'
                )
            # The stored type is kept, whichever of the two secret types was sent.
            if endpoint_auth.get("client_secret") is not None:
                secret["client_secret"] = endpoint_auth["client_secret"]


def _auth_update(value: Any, now_us: int, path: str = "auth") -> dict[str, Any]:
    """Check an update ``auth`` for shape; immutable fields are unknown fields here."""
    if not isinstance(value, dict):
        raise _fault(path, "expected an object")
    kind = _tag(value, path, AUTH_TYPES)
    out: dict[str, Any] = {"type": kind}
    if kind == "static_bearer":
        _object(value, path, ("type", "token"))
        out["token"] = _string(value, "token", path, max_len=SECRET_MAX)
        return out
    if kind == "mcp_oauth":
        _object(value, path, ("type", "access_token", "expires_at", "refresh"))
        out["access_token"] = _string(value, "access_token", path, max_len=SECRET_MAX)
        out["expires_at"] = _expires(value, path, now_us)
        if value.get("refresh") is not None:
            where = _join(path, "refresh")
            refresh = _object(value["refresh"], where, ("refresh_token", "scope", "token_endpoint_auth"))
            parsed: dict[str, Any] = {
                "refresh_token": _string(refresh, "refresh_token", where, max_len=SECRET_MAX),
                "scope": _string(refresh, "scope", where, max_len=TEXT_MAX, min_len=0),
            }
            if refresh.get("token_endpoint_auth") is not None:
                ea_path = _join(where, "token_endpoint_auth")
                endpoint_auth = refresh["token_endpoint_auth"]
                if not isinstance(endpoint_auth, dict):
                    raise _fault(ea_path, "expected an object")
                ea_type = _tag(endpoint_auth, ea_path, ("client_secret_basic", "client_secret_post"))
                _object(endpoint_auth, ea_path, ("type", "client_secret"))
                parsed["token_endpoint_auth"] = {
                    "type": ea_type,
                    "client_secret": _string(endpoint_auth, "client_secret", ea_path, max_len=SECRET_MAX),
                }
            out["refresh"] = parsed
        return out
    _object(value, path, ("type", "secret_value", "networking", "injection_location"))
    out["secret_value"] = _string(value, "secret_value", path, max_len=SECRET_MAX)
    if value.get("networking") is not None:
        out["networking"] = _networking(value["networking"], _join(path, "networking"))
    if "injection_location" in value:
        loc = value["injection_location"]
        where = _join(path, "injection_location")
        _locations(loc, where, {"header": True, "body": True})  # shape and types; merged on apply
        out["injection_location"] = loc
    return out


def parse_credential_update(body: dict[str, Any], now_us: int | None = None) -> CredentialPatch:
    _object(body, "", ("auth", "display_name", "metadata"))
    now = now_us if now_us is not None else time.time_ns() // 1000
    auth = _auth_update(body["auth"], now) if body.get("auth") is not None else None
    name = parse_display_name(body.get("display_name"), "display_name", min_len=1)
    metadata = body.get("metadata")
    check_metadata(metadata, patch=True)
    return CredentialPatch(auth, name, metadata, now)


# -- credentials: objects -----------------------------------------------------------------------


def auth_object(public: dict[str, Any]) -> dict[str, Any]:
    """The echoed ``auth``: the public part only, timestamps as RFC 3339."""
    kind = public["type"]
    if kind == "static_bearer":
        return {"type": kind, "mcp_server_url": public["mcp_server_url"]}
    if kind == "mcp_oauth":
        out: dict[str, Any] = {
            "type": kind,
            "mcp_server_url": public["mcp_server_url"],
            "expires_at": ts(public.get("expires_at")),
            "refresh": None,
        }
        refresh = public.get("refresh")
        if refresh is not None:
            out["refresh"] = {
                "client_id": refresh["client_id"],
                "token_endpoint": refresh["token_endpoint"],
                "token_endpoint_auth": {"type": refresh["token_endpoint_auth"]["type"]},
                "scope": refresh.get("scope"),
                "resource": refresh.get("resource"),
            }
        return out
    return {
        "type": kind,
        "secret_name": public["secret_name"],
        "networking": dict(public["networking"]),
        "injection_location": dict(public["injection_location"]),
    }


def full_auth(public: dict[str, Any], secret: dict[str, Any]) -> dict[str, Any]:
    """Public and secret parts joined again, shaped like the create ``auth`` (server-side only)."""
    kind = public["type"]
    if kind == "static_bearer":
        return {"type": kind, "mcp_server_url": public["mcp_server_url"], "token": secret["token"]}
    if kind == "environment_variable":
        return {**auth_object(public), "secret_value": secret["secret_value"]}
    out: dict[str, Any] = {
        "type": kind,
        "mcp_server_url": public["mcp_server_url"],
        "access_token": secret["access_token"],
        "expires_at": ts(public.get("expires_at")),
        "refresh": None,
    }
    refresh = public.get("refresh")
    if refresh is not None:
        endpoint_auth: dict[str, Any] = {"type": refresh["token_endpoint_auth"]["type"]}
        if endpoint_auth["type"] != "none":
            endpoint_auth["client_secret"] = secret.get("client_secret")
        out["refresh"] = {
            "client_id": refresh["client_id"],
            "token_endpoint": refresh["token_endpoint"],
            "token_endpoint_auth": endpoint_auth,
            "refresh_token": secret.get("refresh_token"),
            "scope": refresh.get("scope"),
            "resource": refresh.get("resource"),
        }
    return out


def credential_object(
    credential_id: str,
    vault_id: str,
    display_name: str | None,
    metadata: dict[str, str],
    public: dict[str, Any],
    created_at: int,
    updated_at: int,
    archived_at: int | None,
) -> dict[str, Any]:
    return {
        "type": "vault_credential",
        "id": credential_id,
        "vault_id": vault_id,
        "display_name": display_name,
        "metadata": metadata,
        "auth": auth_object(public),
        "created_at": ts(created_at),
        "updated_at": ts(updated_at),
        "archived_at": ts(archived_at),
    }


def credential_deleted(credential_id: str) -> dict[str, Any]:
    return {"id": credential_id, "type": "vault_credential_deleted"}


def validation_object(
    credential_id: str,
    vault_id: str,
    *,
    status: str,
    has_refresh_token: bool,
    validated_at: int,
    mcp_probe: dict[str, Any] | None,
    refresh: dict[str, Any] | None,
) -> dict[str, Any]:
    return {
        "type": "vault_credential_validation",
        "credential_id": credential_id,
        "vault_id": vault_id,
        "status": status,
        "has_refresh_token": has_refresh_token,
        "validated_at": ts(validated_at),
        "mcp_probe": mcp_probe,
        "refresh": refresh,
    }
