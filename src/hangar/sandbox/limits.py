"""Resource limits of a sandbox, and how they are applied.

Mechanism: **per-process rlimits**, set with bash's ``ulimit`` builtin (hard and soft) by the
sandbox's long-lived shell before it reads its first command, after it has dropped to the
sandbox's unprivileged uid. Every process in the sandbox descends from that shell and inherits
them; an unprivileged process can lower rlimits but never raise a hard one again.

Why rlimits and not cgroups: they work everywhere bubblewrap does, need no delegated cgroup
(cgroup v2 machines without memory/cpu controllers, containers whose cgroupfs is read-only or
owned by someone else), cost nothing at sandbox start (a builtin, no exec) and cannot be undone
from inside. The price is that most of them count per process, not per sandbox:

- **CPU time** (``RLIMIT_CPU``): seconds of CPU per process; SIGXCPU at the soft limit, SIGKILL
  a second later. A command running too long in wall-clock time is the per-command timeout's job.
- **Memory** (``RLIMIT_DATA``): private writable memory per process (heap, anonymous ``mmap``).
  Chosen over ``RLIMIT_AS`` because runtimes that reserve large ``PROT_NONE`` ranges (V8, Go,
  the JVM) then still start. Allocation beyond it fails (``MemoryError``, ``ENOMEM``).
- **File size** (``RLIMIT_FSIZE``): the largest file a process may write (``File too large``).
- **Processes** (``RLIMIT_NPROC``): processes and threads of the sandbox's uid. Each session's
  sandbox runs under a uid of its own (when Hangar runs as root) or in a user namespace of its own
  (otherwise; Linux ≥ 5.14 counts ``RLIMIT_NPROC`` per user namespace), so this bounds the
  sandbox as a whole and a fork bomb in one sandbox cannot starve another or the server.
- **Open files** (``RLIMIT_NOFILE``) and no core dumps.

Total memory is therefore bounded by ``max_processes * memory_mb`` plus the tmpfs mounts
(``/tmp``, ``/dev/shm`` and ``$HOME``, each ``tmp_mb``), not by one figure; and shared anonymous
mappings (``mmap(MAP_SHARED | MAP_ANONYMOUS)``) are not private memory, so ``RLIMIT_DATA`` does not
count them. ``RLIMIT_AS`` would, but it also counts address space that is only reserved, and the
JVM (heap reserved at a quarter of RAM) and V8 (a 4 GiB pointer cage) would not start under a
useful value. A per-sandbox total needs a memory cgroup, which a later provider can add where
one is delegated to Hangar.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

from hangar.config import Settings

OPEN_FILES = 4096


@dataclass(frozen=True)
class SandboxLimits:
    """The limits of one sandbox (see the module docstring for what each one counts)."""

    cpu_time_s: int = 1800
    memory_mb: int = 1024
    max_processes: int = 256
    max_file_mb: int = 1024
    tmp_mb: int = 512
    open_files: int = OPEN_FILES

    @classmethod
    def from_settings(cls, settings: Settings) -> SandboxLimits:
        return cls(
            cpu_time_s=settings.sandbox_cpu_time_s,
            memory_mb=settings.sandbox_memory_mb,
            max_processes=settings.sandbox_max_processes,
            max_file_mb=settings.sandbox_max_file_mb,
            tmp_mb=settings.sandbox_tmp_mb,
        )

    def ulimit_script(self) -> str:
        """Bash that applies the limits to the current shell (and so to everything it starts),
        printing an error and exiting the shell when one cannot be applied."""
        limits = [
            ("-c", "0"),
            ("-n", str(_clamp(resource.RLIMIT_NOFILE, self.open_files))),
            ("-u", str(_clamp(resource.RLIMIT_NPROC, self.max_processes))),
            ("-d", str(_clamp(resource.RLIMIT_DATA, self.memory_mb * 1024 * 1024) // 1024)),
            ("-f", str(_clamp(resource.RLIMIT_FSIZE, self.max_file_mb * 1024 * 1024) // 1024)),
        ]
        parts = [f"ulimit -HS {flag} {value}" for flag, value in limits]
        # CPU: SIGXCPU at the soft limit (bash reports "CPU time limit exceeded"), SIGKILL at the hard.
        cpu_hard = _clamp(resource.RLIMIT_CPU, self.cpu_time_s + 1)
        parts.append(f"ulimit -S -t {max(1, min(self.cpu_time_s, cpu_hard))}")  # soft first: soft ≤ hard
        parts.append(f"ulimit -H -t {cpu_hard}")
        return (
            "{ " + " && ".join(parts) + "; } 2>/dev/null || "
            "{ echo 'hangar sandbox: cannot apply the resource limits' >&2; exit 97; }\n"
        )


def _clamp(which: int, value: int) -> int:
    """``value``, or the current hard limit when that is lower (a limit cannot be raised)."""
    hard = resource.getrlimit(which)[1]
    return value if hard == resource.RLIM_INFINITY else min(value, hard)
