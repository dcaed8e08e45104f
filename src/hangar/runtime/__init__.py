"""The server-side agent runtime: the loop, its model providers (``runtime.models``) and tools."""
