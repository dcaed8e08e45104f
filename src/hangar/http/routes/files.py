"""Routes: /v1/files (placeholder until the files work lands)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
