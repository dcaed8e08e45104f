"""Routes: /v1/models (placeholder until the models work lands)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
