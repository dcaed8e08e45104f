"""The HTTP surface: ``create_app(settings)`` wires everything."""

from hangar.http.app import create_app

__all__ = ["create_app"]
