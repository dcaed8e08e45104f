"""Routes: /v1/sessions (placeholder until the sessions work lands)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
