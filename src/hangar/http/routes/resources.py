"""Routes: /v1/resources (placeholder until the resources work lands)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
