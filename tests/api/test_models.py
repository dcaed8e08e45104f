"""/v1/models through the official client: list (newest first, lifecycle filter, Page paging in
both directions), retrieve by id and alias, limits, auth, and catalogue extension by settings."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anthropic
import httpx
import pytest
from anthropic.types.beta import BetaModelInfo
from anthropic.types.beta.beta_model_capabilities import BetaModelCapabilities

from hangar.testing import ServerProcess
from tests.conftest import API_KEY
from tests.helpers import strict

ACTIVE_OR_DEPRECATED = {"active", "deprecated"}
EXPECTED = "expected one of active, deprecated, retired"


def models(page: Any) -> list[BetaModelInfo]:
    return [strict(BetaModelInfo, m) for m in page.data]


def everything(client: anthropic.Anthropic, **kw: Any) -> list[BetaModelInfo]:
    return [strict(BetaModelInfo, m) for m in client.beta.models.list(limit=1000, **kw)]


def raw(server: ServerProcess, path: str, *, key: str | None = API_KEY, **params: Any) -> httpx.Response:
    headers = {"x-api-key": key} if key else {}
    return httpx.get(server.base_url + path, headers=headers, params=params)


def test_list_default_is_active_and_deprecated_newest_first(client: anthropic.Anthropic) -> None:
    page = client.beta.models.list()
    data = models(page)
    assert 0 < len(data) <= 20
    assert {m.lifecycle for m in data} == ACTIVE_OR_DEPRECATED
    keys = [(m.created_at, m.id) for m in data]
    assert keys == sorted(keys, reverse=True)
    ids = [m.id for m in data]
    assert {"claude-opus-4-6", "claude-sonnet-4-6", "claude-sonnet-4-5-20250929", "scripted"} <= set(ids)
    assert page.first_id == ids[0] and page.last_id == ids[-1]
    assert page.has_more is False
    for m in data:
        assert m.type == "model" and m.display_name
        assert m.max_input_tokens and m.max_tokens
        assert (m.deprecated_at is None) == (m.lifecycle == "active")


def test_page_envelope_shape(server: ServerProcess) -> None:
    r = raw(server, "/v1/models", limit=2)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"data", "has_more", "first_id", "last_id"}
    assert body["has_more"] is True
    assert [body["first_id"], body["last_id"]] == [m["id"] for m in body["data"]]
    for m in body["data"]:
        strict(BetaModelInfo, m)
        assert m["created_at"].endswith("Z")


def test_retrieve_by_id_and_alias(client: anthropic.Anthropic) -> None:
    model = strict(BetaModelInfo, client.beta.models.retrieve("claude-opus-4-6"))
    assert (model.id, model.display_name, model.lifecycle, model.line) == (
        "claude-opus-4-6",
        "Claude Opus 4.6",
        "active",
        "opus",
    )
    aliased = strict(BetaModelInfo, client.beta.models.retrieve("claude-haiku-4-5"))
    assert aliased.id == "claude-haiku-4-5-20251001"
    deprecated = strict(BetaModelInfo, client.beta.models.retrieve("claude-sonnet-4-5-20250929"))
    assert deprecated.lifecycle == "deprecated" and deprecated.retires_at is not None
    retired = strict(BetaModelInfo, client.beta.models.retrieve("claude-opus-4-0"))
    assert retired.lifecycle == "retired"


def test_scripted_models_carry_full_capabilities(client: anthropic.Anthropic) -> None:
    for model_id in ("scripted", "scripted-echo", "scripted-small"):
        model = strict(BetaModelInfo, client.beta.models.retrieve(model_id))
        assert model.line is None
        assert model.capabilities is not None
        caps = strict(BetaModelCapabilities, model.capabilities)
        assert caps.thinking.types.disabled.supported is True
        assert caps.image_input.supported is False
    assert strict(BetaModelInfo, client.beta.models.retrieve("scripted-small")).max_input_tokens == 4096


def test_retrieve_unknown_is_404(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as info:
        client.beta.models.retrieve("claude-imaginary-9")
    assert info.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "model: claude-imaginary-9"},
        "request_id": info.value.request_id,
    }


def test_lifecycle_filter(client: anthropic.Anthropic) -> None:
    retired = everything(client, lifecycle=["retired"])
    assert retired and {m.lifecycle for m in retired} == {"retired"}
    assert "claude-opus-4-20250514" in {m.id for m in retired}
    active = everything(client, lifecycle=["active"])
    assert {m.lifecycle for m in active} == {"active"}
    all_three = everything(client, lifecycle=["active", "deprecated", "retired"])
    assert len(all_three) == len(everything(client)) + len(retired)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"lifecycle[]": ["gone"]}, f"lifecycle[0]: 'gone' is not a valid value; {EXPECTED}"),
        ({"lifecycle[]": ["active"] * 4}, "lifecycle: at most 3 values are allowed, got 4"),
        ({"limit": 0}, "limit: must be between 1 and 1000, got 0"),
        ({"limit": 1001}, "limit: must be between 1 and 1000, got 1001"),
        ({"limit": "x"}, "limit: 'x' is not an integer"),
        ({"after_id": "claude-nope"}, "after_id: unknown model 'claude-nope'"),
        ({"before_id": "claude-nope"}, "before_id: unknown model 'claude-nope'"),
        ({"after_id": "scripted", "before_id": "scripted"}, "after_id: cannot be combined with before_id"),
    ],
)
def test_bad_list_parameters_are_400(server: ServerProcess, params: dict[str, Any], message: str) -> None:
    r = raw(server, "/v1/models", **params)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == {"type": "invalid_request_error", "message": message}


def test_limit_bounds_are_accepted(client: anthropic.Anthropic) -> None:
    assert len(models(client.beta.models.list(limit=1))) == 1
    full = everything(client, lifecycle=["active", "deprecated", "retired"])
    assert len(full) < 1000  # limit=1000 returns everything on one page
    assert (
        client.beta.models.list(limit=1000, lifecycle=["active", "deprecated", "retired"]).has_more is False
    )


def test_forward_paging_with_after_id(client: anthropic.Anthropic) -> None:
    full = [m.id for m in everything(client)]
    first = client.beta.models.list(limit=3)
    assert [m.id for m in models(first)] == full[:3] and first.has_more is True
    second = client.beta.models.list(limit=3, after_id=first.last_id)
    assert [m.id for m in models(second)] == full[3:6]
    # auto-pagination follows after_id=last_id until has_more is false
    assert [m.id for m in client.beta.models.list(limit=4)] == full
    last = client.beta.models.list(limit=3, after_id=full[-1])
    assert models(last) == [] and last.has_more is False and last.first_id is None and last.last_id is None


def test_backward_paging_with_before_id(client: anthropic.Anthropic) -> None:
    full = [m.id for m in everything(client)]
    page = client.beta.models.list(limit=3, before_id=full[-1])
    assert [m.id for m in models(page)] == full[-4:-1]
    assert page.has_more is True
    # page backward by hand, as the SDK does: before_id=first_id while has_more
    collected: list[str] = []
    cursor = full[-1]
    while True:
        page = client.beta.models.list(limit=4, before_id=cursor)
        ids = [m.id for m in models(page)]
        collected = ids + collected
        if not page.has_more:
            break
        assert page.first_id is not None
        cursor = page.first_id
    assert collected == full[:-1]
    top = client.beta.models.list(limit=3, before_id=full[0])
    assert models(top) == [] and top.has_more is False


def test_sdk_auto_pagination_backward(client: anthropic.Anthropic) -> None:
    full = [m.id for m in everything(client)]
    pages = client.beta.models.list(limit=2, before_id=full[-1])
    seen: list[str] = []
    for page in pages.iter_pages():
        seen.extend(m.id for m in models(page))
    # each page is newest-first; the pages themselves walk towards the newest
    assert seen == [i for k in range(len(full) - 1, 0, -2) for i in full[max(0, k - 2) : k]]


def test_cursor_may_be_an_alias_or_a_filtered_out_model(client: anthropic.Anthropic) -> None:
    full = [m.id for m in everything(client)]
    by_alias = client.beta.models.list(after_id="claude-sonnet-4-5", limit=1000)
    assert [m.id for m in models(by_alias)] == full[full.index("claude-sonnet-4-5-20250929") + 1 :]
    after_retired = client.beta.models.list(after_id="claude-opus-4-20250514", limit=1000)
    cursor = strict(BetaModelInfo, client.beta.models.retrieve("claude-opus-4-0"))
    assert all(m.created_at <= cursor.created_at for m in models(after_retired))


def test_auth_required_but_no_beta_header(server: ServerProcess) -> None:
    for path in ("/v1/models", "/v1/models/scripted"):
        assert raw(server, path, key=None).status_code == 401
        assert raw(server, path, key="wrong").status_code == 401
        r = raw(server, path)  # no anthropic-beta header at all
        assert r.status_code == 200, r.text


def test_extra_models_from_settings(make_server: Callable[..., ServerProcess]) -> None:
    extra = [
        {
            "id": "my-proxy-model",
            "display_name": "My proxy model",
            "max_input_tokens": 32000,
            "max_tokens": 4000,
            "created_at": "2030-01-01T00:00:00Z",
        },
        {"id": "scripted-echo", "max_input_tokens": 1000},
    ]
    srv = make_server(env={"HANGAR_EXTRA_MODELS": json.dumps(extra)})
    with anthropic.Anthropic(base_url=srv.base_url, api_key=API_KEY, max_retries=0) as client:
        first = strict(BetaModelInfo, models(client.beta.models.list(limit=1))[0])
        assert (first.id, first.display_name, first.max_input_tokens, first.max_tokens) == (
            "my-proxy-model",
            "My proxy model",
            32000,
            4000,
        )
        replaced = strict(BetaModelInfo, client.beta.models.retrieve("scripted-echo"))
        assert (replaced.display_name, replaced.max_input_tokens) == ("scripted-echo", 1000)
