"""``hangar worker``: Hangar's bubblewrap sandbox as a remote worker of a self-hosted environment.

- :mod:`.runner`: :class:`SandboxWorker` (the official SDK's ``EnvironmentWorker`` with a
  bubblewrap sandbox per claimed session) and its :class:`WorkerOptions`.
- :mod:`.tools`: :class:`SandboxTool` / :func:`sandbox_tools`, the SDK tool interface over a
  Hangar executor.

Typical use (what ``hangar worker`` does)::

    worker = SandboxWorker(settings, WorkerOptions(environment_id, server_url, key, max_sessions=4))
    loop.add_signal_handler(signal.SIGTERM, worker.drain)
    await worker.run()
"""

from hangar.worker.runner import SandboxWorker, WorkerOptions
from hangar.worker.tools import TOOL_NAMES, SandboxTool, sandbox_tools

__all__ = ["TOOL_NAMES", "SandboxTool", "SandboxWorker", "WorkerOptions", "sandbox_tools"]
