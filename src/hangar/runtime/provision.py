"""Provisioning a cloud session's sandbox: packages, session resources, outputs.

The agent loop calls three hooks:

- :meth:`Provisioner.before_turn` at the first model request of a turn: builds (or reuses) the
  environment's package layer (:mod:`hangar.sandbox.packages`), makes the session's uploads
  directory match its ``file`` resources, creates the outputs directory, clones the
  ``github_repository`` resources not cloned yet, and gives the executor its mounts. A package
  failure returns a message: the loop ends the turn with a ``session.error``. A clone failure is
  a ``session.error`` with ``retry_status: retrying`` and the turn goes on without the
  repository (API §3.3); the clone is tried again next turn.
- :meth:`Provisioner.attach` before each built-in tool call: gives the executor its mounts (cheap;
  after a restart or an executor eviction it recomputes them from what is on disk).
- :meth:`Provisioner.after_turn` when the session goes idle: files new or changed under
  ``/mnt/session/outputs/`` become session-scoped, downloadable files of the Files API.

Everything done is recorded on disk (the layer's marker, ``repos.done/``, ``outputs.json``), so
provisioning resumes after a restart without redoing finished work. Self-hosted sessions and
executors without a sandbox (``--unsafe-no-sandbox``) are not provisioned.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

from hangar.config import Settings
from hangar.crypto import SecretKeyError, UnsealError
from hangar.runtime.journal import Journal
from hangar.runtime.tools.definitions import find_toolset
from hangar.runtime.tools.executor import ExecutorPool, WorkspaceExecutor
from hangar.sandbox.bwrap import BwrapExecutor, SandboxMount, SessionMounts, sandbox_uid
from hangar.sandbox.packages import LAYER, PackageCache, PackageInstallError, PackageSpec, layer_env
from hangar.sandbox.resources import (
    OUTPUTS,
    UPLOADS,
    WORKSPACE,
    clone_repository,
    load_index,
    open_output,
    prepare_outputs,
    save_index,
    scan_outputs,
    session_dir,
    sync_uploads,
)
from hangar.store import Store
from hangar.store.events import NewEvent
from hangar.store.files import FileStore
from hangar.store.sessions import SessionRecord, resource_aad
from hangar.wire import events as ev
from hangar.wire.files import clean_filename, guess_mime

log = logging.getLogger(__name__)

MOUNTS_CACHE = 1024


class Provisioner:
    """One per server (owned by the agent loop)."""

    def __init__(self, store: Store, settings: Settings, journal: Journal, executors: ExecutorPool) -> None:
        self.store = store
        self.settings = settings
        self.journal = journal
        self.executors = executors
        self.packages = PackageCache(settings)
        self._mounts: OrderedDict[str, SessionMounts] = OrderedDict()

    # ------------------------------------------------------------------ hooks

    async def before_turn(self, session: SessionRecord, has_resources: bool | None = None) -> str | None:
        """Provision the session (see the module docstring). Returns why the turn cannot run.
        A session with no packages and no resources (and none before) costs one read, none when
        the caller knows it has no resources (``has_resources=False``)."""
        session_id = session.id
        if session.data.get("self_hosted"):
            return None
        spec = await self._spec(session)
        resources: list[dict[str, Any]] = []
        if has_resources is not False:
            resources = (await self.store.sessions.resources([session_id]))[session_id]
        base = session_dir(self.settings, session_id)
        if not spec and not resources and not (base / "uploads").exists():
            return None  # the outputs directory comes with the first tool call (attach)
        executor = self.executors.get(
            session_id,
            toolset=find_toolset(session.data["agent"].get("tools")),
            networking=session.data.get("networking"),
        )
        if not isinstance(executor, BwrapExecutor):
            return None
        await executor.prepare()
        if spec:
            try:
                await self.packages.ensure(spec, context=session_id)
            except PackageInstallError as exc:
                log.warning("package install failed", extra={"session_id": session_id, "error": str(exc)})
                return str(exc)
        wanted = {
            r["mount_path"][len(UPLOADS) + 1 :]: FileStore.path(r["file_id"], self.settings.files_dir)
            for r in resources
            if r.get("type") == "file"
        }
        await asyncio.to_thread(sync_uploads, base / "uploads", wanted)
        owner = executor.uid if executor.privileged else None
        await asyncio.to_thread(prepare_outputs, base / "outputs", owner)
        for resource in resources:
            if resource.get("type") == "github_repository":
                await self._clone(session, executor, resource)
        mounts = await self._compute(session, executor, resources)
        executor.set_mounts(mounts)
        return None

    async def attach(self, session_id: str, executor: WorkspaceExecutor) -> None:
        """Give the executor the session's mounts (before a tool call)."""
        if not isinstance(executor, BwrapExecutor):
            return
        mounts = self._mounts.get(session_id)
        if mounts is None:
            session = await self.store.sessions.get(None, session_id)
            if session is None or session.data.get("self_hosted"):
                return
            resources = (await self.store.sessions.resources([session_id]))[session_id]
            owner = executor.uid if executor.privileged else None
            outputs = session_dir(self.settings, session_id) / "outputs"
            await asyncio.to_thread(prepare_outputs, outputs, owner)
            mounts = await self._compute(session, executor, resources)
        else:
            self._mounts.move_to_end(session_id)
        executor.set_mounts(mounts)

    async def after_turn(self, session_id: str) -> None:
        """Record the files new or changed under the session's outputs directory."""
        directory = session_dir(self.settings, session_id) / "outputs"
        if not directory.is_dir():
            return
        index_path = directory.parent / "outputs.json"
        index = await asyncio.to_thread(load_index, index_path)
        uid = sandbox_uid(session_id) if os.geteuid() == 0 else None
        found, skipped = await asyncio.to_thread(
            scan_outputs, directory, index, uid=uid, max_bytes=self.settings.max_output_file_mb * 1024 * 1024
        )
        for rel in skipped:
            log.warning("output file too large, not recorded", extra={"session_id": session_id, "path": rel})
        if not found:
            return
        session = await self.store.sessions.get(None, session_id)
        if session is None:
            return
        for item in found:
            try:
                handle = await asyncio.to_thread(open_output, item.path)
            except (OSError, ValueError):
                continue
            name = item.path.name
            mime = guess_mime(name)
            try:
                created = await self.store.files.create(
                    session.workspace_id,
                    filename=clean_filename(name, mime, truncate=True),
                    mime_type=mime,
                    source=handle,
                    files_dir=self.settings.files_dir,
                    downloadable=True,
                    scope_id=session_id,
                )
            finally:
                handle.close()
            index[item.rel] = [item.size, item.mtime_ns, created["id"]]
            await asyncio.to_thread(save_index, index_path, index)
        if found:
            log.info("outputs recorded", extra={"session_id": session_id, "files": len(found)})

    def forget(self, session_id: str) -> None:
        self._mounts.pop(session_id, None)

    # ------------------------------------------------------------------ pieces

    async def _spec(self, session: SessionRecord) -> PackageSpec:
        if "packages" in session.data:
            return PackageSpec.from_config(session.data.get("packages"))
        env = await self.store.environments.get(session.workspace_id, session.environment_id)
        return PackageSpec.from_config(((env or {}).get("config") or {}).get("packages"))

    def _repo_host(self, session_id: str, executor: BwrapExecutor, resource: dict[str, Any]) -> Path:
        mount = str(resource["mount_path"])
        if mount.startswith(WORKSPACE + "/"):
            return executor.workdir / mount[len(WORKSPACE) + 1 :]
        return session_dir(self.settings, session_id) / "repos" / str(resource["id"])

    async def _clone(self, session: SessionRecord, executor: BwrapExecutor, resource: dict[str, Any]) -> None:
        done = session_dir(self.settings, session.id) / "repos.done" / str(resource["id"])
        if done.exists():
            return
        token: str | None = None
        sealed = await self.store.sessions.resource_secret(session.id, str(resource["id"]))
        if sealed:
            try:
                token = str(self.store.vaults.box.open_json(sealed, resource_aad(str(resource["id"]))))
            except (UnsealError, SecretKeyError) as exc:
                log.warning("repository token does not open: %s", exc, extra={"session_id": session.id})
        url = str(resource["url"])
        log.info("cloning repository", extra={"session_id": session.id, "url": url})
        failure = await clone_repository(
            url,
            self._repo_host(session.id, executor, resource),
            token=token,
            checkout=resource.get("checkout"),
            uid=executor.uid if executor.privileged else os.getuid(),
            timeout_s=self.settings.repository_clone_timeout_s,
        )
        if failure is None:
            done.parent.mkdir(parents=True, exist_ok=True)
            done.touch()
            return
        log.warning("repository clone failed", extra={"session_id": session.id, "error": failure.message})
        error = {
            "type": failure.type,
            "message": failure.message,
            "repository_url": url,
            "retry_status": {"type": "retrying"},
        }
        async with self.journal.transaction(session.id, durable=False) as tx:
            thread_id = tx.session.data["primary_thread_id"]
            await tx.append(NewEvent(ev.SESSION_ERROR, {"error": error}, thread_id=thread_id))

    async def _compute(
        self, session: SessionRecord, executor: BwrapExecutor, resources: list[dict[str, Any]]
    ) -> SessionMounts:
        base = session_dir(self.settings, session.id)
        mounts: list[SandboxMount] = []
        env: dict[str, str] = {}
        spec = await self._spec(session)
        layer = self.packages.ready(spec) if spec else None
        if layer is not None:
            mounts.append(SandboxMount(layer, LAYER, read_only=True))
            env = await asyncio.to_thread(layer_env, layer)
        if (base / "uploads").is_dir():
            mounts.append(SandboxMount(base / "uploads", UPLOADS, read_only=True))
        if (base / "outputs").is_dir():
            mounts.append(SandboxMount(base / "outputs", OUTPUTS, read_only=False))
        for resource in resources:
            if resource.get("type") != "github_repository":
                continue
            host = self._repo_host(session.id, executor, resource)
            if not str(resource["mount_path"]).startswith(WORKSPACE + "/") and host.is_dir():
                mounts.append(SandboxMount(host, str(resource["mount_path"]), read_only=False))
        result = SessionMounts(tuple(mounts), tuple(sorted(env.items())))
        self._mounts[session.id] = result
        self._mounts.move_to_end(session.id)
        while len(self._mounts) > MOUNTS_CACHE:
            self._mounts.popitem(last=False)
        return result
