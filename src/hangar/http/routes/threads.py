"""Routes: /v1/threads (placeholder until the threads work lands)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
