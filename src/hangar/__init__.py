"""Hangar: a self-hosted implementation of the Managed Agents HTTP API."""

__version__ = "0.1.0"
__all__ = ["__version__"]
