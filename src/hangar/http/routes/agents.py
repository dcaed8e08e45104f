"""Routes: /v1/agents (placeholder until the agents work lands)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
