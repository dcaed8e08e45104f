"""Sandboxes for the agent's hands: a bubblewrap executor and the egress proxy of ``limited``
networking.

- :mod:`.bwrap`: :class:`BwrapExecutor` (the ``Executor`` protocol, ``bash`` inside a bubblewrap
  sandbox per session), :func:`sandbox_problems` (what is missing to run one), :func:`sandbox_uid`.
- :mod:`.proxy`: :class:`EgressProxy` (HTTP/CONNECT proxy on a unix socket) and
  :class:`EgressPolicy` (``allowed_hosts``, package registries, MCP hosts).
- :mod:`.limits`: :class:`SandboxLimits` (per-process rlimits; why rlimits).

Typical use::

    executor = BwrapExecutor(session_id, workdir, settings, networking=environment_networking,
                             toolset=toolset, mcp_servers=[s["url"] for s in agent_mcp_servers])
    result = await executor.run("bash", {"command": "pip install requests"})
    ...
    await executor.close()
"""

from hangar.sandbox.bwrap import BwrapExecutor, SandboxUnavailable, sandbox_problems, sandbox_uid
from hangar.sandbox.limits import SandboxLimits
from hangar.sandbox.proxy import PACKAGE_REGISTRY_HOSTS, EgressPolicy, EgressProxy

__all__ = [
    "PACKAGE_REGISTRY_HOSTS",
    "BwrapExecutor",
    "EgressPolicy",
    "EgressProxy",
    "SandboxLimits",
    "SandboxUnavailable",
    "sandbox_problems",
    "sandbox_uid",
]
