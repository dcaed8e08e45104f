"""The HTTP contract: pydantic models and helpers mirroring the SDK's ``types/beta``."""
