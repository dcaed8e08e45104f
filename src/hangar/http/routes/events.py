"""Routes: /v1/events (placeholder until the events work lands)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
