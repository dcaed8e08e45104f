"""The model catalogue: ordering, aliases, context windows, paging rules, settings overrides."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from anthropic.types.beta import BetaModelInfo

from hangar.config import ExtraModel, Settings
from hangar.runtime.models import catalog
from hangar.runtime.models.catalog import (
    BUILTIN_MODELS,
    DEFAULT_CONTEXT_WINDOW,
    ModelCatalog,
    UnknownCursor,
    catalog_for,
    context_window,
)
from hangar.runtime.models.router import ModelRouter
from tests.helpers import strict


def test_every_builtin_renders_a_valid_model_info() -> None:
    for model in BUILTIN_MODELS:
        info = strict(BetaModelInfo, model.to_wire())
        assert info.id == model.id


def test_spec_model_ids_are_all_listed_and_routed() -> None:
    known = [
        "claude-fable-5-2",
        "claude-haiku-5-5",
        "claude-sonnet-5-5",
        "claude-opus-5-5",
        "claude-fable-5-1",
        "claude-sonnet-5",
        "claude-fable-5",
        "claude-opus-5",
        "claude-opus-4-8",
        "claude-opus-4-7",
        "claude-opus-4-6",
        "claude-sonnet-4-6",
        "claude-haiku-4-5",
        "claude-haiku-4-5-20251001",
        "claude-opus-4-5",
        "claude-opus-4-5-20251101",
        "claude-sonnet-4-5",
        "claude-sonnet-4-5-20250929",
    ]
    cat = ModelCatalog()
    router = ModelRouter(Settings())
    for model_id in known:
        assert cat.get(model_id) is not None, model_id
        assert router.provider_name_for(model_id) == "anthropic"
    for model_id in ("scripted", "scripted-echo", "scripted-small"):
        assert router.provider_name_for(model_id) == "scripted"


def test_newest_first_with_id_tiebreak() -> None:
    listed = ModelCatalog().models(catalog.LIFECYCLES)
    keys = [(m.created_at, m.id) for m in listed]
    assert keys == sorted(keys, reverse=True)
    assert len({m.id for m in listed}) == len(listed)


def test_context_window() -> None:
    assert context_window("claude-opus-4-6") == 1_000_000
    assert context_window("claude-haiku-4-5") == 200_000  # alias
    assert context_window("scripted-small") == 4096
    assert context_window("scripted-small-v2") == 4096  # routed to scripted: behaves like its base
    assert context_window("scripted-whatever") == 200_000
    assert context_window("unheard-of") == DEFAULT_CONTEXT_WINDOW
    settings = Settings(extra_models=(ExtraModel(id="unheard-of", max_input_tokens=1234),))
    assert context_window("unheard-of", settings) == 1234
    assert ModelCatalog().max_output_tokens("claude-opus-4-20250514") == 32_000


def test_extra_models_add_and_replace() -> None:
    settings = Settings(
        extra_models=(
            ExtraModel(id="local", created_at=datetime(2031, 1, 1, tzinfo=UTC)),
            ExtraModel(id="claude-opus-4-6", display_name="Opus via proxy", max_input_tokens=500_000),
        )
    )
    cat = catalog_for(settings)
    assert cat.models()[0].id == "local"
    replaced = cat.get("claude-opus-4-6")
    assert replaced is not None and replaced.display_name == "Opus via proxy"
    assert replaced.created_at == datetime(1970, 1, 1, tzinfo=UTC)
    assert catalog_for(Settings()) is catalog_for(Settings())  # the shared built-in catalogue


def test_paging_rules() -> None:
    cat = ModelCatalog()
    ids = [m.id for m in cat.models()]
    page = cat.page(limit=5)
    assert [m.id for m in page.data] == ids[:5] and page.has_more
    page = cat.page(after_id=ids[4], limit=100)
    assert [m.id for m in page.data] == ids[5:] and not page.has_more
    page = cat.page(before_id=ids[6], limit=2)
    assert [m.id for m in page.data] == ids[4:6] and page.has_more
    page = cat.page(before_id=ids[2], limit=2)
    assert [m.id for m in page.data] == ids[:2] and not page.has_more
    assert cat.page(after_id=ids[-1]).to_wire() == {
        "data": [],
        "has_more": False,
        "first_id": None,
        "last_id": None,
    }
    with pytest.raises(UnknownCursor, match="after_id: unknown model 'nope'"):
        cat.page(after_id="nope")
