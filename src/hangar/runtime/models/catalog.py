"""The model catalogue behind ``/v1/models``, and the context windows compaction relies on.

Built-in entries: the Claude models the SDK knows (served by the ``anthropic`` provider; the
``[-date]`` ids carry their short form as an alias) and Hangar's own ``scripted`` models.
Release and deprecation dates of models without a published date are placeholders that keep
the newest-first order right. ``Settings.extra_models`` adds or replaces entries.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from hangar.config import Settings

Lifecycle = Literal["active", "deprecated", "retired"]
LIFECYCLES: tuple[str, ...] = get_args(Lifecycle)
DEFAULT_LIFECYCLES: frozenset[str] = frozenset({"active", "deprecated"})
DEFAULT_CONTEXT_WINDOW = 200_000
DEFAULT_MAX_TOKENS = 64_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _day(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _no(**extra: Any) -> dict[str, Any]:
    return {"supported": False, **extra}


# What the scripted models support: nothing but plain text and tools. Every key the SDK's
# BetaModelCapabilities knows is present, as its docstring promises.
SCRIPTED_CAPABILITIES: Mapping[str, Any] = {
    "batch": _no(),
    "citations": _no(),
    "code_execution": _no(),
    "compaction": _no(summarize=_no()),
    "context_management": _no(
        clear_thinking_20251015=_no(), clear_tool_uses_20250919=_no(), compact_20260112=_no()
    ),
    "effort": _no(low=_no(), medium=_no(), high=_no(), xhigh=_no(), max=_no()),
    "image_input": _no(),
    "pdf_input": _no(),
    "server_tools": _no(code_execution=_no(), web_search=_no()),
    "structured_outputs": _no(),
    "thinking": _no(
        types={"adaptive": _no(), "between_tools": _no(), "disabled": {"supported": True}, "enabled": _no()}
    ),
}


@dataclass(frozen=True)
class CatalogModel:
    """One catalogue entry; :meth:`to_wire` renders the SDK's ``BetaModelInfo``."""

    id: str
    display_name: str
    created_at: datetime
    max_input_tokens: int
    max_tokens: int
    lifecycle: Lifecycle = "active"
    line: str | None = None
    aliases: tuple[str, ...] = ()
    deprecated_at: datetime | None = None
    retires_at: datetime | None = None
    capabilities: Mapping[str, Any] | None = None

    @property
    def sort_key(self) -> tuple[datetime, str]:
        return (self.created_at, self.id)

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "model",
            "id": self.id,
            "display_name": self.display_name,
            "created_at": _rfc3339(self.created_at),
            "lifecycle": self.lifecycle,
            "line": self.line,
            "max_input_tokens": self.max_input_tokens,
            "max_tokens": self.max_tokens,
            "deprecated_at": _rfc3339(self.deprecated_at),
            "retires_at": _rfc3339(self.retires_at),
        }
        if self.capabilities is not None:
            out["capabilities"] = self.capabilities
        return out


def _rfc3339(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _claude(
    model_id: str,
    name: str,
    released: str,
    line: str,
    window: int,
    max_tokens: int,
    *,
    alias: str | None = None,
    lifecycle: Lifecycle = "active",
    deprecated: str | None = None,
    retires: str | None = None,
) -> CatalogModel:
    return CatalogModel(
        id=model_id,
        display_name=name,
        created_at=_day(released),
        max_input_tokens=window,
        max_tokens=max_tokens,
        lifecycle=lifecycle,
        line=line,
        aliases=(alias,) if alias else (),
        deprecated_at=_day(deprecated) if deprecated else None,
        retires_at=_day(retires) if retires else None,
    )


_M = 1_000_000
BUILTIN_MODELS: tuple[CatalogModel, ...] = (
    _claude("claude-fable-5-2", "Claude Fable 5.2", "2026-11-10", "fable", _M, 128_000),
    _claude("claude-haiku-5-5", "Claude Haiku 5.5", "2026-10-28", "haiku", 200_000, 64_000),
    _claude("claude-sonnet-5-5", "Claude Sonnet 5.5", "2026-10-21", "sonnet", _M, 64_000),
    _claude("claude-opus-5-5", "Claude Opus 5.5", "2026-10-14", "opus", _M, 128_000),
    _claude("claude-fable-5-1", "Claude Fable 5.1", "2026-09-16", "fable", _M, 128_000),
    _claude("claude-sonnet-5", "Claude Sonnet 5", "2026-08-19", "sonnet", _M, 64_000),
    _claude("claude-fable-5", "Claude Fable 5", "2026-08-05", "fable", _M, 128_000),
    _claude("claude-opus-5", "Claude Opus 5", "2026-07-22", "opus", _M, 128_000),
    _claude("claude-opus-4-8", "Claude Opus 4.8", "2026-06-10", "opus", _M, 128_000),
    _claude("claude-opus-4-7", "Claude Opus 4.7", "2026-04-16", "opus", _M, 128_000),
    _claude("claude-sonnet-4-6", "Claude Sonnet 4.6", "2026-02-17", "sonnet", _M, 64_000),
    _claude("claude-opus-4-6", "Claude Opus 4.6", "2026-02-05", "opus", _M, 128_000),
    _claude(
        "claude-opus-4-5-20251101",
        "Claude Opus 4.5",
        "2025-11-24",
        "opus",
        200_000,
        64_000,
        alias="claude-opus-4-5",
    ),
    _claude(
        "claude-haiku-4-5-20251001",
        "Claude Haiku 4.5",
        "2025-10-15",
        "haiku",
        200_000,
        64_000,
        alias="claude-haiku-4-5",
    ),
    _claude(
        "claude-sonnet-4-5-20250929",
        "Claude Sonnet 4.5",
        "2025-09-29",
        "sonnet",
        200_000,
        64_000,
        alias="claude-sonnet-4-5",
        lifecycle="deprecated",
        deprecated="2026-08-19",
        retires="2026-11-30",
    ),
    _claude(
        "claude-sonnet-4-20250514",
        "Claude Sonnet 4",
        "2025-05-22",
        "sonnet",
        200_000,
        64_000,
        alias="claude-sonnet-4-0",
        lifecycle="retired",
        deprecated="2026-02-17",
        retires="2026-06-15",
    ),
    _claude(
        "claude-opus-4-20250514",
        "Claude Opus 4",
        "2025-05-22",
        "opus",
        200_000,
        32_000,
        alias="claude-opus-4-0",
        lifecycle="retired",
        deprecated="2026-02-05",
        retires="2026-06-15",
    ),
    _claude(
        "claude-3-7-sonnet-20250219",
        "Claude Sonnet 3.7",
        "2025-02-24",
        "sonnet",
        200_000,
        64_000,
        alias="claude-3-7-sonnet-latest",
        lifecycle="retired",
        deprecated="2025-10-28",
        retires="2026-02-19",
    ),
    _claude(
        "claude-3-5-haiku-20241022",
        "Claude Haiku 3.5",
        "2024-10-22",
        "haiku",
        200_000,
        8_192,
        alias="claude-3-5-haiku-latest",
        lifecycle="retired",
        deprecated="2025-12-19",
        retires="2026-02-19",
    ),
    CatalogModel(
        id="scripted",
        display_name="Scripted (offline test model)",
        created_at=EPOCH,
        max_input_tokens=200_000,
        max_tokens=64_000,
        capabilities=SCRIPTED_CAPABILITIES,
    ),
    CatalogModel(
        id="scripted-echo",
        display_name="Scripted echo (offline test model)",
        created_at=EPOCH,
        max_input_tokens=200_000,
        max_tokens=64_000,
        capabilities=SCRIPTED_CAPABILITIES,
    ),
    CatalogModel(
        id="scripted-small",
        display_name="Scripted, small context (offline test model)",
        created_at=EPOCH,
        max_input_tokens=4_096,
        max_tokens=2_048,
        capabilities=SCRIPTED_CAPABILITIES,
    ),
)


@dataclass(frozen=True)
class ModelPage:
    data: list[CatalogModel]
    has_more: bool

    def to_wire(self) -> dict[str, Any]:
        return {
            "data": [m.to_wire() for m in self.data],
            "has_more": self.has_more,
            "first_id": self.data[0].id if self.data else None,
            "last_id": self.data[-1].id if self.data else None,
        }


class UnknownCursor(LookupError):
    """A paging cursor that names no model (``param`` is ``after_id`` or ``before_id``)."""

    def __init__(self, param: str, value: str) -> None:
        super().__init__(f"{param}: unknown model {value!r}")
        self.param = param
        self.value = value


class ModelCatalog:
    """An immutable set of models, listed newest first (ties broken by id, descending)."""

    def __init__(self, models: Iterable[CatalogModel] = BUILTIN_MODELS) -> None:
        by_id: dict[str, CatalogModel] = {}
        for model in models:
            by_id[model.id] = model
        self._models = sorted(by_id.values(), key=lambda m: m.sort_key, reverse=True)
        self._lookup: dict[str, CatalogModel] = {}
        for model in self._models:
            for alias in model.aliases:
                self._lookup.setdefault(alias, model)
        self._lookup.update(by_id)

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelCatalog:
        extra = [
            CatalogModel(
                id=e.id,
                display_name=e.display_name or e.id,
                created_at=e.created_at.astimezone(UTC) if e.created_at else EPOCH,
                max_input_tokens=e.max_input_tokens,
                max_tokens=e.max_tokens,
            )
            for e in settings.extra_models
        ]
        return cls([*BUILTIN_MODELS, *extra])

    def get(self, id_or_alias: str) -> CatalogModel | None:
        return self._lookup.get(id_or_alias)

    def models(self, lifecycles: Iterable[str] = DEFAULT_LIFECYCLES) -> list[CatalogModel]:
        wanted = frozenset(lifecycles)
        return [m for m in self._models if m.lifecycle in wanted]

    def page(
        self,
        *,
        lifecycles: Iterable[str] = DEFAULT_LIFECYCLES,
        after_id: str | None = None,
        before_id: str | None = None,
        limit: int = 20,
    ) -> ModelPage:
        """A page of :meth:`models`: after ``after_id`` (older), or the ``limit`` entries just
        before ``before_id`` (newer). ``has_more`` says whether the list goes on in the
        direction of travel. Raises :class:`UnknownCursor`."""
        items = self.models(lifecycles)
        if before_id is not None:
            cursor = self._cursor("before_id", before_id)
            newer = [m for m in items if m.sort_key > cursor.sort_key]
            return ModelPage(newer[-limit:], len(newer) > limit)
        if after_id is not None:
            cursor = self._cursor("after_id", after_id)
            items = [m for m in items if m.sort_key < cursor.sort_key]
        return ModelPage(items[:limit], len(items) > limit)

    def _cursor(self, param: str, value: str) -> CatalogModel:
        found = self.get(value)
        if found is None:
            raise UnknownCursor(param, value)
        return found

    def context_window(self, model_id: str) -> int:
        """The model's input context window in tokens (:data:`DEFAULT_CONTEXT_WINDOW` if unknown)."""
        found = self._resolve(model_id)
        return found.max_input_tokens if found else DEFAULT_CONTEXT_WINDOW

    def max_output_tokens(self, model_id: str) -> int:
        """The largest ``max_tokens`` the model accepts (:data:`DEFAULT_MAX_TOKENS` if unknown)."""
        found = self._resolve(model_id)
        return found.max_tokens if found else DEFAULT_MAX_TOKENS

    def _resolve(self, model_id: str) -> CatalogModel | None:
        found = self.get(model_id)
        if found is None and model_id.startswith("scripted"):
            # Any scripted* id the router sends to the scripted provider behaves like `scripted`.
            return next((m for m in self._models if fnmatch.fnmatchcase(model_id, m.id + "*")), None)
        return found


_BUILTIN = ModelCatalog()


def catalog_for(settings: Settings) -> ModelCatalog:
    """The catalogue ``settings`` describe (the shared built-in one without ``extra_models``)."""
    return ModelCatalog.from_settings(settings) if settings.extra_models else _BUILTIN


def context_window(model_id: str, settings: Settings | None = None) -> int:
    """The input context window of ``model_id`` (with ``settings.extra_models`` when given)."""
    return (_BUILTIN if settings is None else catalog_for(settings)).context_window(model_id)
