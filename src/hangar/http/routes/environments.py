"""Routes: /v1/environments (placeholder until the environments work lands)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
