"""``hangar secrets generate-key | rotate-key``: the key that encrypts stored secrets.

Vault credential secrets and tunnel tokens are sealed with AES-256-GCM (``hangar.crypto``) under the key from
``HANGAR_SECRET_KEY`` or, when that is unset, the key file ``<data_dir>/secret.key`` (mode
0600). Each sealed secret names the id of its key, so a rotation can find and re-encrypt every
secret still under an older one.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Annotated

import sqlalchemy as sa
import typer

from hangar.cli.common import DatabaseUrl, DataDir, console, fail, load_settings
from hangar.cli.database import SchemaNotReady, display_url, prepare_database
from hangar.config import Settings
from hangar.crypto import Keyring, SecretBox, SecretKeyError, UnsealError, encode_key, generate_key, key_id
from hangar.store import Store, open_database
from hangar.store.vaults import ResealReport

secrets_app = typer.Typer(no_args_is_help=True, help="Manage the key that encrypts stored secrets.")


def check_secret_key(settings: Settings) -> None:
    """For ``hangar serve``: refuse to start on a malformed ``HANGAR_SECRET_KEY`` or on a key
    file that group or others can read, with the fix in the message."""
    try:
        SecretBox.from_settings(settings)
    except SecretKeyError as exc:
        raise fail(f"refusing to start: {exc}") from exc


@secrets_app.command("generate-key")
def generate_key_cmd() -> None:
    """Print a new random key (base64 of 32 bytes) on stdout, for HANGAR_SECRET_KEY."""
    print(encode_key(generate_key()), flush=True)


async def _reseal(settings: Settings, box: SecretBox) -> ResealReport:
    db = open_database(settings.resolved_database_url, settings.durability)
    try:
        store = Store.open(db, box)
        # Tunnel and repository tokens are sealed with the same key as vault secrets.
        first = await store.vaults.reseal_all()
        tokens = await store.tunnels.reseal_all() + await store.sessions.reseal_resource_secrets(box)
        # A server may have sealed a secret under the old key while the first pass ran.
        second = await store.vaults.reseal_all()
        tokens += await store.tunnels.reseal_all() + await store.sessions.reseal_resource_secrets(box)
        by_key = (
            Counter(second.by_key)
            + Counter(await store.tunnels.secret_key_ids())
            + Counter(await store.sessions.resource_secret_key_ids())
        )
        return ResealReport(first.resealed + second.resealed + tokens, dict(by_key))
    finally:
        await db.close()


async def _stored_key_ids(settings: Settings) -> dict[str, int]:
    db = open_database(settings.resolved_database_url, settings.durability)
    try:
        store = Store.open(db)
        return dict(
            Counter(await store.vaults.secret_key_ids())
            + Counter(await store.tunnels.secret_key_ids())
            + Counter(await store.sessions.resource_secret_key_ids())
        )
    finally:
        await db.close()


def _run_reseal(settings: Settings, box: SecretBox) -> ResealReport:
    try:
        return asyncio.run(_reseal(settings, box))
    except (UnsealError, SecretKeyError) as exc:
        raise fail(f"re-encryption stopped: {exc}; no key was dropped") from exc


@secrets_app.command("rotate-key")
def rotate_key(
    keep_old_key: Annotated[
        bool,
        typer.Option("--keep-old-key", help="Keep the replaced key in the key file (decrypt-only)."),
    ] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Re-encrypt every stored secret under a new key.

    With the key file (HANGAR_SECRET_KEY unset): writes a new key to <data_dir>/secret.key,
    keeping the old one as a decrypt-only key, re-encrypts every stored secret under the new
    key, then drops the old key (unless --keep-old-key, or a secret still needs it). A running
    server picks the new key up by itself.

    With HANGAR_SECRET_KEY: put the old key in HANGAR_SECRET_KEY_RETIRED and a new one
    (`hangar secrets generate-key`) in HANGAR_SECRET_KEY, run this command with that
    environment, restart the server with it, then remove HANGAR_SECRET_KEY_RETIRED.
    """
    settings = load_settings(data_dir=data_dir, database_url=database_url)
    try:
        box = SecretBox.from_settings(settings)
        prepare_database(settings)
    except SecretKeyError as exc:
        raise fail(str(exc)) from exc
    except SchemaNotReady as exc:
        raise fail(str(exc)) from exc
    except sa.exc.DBAPIError as exc:
        raise fail(f"cannot reach {display_url(settings.resolved_database_url)}: {exc.orig}") from exc

    if box.key_file is None:
        ring = box.keyring()
        report = _run_reseal(settings, box)
        print(f"re-encrypted {report.resealed} secret(s) under HANGAR_SECRET_KEY (key {ring.current_id})")
        unused = [key_id(k) for k in ring.retired if report.by_key.get(key_id(k), 0) == 0]
        if unused:
            print(f"no stored secret needs retired key(s) {', '.join(unused)} any more: ", end="")
            print("remove them from HANGAR_SECRET_KEY_RETIRED")
        if not ring.retired and report.resealed == 0:
            console.print(
                "every secret is already under HANGAR_SECRET_KEY. To rotate: move it to "
                "HANGAR_SECRET_KEY_RETIRED, set a new HANGAR_SECRET_KEY and run this again."
            )
        return

    key_file = box.key_file
    if key_file.stat() is None:
        stored = asyncio.run(_stored_key_ids(settings))
        if stored:
            raise fail(
                f"the database holds secrets under key(s) {', '.join(sorted(stored))} but the key file "
                f"{key_file.path} does not exist: restore it from a backup"
            )
        created = key_file.create()
        print(f"created key {created.current_id} in {key_file.path} (there were no secrets to re-encrypt)")
        return
    old = key_file.read()
    new = Keyring(generate_key(), (old.current, *old.retired))
    key_file.write(new)  # first: the new key seals, the old ones still open
    report = _run_reseal(settings, box)
    needed = tuple(k for k in new.retired if keep_old_key or report.by_key.get(key_id(k), 0) > 0)
    key_file.write(Keyring(new.current, needed))
    print(f"new key {new.current_id} in {key_file.path}; re-encrypted {report.resealed} secret(s)")
    dropped = [key_id(k) for k in new.retired if k not in needed]
    if dropped:
        print(f"dropped old key(s) {', '.join(dropped)}")
    for k in needed:
        count = report.by_key.get(key_id(k), 0)
        why = f"{count} secret(s) still need it; run rotate-key again" if count else "--keep-old-key"
        print(f"kept old key {key_id(k)} (decrypt-only): {why}")
