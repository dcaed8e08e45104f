"""Strict validation of SDK responses: the SDK builds objects with ``construct`` and tolerates
missing fields; we re-validate what the server actually sent."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter

T = TypeVar("T")


def strict(model: Any, obj: Any) -> Any:
    """Re-validate ``obj`` (an SDK object or raw dict) with ``model`` (a class or union type)."""
    data = (
        obj.model_dump(mode="json", exclude_unset=True, by_alias=True) if isinstance(obj, BaseModel) else obj
    )
    if isinstance(model, type) and issubclass(model, BaseModel):
        return model.model_validate(data, strict=False)
    return TypeAdapter(model).validate_python(data)
