"""Environments through the official client (API.md §1.2, §4; BEHAVIOUR §1, §4)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import pytest
from anthropic.types.beta import BetaEnvironment, BetaEnvironmentDeleteResponse
from anthropic.types.beta.beta_environment_archived_error import BetaEnvironmentArchivedError
from anthropic.types.beta.beta_invalid_config_type_change_error import BetaInvalidConfigTypeChangeError
from anthropic.types.beta.beta_invalid_metadata_error import BetaInvalidMetadataError

from hangar.config import Settings
from hangar.store import Store, open_database
from hangar.testing import ServerProcess
from tests.helpers import strict

EMPTY_PACKAGES = {"type": "packages", "apt": [], "cargo": [], "gem": [], "go": [], "npm": [], "pip": []}
DEFAULT_CLOUD = {"type": "cloud", "networking": {"type": "unrestricted"}, "packages": EMPTY_PACKAGES}
LIMITED_DEFAULTS = {
    "type": "limited",
    "allowed_hosts": [],
    "allow_mcp_servers": False,
    "allow_package_managers": False,
}


def env_of(obj: Any) -> dict[str, Any]:
    """Strictly validate an SDK environment and return its wire dict."""
    strict(BetaEnvironment, obj)
    data: dict[str, Any] = obj.model_dump(mode="json")
    return data


def error_of(exc: pytest.ExceptionInfo[anthropic.APIStatusError]) -> dict[str, Any]:
    body = exc.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    err: dict[str, Any] = body["error"]
    return err


def limited(**fields: Any) -> dict[str, Any]:
    return {"type": "cloud", "networking": {"type": "limited", **fields}}


def unique(prefix: str = "env") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# -- create and echo -----------------------------------------------------------------------


def test_create_defaults(client: anthropic.Anthropic) -> None:
    env = env_of(client.beta.environments.create(name="plain"))
    assert env["id"].startswith("env_")
    assert env["type"] == "environment"
    assert env["name"] == "plain"
    assert env["config"] == DEFAULT_CLOUD
    assert env["description"] is None
    assert env["metadata"] == {}
    assert env["scope"] == "organization"
    assert env["archived_at"] is None
    assert isinstance(env["created_at"], str) and env["created_at"] == env["updated_at"]
    assert env_of(client.beta.environments.retrieve(env["id"])) == env


def test_create_echoes_every_field(client: anthropic.Anthropic) -> None:
    env = env_of(
        client.beta.environments.create(
            name="full",
            description="for tests",
            metadata={"team": "infra"},
            scope="organization",
            config={
                "type": "cloud",
                "networking": {
                    "type": "limited",
                    "allowed_hosts": ["api.example.com"],
                    "allow_package_managers": True,
                },
                "packages": {"pip": ["requests==2.32.0"], "type": "packages"},
            },
        )
    )
    assert env["description"] == "for tests"
    assert env["metadata"] == {"team": "infra"}
    assert env["config"] == {
        "type": "cloud",
        "networking": {
            "type": "limited",
            "allowed_hosts": ["api.example.com"],
            "allow_mcp_servers": False,
            "allow_package_managers": True,
        },
        "packages": {**EMPTY_PACKAGES, "pip": ["requests==2.32.0"]},
    }


def test_limited_networking_echoes_in_full(client: anthropic.Anthropic) -> None:
    env = env_of(client.beta.environments.create(name="lim", config=limited()))
    assert env["config"] == {"type": "cloud", "networking": LIMITED_DEFAULTS, "packages": EMPTY_PACKAGES}
    raw = client.beta.environments.with_raw_response.retrieve(env["id"]).json()
    assert set(raw["config"]["networking"]) == {
        "type",
        "allowed_hosts",
        "allow_mcp_servers",
        "allow_package_managers",
    }
    assert set(raw["config"]["packages"]) == {"type", "apt", "cargo", "gem", "go", "npm", "pip"}


def test_cloud_config_with_nulls_gets_defaults(client: anthropic.Anthropic) -> None:
    env = env_of(
        client.beta.environments.create(
            name="nulls", config={"type": "cloud", "networking": None, "packages": None}
        )
    )
    assert env["config"] == DEFAULT_CLOUD
    env = env_of(client.beta.environments.create(name="nulls2", config=None))
    assert env["config"] == DEFAULT_CLOUD
    env = env_of(
        client.beta.environments.create(
            name="pk", config={"type": "cloud", "packages": {"type": "packages", "npm": ["left-pad"]}}
        )
    )
    assert env["config"]["packages"] == {**EMPTY_PACKAGES, "npm": ["left-pad"]}


def test_self_hosted_config(client: anthropic.Anthropic) -> None:
    env = env_of(client.beta.environments.create(name="sh", config={"type": "self_hosted"}))
    assert env["config"] == {"type": "self_hosted"}
    raw = client.beta.environments.with_raw_response.retrieve(env["id"]).json()
    assert raw["config"] == {"type": "self_hosted"}


def test_raw_echo_has_exactly_the_sdk_fields(client: anthropic.Anthropic) -> None:
    raw = client.beta.environments.with_raw_response.create(name="raw").json()
    assert set(raw) == {
        "type",
        "id",
        "name",
        "description",
        "config",
        "metadata",
        "scope",
        "created_at",
        "updated_at",
        "archived_at",
    }


# -- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "x" * 255])
def test_name_limits_accepted(client: anthropic.Anthropic, name: str) -> None:
    assert env_of(client.beta.environments.create(name=name))["name"] == name


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"name": ""}, "name:"),
        ({"name": "x" * 256}, "name:"),
        ({}, "name: field required"),
        ({"name": 5}, "name:"),
        ({"name": "n", "bogus": 1}, "bogus: unknown field"),
        ({"name": "n", "description": "d" * 2049}, "description:"),
        ({"name": "n", "description": 7}, "description:"),
        ({"name": "n", "scope": "galaxy"}, "scope:"),
        ({"name": "n", "scope": "account"}, "scope:"),
        ({"name": "n", "config": "cloud"}, "config: expected an object"),
        ({"name": "n", "config": {}}, "config.type: field required"),
        ({"name": "n", "config": {"type": "docker"}}, 'config.type: "docker" is not a valid value'),
        ({"name": "n", "config": {"type": "self_hosted", "networking": None}}, "config.networking: unknown"),
        (
            {"name": "n", "config": {"type": "cloud", "networking": []}},
            "config.networking: expected an object",
        ),
        (
            {"name": "n", "config": {"type": "cloud", "networking": {}}},
            "config.networking.type: field required",
        ),
        (
            {"name": "n", "config": {"type": "cloud", "networking": {"type": "open"}}},
            'config.networking.type: "open" is not a valid value',
        ),
        (
            {"name": "n", "config": {"type": "cloud", "networking": {"type": "unrestricted", "x": 1}}},
            "config.networking.x: unknown field",
        ),
        ({"name": "n", "config": limited(allowed_hosts="a.com")}, "config.networking.allowed_hosts:"),
        ({"name": "n", "config": limited(allowed_hosts=[1])}, "config.networking.allowed_hosts[0]:"),
        ({"name": "n", "config": limited(allow_mcp_servers="yes")}, "config.networking.allow_mcp_servers:"),
        (
            {"name": "n", "config": limited(allow_package_managers=1)},
            "config.networking.allow_package_managers:",
        ),
        ({"name": "n", "config": {"type": "cloud", "packages": []}}, "config.packages: expected an object"),
        ({"name": "n", "config": {"type": "cloud", "packages": {"pip": "x"}}}, "config.packages.pip:"),
        ({"name": "n", "config": {"type": "cloud", "packages": {"pip": [3]}}}, "config.packages.pip[0]:"),
        ({"name": "n", "config": {"type": "cloud", "packages": {"type": "pkgs"}}}, "config.packages.type:"),
        ({"name": "n", "config": {"type": "cloud", "packages": {"brew": []}}}, "config.packages.brew:"),
    ],
)
def test_create_bad_input_names_the_path(
    client: anthropic.Anthropic, body: dict[str, Any], path: str
) -> None:
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.post("/v1/environments", body=body, cast_to=object)
    err = error_of(exc)
    assert err["type"] == "invalid_request_error"
    assert err["message"].startswith(path), err["message"]


@pytest.mark.parametrize(
    ("host", "message"),
    [
        (
            "example.com:443",
            '`allowed_hosts` entry "example.com:443" contains a port. '
            "Entries must be bare hostnames without ports.",
        ),
        (
            "https://example.com",
            '`allowed_hosts` entry "https://example.com" contains a URL scheme. '
            'Entries must be bare hostnames like "google.com".',
        ),
        (
            "http://example.com:80/x",
            '`allowed_hosts` entry "http://example.com:80/x" contains a URL scheme. '
            'Entries must be bare hostnames like "google.com".',
        ),
    ],
)
def test_allowed_hosts_exact_messages(client: anthropic.Anthropic, host: str, message: str) -> None:
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.beta.environments.create(name="h", config=limited(allowed_hosts=["ok.com", host]))
    assert error_of(exc)["message"] == message


@pytest.mark.parametrize(
    "host",
    [
        "",
        "exa mple.com",
        "example.com/path",
        "under_score.com",
        "-lead.com",
        "a..b",
        "*",
        "*.",
        "a.*.com",
        "999.1.1.1",
        "1.2.3",
        "::1",
        "[::1]",
        "ex\u00e4mple.com",
        "a" * 64 + ".com",
        "x.com.",
    ],
)
def test_allowed_hosts_rejects_non_hosts(client: anthropic.Anthropic, host: str) -> None:
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.beta.environments.create(name="h", config=limited(allowed_hosts=[host]))
    assert error_of(exc)["message"].startswith("`allowed_hosts` entry ")


def test_allowed_hosts_accepts_hosts_ips_and_wildcards(client: anthropic.Anthropic) -> None:
    hosts = ["example.com", "API.Example.COM", "localhost", "10.0.0.1", "*.example.com", "*.a.b.c", "x-y.io"]
    env = env_of(client.beta.environments.create(name="h", config=limited(allowed_hosts=hosts)))
    assert env["config"]["networking"]["allowed_hosts"] == hosts  # kept verbatim, upper case included


def test_allowed_hosts_count_limit(client: anthropic.Anthropic) -> None:
    many = [f"h{i}.example.com" for i in range(256)]
    env = env_of(client.beta.environments.create(name="h", config=limited(allowed_hosts=many)))
    assert len(env["config"]["networking"]["allowed_hosts"]) == 256
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.beta.environments.create(name="h", config=limited(allowed_hosts=[*many, "one.more.com"]))
    assert error_of(exc)["message"].startswith("config.networking.allowed_hosts: at most 256")


def test_packages_under_limited_need_package_managers(client: anthropic.Anthropic) -> None:
    pkgs = {"type": "packages", "pip": ["numpy"]}
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.beta.environments.create(name="p", config={**limited(), "packages": pkgs})
    assert "allow_package_managers" in error_of(exc)["message"]
    assert error_of(exc)["message"].startswith("config.packages:")
    ok = env_of(
        client.beta.environments.create(
            name="p", config={**limited(allow_package_managers=True), "packages": pkgs}
        )
    )
    assert ok["config"]["packages"]["pip"] == ["numpy"]
    # Unrestricted networking needs no flag; limited with no packages is fine.
    env_of(client.beta.environments.create(name="p", config={"type": "cloud", "packages": pkgs}))
    env_of(client.beta.environments.create(name="p", config={**limited(), "packages": {"pip": []}}))


@pytest.mark.parametrize(
    ("manager", "spec"),
    [
        ("pip", ""),
        ("pip", "--index-url=http://evil"),
        ("npm", "-g"),
        ("apt", "curl wget"),
        ("go", "x\ny"),
        ("cargo", "c" * 257),
    ],
)
def test_package_specs_checked(client: anthropic.Anthropic, manager: str, spec: str) -> None:
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.beta.environments.create(name="p", config={"type": "cloud", "packages": {manager: [spec]}})
    assert error_of(exc)["message"].startswith(f"config.packages.{manager}[0]:")


def test_package_count_limit(client: anthropic.Anthropic) -> None:
    many = [f"pkg{i}" for i in range(256)]
    env_of(client.beta.environments.create(name="p", config={"type": "cloud", "packages": {"gem": many}}))
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.beta.environments.create(name="p", config={"type": "cloud", "packages": {"gem": [*many, "x"]}})
    assert error_of(exc)["message"].startswith("config.packages.gem: at most 256")


# -- metadata ------------------------------------------------------------------------------


def test_metadata_limits_on_create(client: anthropic.Anthropic) -> None:
    at_limit = {f"k{i:02d}" + "x" * 60: "v" * 512 for i in range(16)}
    assert all(len(k) <= 64 for k in at_limit)
    env = env_of(client.beta.environments.create(name="m", metadata=at_limit))
    assert env["metadata"] == at_limit
    for bad in (
        {f"k{i}": "v" for i in range(17)},
        {"k" * 65: "v"},
        {"k": "v" * 513},
        {"k": 5},
    ):
        with pytest.raises(BetaInvalidMetadataError) as exc:
            client.beta.environments.create(name="m", metadata=bad)
        assert exc.value.status_code == 400
        assert error_of(exc)["details"]["error_code"] == "invalid_metadata"  # type: ignore[arg-type]
        assert error_of(exc)["message"].startswith("metadata")  # type: ignore[arg-type]


def test_metadata_patch_on_update(client: anthropic.Anthropic) -> None:
    env = client.beta.environments.create(name="m", metadata={"a": "1", "b": "2", "c": "3"})
    out = env_of(client.beta.environments.update(env.id, metadata={"a": None, "b": "", "d": "4"}))
    assert out["metadata"] == {"c": "3", "d": "4"}  # null and "" both delete; omitted keys kept
    out = env_of(client.beta.environments.update(env.id, name="m2"))
    assert out["metadata"] == {"c": "3", "d": "4"}
    out = env_of(client.beta.environments.update(env.id, metadata={"c": "33"}))
    assert out["metadata"] == {"c": "33", "d": "4"}


def test_metadata_limits_on_update(client: anthropic.Anthropic) -> None:
    env = client.beta.environments.create(name="m", metadata={f"k{i}": "v" for i in range(15)})
    before = env_of(client.beta.environments.retrieve(env.id))
    for bad in ({"x": "1", "y": "2"}, {"k" * 65: "v"}, {"k0": "v" * 513}):
        with pytest.raises(BetaInvalidMetadataError) as exc:
            client.beta.environments.update(env.id, metadata=bad)
        assert error_of(exc)["details"]["error_code"] == "invalid_metadata"  # type: ignore[arg-type]
    assert env_of(client.beta.environments.retrieve(env.id)) == before
    # Deleting one key while adding another stays within 16.
    out = env_of(client.beta.environments.update(env.id, metadata={"k0": None, "x": "1", "y": "2"}))
    assert len(out["metadata"]) == 16


# -- update --------------------------------------------------------------------------------


def test_update_name_description(client: anthropic.Anthropic) -> None:
    env = env_of(client.beta.environments.create(name="u"))
    assert env["description"] is None
    out = env_of(client.beta.environments.update(env["id"], description=""))
    assert out["description"] == ""  # stored as given
    assert out["created_at"] == env["created_at"] and out["updated_at"] > env["updated_at"]
    out = env_of(client.beta.environments.update(env["id"], name="u2"))
    assert (out["name"], out["description"]) == ("u2", "")  # omitted description kept
    out = env_of(client.beta.environments.update(env["id"], description="words"))
    assert out["description"] == "words"
    out = env_of(client.beta.environments.update(env["id"], description=None))
    assert out["description"] is None  # null clears
    out = env_of(client.beta.environments.update(env["id"], name=None))
    assert out["name"] == "u2"  # a null name keeps the name
    for bad in ("", "x" * 256):
        with pytest.raises(anthropic.BadRequestError) as exc:
            client.beta.environments.update(env["id"], name=bad)
        assert error_of(exc)["message"].startswith("name:")
    assert env_of(client.beta.environments.retrieve(env["id"]))["name"] == "u2"


def test_update_merges_config_per_field(client: anthropic.Anthropic) -> None:
    env = client.beta.environments.create(
        name="merge",
        config={
            "type": "cloud",
            "networking": {
                "type": "limited",
                "allowed_hosts": ["a.com"],
                "allow_mcp_servers": True,
                "allow_package_managers": True,
            },
            "packages": {"type": "packages", "pip": ["x"], "apt": ["git"]},
        },
    )
    full = env_of(client.beta.environments.retrieve(env.id))["config"]

    # Omitted config, or a cloud config with no fields: unchanged.
    assert env_of(client.beta.environments.update(env.id, name="m"))["config"] == full
    assert env_of(client.beta.environments.update(env.id, config={"type": "cloud"}))["config"] == full
    assert env_of(client.beta.environments.update(env.id, config=None))["config"] == full

    # Same networking type: each omitted field keeps its value.
    cfg = env_of(
        client.beta.environments.update(env.id, config=limited(allowed_hosts=["b.com"])),
    )["config"]
    assert cfg["networking"] == {
        "type": "limited",
        "allowed_hosts": ["b.com"],
        "allow_mcp_servers": True,
        "allow_package_managers": True,
    }
    cfg = env_of(client.beta.environments.update(env.id, config=limited(allow_mcp_servers=False)))["config"]
    assert cfg["networking"]["allowed_hosts"] == ["b.com"] and cfg["networking"]["allow_mcp_servers"] is False

    # Packages merge per manager; a given list replaces that manager's list.
    cfg = env_of(
        client.beta.environments.update(
            env.id, config={"type": "cloud", "packages": {"npm": ["y"], "apt": []}}
        )
    )["config"]
    assert cfg["packages"] == {**EMPTY_PACKAGES, "pip": ["x"], "npm": ["y"]}
    assert cfg["networking"]["allowed_hosts"] == ["b.com"]

    # Switching to unrestricted, then back to limited, starts from limited's defaults, which
    # (with packages present) breaks the package-manager rule: refused, nothing stored.
    cfg = env_of(
        client.beta.environments.update(
            env.id, config={"type": "cloud", "networking": {"type": "unrestricted"}}
        )
    )["config"]
    assert cfg["networking"] == {"type": "unrestricted"} and cfg["packages"]["pip"] == ["x"]
    before = env_of(client.beta.environments.retrieve(env.id))
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.beta.environments.update(env.id, config=limited())
    assert "allow_package_managers" in error_of(exc)["message"]
    assert env_of(client.beta.environments.retrieve(env.id)) == before
    cfg = env_of(client.beta.environments.update(env.id, config=limited(allow_package_managers=True)))[
        "config"
    ]
    assert cfg["networking"] == {**LIMITED_DEFAULTS, "allow_package_managers": True}

    # Turning the flag off while packages remain is refused too.
    with pytest.raises(anthropic.BadRequestError):
        client.beta.environments.update(env.id, config=limited(allow_package_managers=False))
    # ... unless the same update clears the packages.
    cfg = env_of(
        client.beta.environments.update(
            env.id,
            config={
                "type": "cloud",
                "networking": {"type": "limited", "allow_package_managers": False},
                "packages": {"pip": [], "npm": []},
            },
        )
    )["config"]
    assert cfg == {"type": "cloud", "networking": LIMITED_DEFAULTS, "packages": EMPTY_PACKAGES}


def test_update_validates_hosts(client: anthropic.Anthropic) -> None:
    env = client.beta.environments.create(name="v", config=limited(allowed_hosts=["a.com"]))
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.beta.environments.update(env.id, config=limited(allowed_hosts=["a.com:8080"]))
    assert "contains a port" in error_of(exc)["message"]
    assert env_of(client.beta.environments.retrieve(env.id))["config"]["networking"]["allowed_hosts"] == [
        "a.com"
    ]


def test_config_type_cannot_change(client: anthropic.Anthropic) -> None:
    cloud = client.beta.environments.create(name="c")
    hosted = client.beta.environments.create(name="s", config={"type": "self_hosted"})
    for env_id, config in ((cloud.id, {"type": "self_hosted"}), (hosted.id, {"type": "cloud"})):
        before = env_of(client.beta.environments.retrieve(env_id))
        with pytest.raises(BetaInvalidConfigTypeChangeError) as exc:
            client.beta.environments.update(env_id, config=config)  # type: ignore[arg-type]
        assert exc.value.status_code == 400
        err = error_of(exc)  # type: ignore[arg-type]
        assert err["details"]["error_code"] == "invalid_config_type_change"
        assert err["message"].startswith("config.type:")
        assert env_of(client.beta.environments.retrieve(env_id)) == before
    assert env_of(client.beta.environments.update(hosted.id, config={"type": "self_hosted"}))["config"] == {
        "type": "self_hosted"
    }


def test_update_bad_types(client: anthropic.Anthropic) -> None:
    env = client.beta.environments.create(name="t")
    for body, path in (
        ({"metadata": "x"}, "metadata"),
        ({"description": 1}, "description:"),
        (
            {"config": {"type": "cloud", "networking": {"type": "limited", "allowed_hosts": [None]}}},
            "config.networking.allowed_hosts[0]:",
        ),
        ({"extra": True}, "extra: unknown field"),
    ):
        with pytest.raises(anthropic.BadRequestError) as exc:
            client.post(f"/v1/environments/{env.id}", body=body, cast_to=object)
        assert error_of(exc)["message"].startswith(path), error_of(exc)["message"]


# -- archive / delete ------------------------------------------------------------------------


def test_archive_is_idempotent_and_blocks_updates(client: anthropic.Anthropic) -> None:
    env = client.beta.environments.create(name="arch")
    first = env_of(client.beta.environments.archive(env.id))
    assert first["archived_at"] is not None
    again = env_of(client.beta.environments.archive(env.id))
    assert again["archived_at"] == first["archived_at"]
    assert env_of(client.beta.environments.retrieve(env.id)) == again
    with pytest.raises(BetaEnvironmentArchivedError) as exc:
        client.beta.environments.update(env.id, name="nope")
    assert exc.value.status_code == 400
    assert error_of(exc)["details"]["error_code"] == "environment_archived"  # type: ignore[arg-type]
    assert env_of(client.beta.environments.retrieve(env.id))["name"] == "arch"


def test_list_hides_archived_unless_asked(client: anthropic.Anthropic) -> None:
    live = client.beta.environments.create(name="live")
    gone = client.beta.environments.create(name="gone")
    client.beta.environments.archive(gone.id)
    plain = {e.id for e in client.beta.environments.list(limit=100)}
    everything = {e.id for e in client.beta.environments.list(limit=100, include_archived=True)}
    assert live.id in plain and gone.id not in plain
    assert {live.id, gone.id} <= everything


def test_delete_then_404(client: anthropic.Anthropic) -> None:
    env = client.beta.environments.create(name="del")
    out = client.beta.environments.delete(env.id)
    strict(BetaEnvironmentDeleteResponse, out)
    assert out.model_dump() == {"id": env.id, "type": "environment_deleted"}
    for call in (
        lambda: client.beta.environments.retrieve(env.id),
        lambda: client.beta.environments.delete(env.id),
        lambda: client.beta.environments.update(env.id, name="x"),
        lambda: client.beta.environments.archive(env.id),
    ):
        with pytest.raises(anthropic.NotFoundError) as exc:
            call()
        assert error_of(exc)["type"] == "not_found_error"  # type: ignore[arg-type]
    assert env.id not in {e.id for e in client.beta.environments.list(limit=100, include_archived=True)}


def test_unknown_id_404(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError):
        client.beta.environments.retrieve("env_doesnotexist")


# -- list paging -----------------------------------------------------------------------------


def test_list_pages_newest_first_without_duplicates(client: anthropic.Anthropic) -> None:
    mine = [client.beta.environments.create(name=unique("page")).id for _ in range(7)]
    seen: list[str] = []
    raw = client.beta.environments.with_raw_response.list(limit=3).json()
    assert set(raw) == {"data", "next_page"}
    page = client.beta.environments.list(limit=3)
    pages = 0
    while True:
        pages += 1
        assert len(page.data) <= 3
        for env in page.data:
            strict(BetaEnvironment, env)
        seen.extend(e.id for e in page.data)
        if not page.next_page:
            break
        page = client.beta.environments.list(limit=3, page=page.next_page)
    assert pages >= 3
    assert len(seen) == len(set(seen))
    positions = [seen.index(i) for i in mine]
    assert positions == sorted(positions, reverse=True)  # newest first
    # The SDK's auto-pagination sees the same sequence.
    assert [e.id for e in client.beta.environments.list(limit=3)] == seen


def test_list_default_and_max_limit(client: anthropic.Anthropic) -> None:
    for _ in range(21):
        client.beta.environments.create(name=unique("lim"))
    first = client.beta.environments.list()
    assert len(first.data) == 20 and first.next_page
    assert len(client.beta.environments.list(limit=100).data) <= 100
    for bad in (0, 101):
        with pytest.raises(anthropic.BadRequestError) as exc:
            client.beta.environments.list(limit=bad)
        assert error_of(exc)["message"].startswith("limit:")


def test_list_bad_cursor(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.beta.environments.list(page="not-a-cursor")
    assert error_of(exc)["message"] == "invalid page cursor"


# -- workspaces ------------------------------------------------------------------------------


@pytest.fixture
async def other_client(server: ServerProcess) -> AsyncIterator[anthropic.Anthropic]:
    """A client whose key belongs to a different workspace."""
    settings = Settings(data_dir=server.data_dir, database_url=server.database_url)
    db = open_database(settings.resolved_database_url)
    try:
        keys = Store.open(db).keys
        workspace_id = await keys.ensure_workspace("wrkspc_" + uuid.uuid4().hex, "other")
        plaintext, _ = await keys.create("other", workspace_id=workspace_id)
    finally:
        await db.close()
    with anthropic.Anthropic(base_url=server.base_url, api_key=plaintext, max_retries=0) as c:
        yield c


async def test_other_workspace_sees_nothing(
    client: anthropic.Anthropic, other_client: anthropic.Anthropic
) -> None:
    env = client.beta.environments.create(name="mine")
    for call in (
        lambda: other_client.beta.environments.retrieve(env.id),
        lambda: other_client.beta.environments.update(env.id, name="theirs"),
        lambda: other_client.beta.environments.archive(env.id),
        lambda: other_client.beta.environments.delete(env.id),
    ):
        with pytest.raises(anthropic.NotFoundError):
            call()
    assert env.id not in {e.id for e in other_client.beta.environments.list(include_archived=True)}
    assert env_of(client.beta.environments.retrieve(env.id))["name"] == "mine"
