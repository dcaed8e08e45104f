"""Secrets at rest: AES-256-GCM sealing under a key from ``HANGAR_SECRET_KEY`` or a key file.

A sealed secret is one ASCII string::

    hgs1.<key id>.<base64url(nonce ‖ ciphertext ‖ tag)>

- the **key id** (12 hex digits of a SHA-256 of the key) names the key that opens it, so keys
  can be rotated: ``hangar secrets rotate-key`` seals every stored secret again under a new key;
- the **associated data** binds a ciphertext to the row it belongs to (a credential's id):
  copied onto another row, it no longer opens. The header (format and key id) is authenticated
  too.

Where the keys come from (:class:`SecretBox`):

- ``HANGAR_SECRET_KEY`` (base64 of 32 random bytes) seals; ``HANGAR_SECRET_KEY_RETIRED``
  (comma-separated) only opens older secrets, while a rotation is under way;
- unset: the key file ``<data_dir>/secret.key``, created at first use with mode 0600. Hangar
  refuses a key file that group or others can read. The file holds the current key and any
  retired ones (JSON ``{"version": 1, "current": …, "retired": […]}``) and is re-read when it
  changes, so a running server follows a rotation.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import secrets
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hangar.config import Settings

__all__ = [
    "KEY_FILE_NAME",
    "KeyFile",
    "Keyring",
    "SecretBox",
    "SecretKeyError",
    "UnsealError",
    "credential_aad",
    "decode_key",
    "encode_key",
    "generate_key",
    "key_id",
    "sealed_key_id",
]

FORMAT = "hgs1"
KEY_BYTES = 32
NONCE_BYTES = 12
KEY_FILE_NAME = "secret.key"
_KEY_FILE_VERSION = 1


class SecretKeyError(RuntimeError):
    """The key material is missing, malformed or unsafe. The message names the fix."""


class UnsealError(RuntimeError):
    """A sealed secret does not open: unknown key id, tampered with, or moved to another row."""


def generate_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode()


def decode_key(text: str, source: str) -> bytes:
    """A base64 (standard or URL-safe, padding optional) 256-bit key; ``source`` names it in errors."""
    body = text.strip()
    try:
        raw = base64.b64decode(
            body.replace("-", "+").replace("_", "/") + "=" * (-len(body) % 4), validate=True
        )
    except (binascii.Error, ValueError) as exc:
        raise SecretKeyError(
            f"{source} is not valid base64; generate a key with `hangar secrets generate-key`"
        ) from exc
    if len(raw) != KEY_BYTES:
        raise SecretKeyError(
            f"{source} must be the base64 encoding of {KEY_BYTES} random bytes (got {len(raw)} bytes); "
            "generate a key with `hangar secrets generate-key`"
        )
    return raw


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"hangar-secret-key\x00" + key).hexdigest()[:12]


def sealed_key_id(sealed: str) -> str:
    """The id of the key a sealed secret was sealed under."""
    parts = sealed.split(".", 2)
    if len(parts) != 3 or parts[0] != FORMAT:
        raise UnsealError("not a sealed secret")
    return parts[1]


@dataclass(frozen=True)
class Keyring:
    """The current key (seals and opens) and retired keys (open only)."""

    current: bytes
    retired: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        for key in (self.current, *self.retired):
            if len(key) != KEY_BYTES:
                raise SecretKeyError(f"secret keys are {KEY_BYTES} bytes, got {len(key)}")

    @property
    def current_id(self) -> str:
        return key_id(self.current)

    @property
    def ids(self) -> list[str]:
        return [key_id(k) for k in (self.current, *self.retired)]

    def _key(self, kid: str) -> bytes | None:
        for key in (self.current, *self.retired):
            if key_id(key) == kid:
                return key
        return None

    def seal(self, plaintext: bytes, aad: bytes) -> str:
        kid = self.current_id
        header = f"{FORMAT}.{kid}"
        nonce = secrets.token_bytes(NONCE_BYTES)
        body = AESGCM(self.current).encrypt(nonce, plaintext, header.encode() + b"\x00" + aad)
        return f"{header}.{base64.urlsafe_b64encode(nonce + body).decode().rstrip('=')}"

    def open(self, sealed: str, aad: bytes) -> bytes:
        kid = sealed_key_id(sealed)
        key = self._key(kid)
        if key is None:
            raise UnsealError(
                f"secret was sealed under key {kid}, which this keyring does not hold "
                f"(it holds {', '.join(self.ids)})"
            )
        body = sealed.split(".", 2)[2]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (binascii.Error, ValueError) as exc:
            raise UnsealError("sealed secret is not valid base64") from exc
        if len(raw) < NONCE_BYTES + 16:
            raise UnsealError("sealed secret is truncated")
        try:
            return AESGCM(key).decrypt(
                raw[:NONCE_BYTES], raw[NONCE_BYTES:], f"{FORMAT}.{kid}".encode() + b"\x00" + aad
            )
        except InvalidTag as exc:
            raise UnsealError(
                "sealed secret does not open: tampered with, or sealed for another row"
            ) from exc

    def seal_json(self, value: Any, aad: bytes) -> str:
        return self.seal(json.dumps(value, separators=(",", ":")).encode(), aad)

    def open_json(self, sealed: str, aad: bytes) -> Any:
        return json.loads(self.open(sealed, aad))


class KeyFile:
    """The key file: created with mode 0600 at first use, refused when others can read it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def check_mode(self, st: os.stat_result) -> None:
        if not stat.S_ISREG(st.st_mode):
            raise SecretKeyError(f"secret key file {self.path} is not a regular file")
        loose = stat.S_IMODE(st.st_mode) & 0o077
        if loose:
            raise SecretKeyError(
                f"secret key file {self.path} has mode {stat.S_IMODE(st.st_mode):04o}: group or others "
                f"may read it. Refusing to use it; run `chmod 600 {self.path}`"
            )

    def stat(self) -> os.stat_result | None:
        """The file's status (checked for safe permissions), or ``None`` when it does not exist."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        self.check_mode(st)
        return st

    def read(self) -> Keyring:
        st = self.stat()
        if st is None:
            raise SecretKeyError(f"secret key file {self.path} does not exist")
        try:
            data = json.loads(self.path.read_text())
            if not isinstance(data, dict) or data.get("version") != _KEY_FILE_VERSION:
                raise ValueError("unknown version")
            current = decode_key(str(data["current"]), f"{self.path} (current key)")
            retired = tuple(
                decode_key(str(k), f"{self.path} (retired key {i})")
                for i, k in enumerate(data.get("retired", []))
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise SecretKeyError(
                f"secret key file {self.path} is not a Hangar key file ({exc}); restore it from a backup"
            ) from exc
        return Keyring(current, retired)

    def _write_temp(self, keyring: Keyring) -> Path:
        data = {
            "version": _KEY_FILE_VERSION,
            "current": encode_key(keyring.current),
            "retired": [encode_key(k) for k in keyring.retired],
        }
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(6)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            os.write(fd, (json.dumps(data, indent=2) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return tmp

    def _sync_dir(self) -> None:
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def create(self) -> Keyring:
        """Create the file with a fresh key, unless another process got there first (then read it)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._write_temp(Keyring(generate_key()))
        try:
            os.link(tmp, self.path)  # atomic, and refuses to replace an existing file
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        self._sync_dir()
        return self.read()

    def write(self, keyring: Keyring) -> None:
        """Replace the file atomically (used by key rotation)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._write_temp(keyring)
        try:
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        self._sync_dir()


class SecretBox:
    """Seals and opens secrets with the configured keys; owned by the store, one per server.

    With an environment key the keyring is fixed. With the key file, the file is created when
    the first secret is sealed and re-read whenever it changes on disk (a rotation by
    ``hangar secrets rotate-key``), so a running server seals under the newest key.
    """

    def __init__(self, *, fixed: Keyring | None = None, key_file: KeyFile | None = None) -> None:
        if (fixed is None) == (key_file is None):
            raise ValueError("exactly one of fixed / key_file")
        self._fixed = fixed
        self.key_file = key_file
        self._lock = threading.Lock()
        self._cached: tuple[tuple[int, int, int], Keyring] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        """The box the settings describe. Checks the key material now (a malformed
        ``HANGAR_SECRET_KEY``, a key file others can read) and raises :class:`SecretKeyError`."""
        if settings.secret_key is not None and settings.secret_key.get_secret_value().strip():
            current = decode_key(settings.secret_key.get_secret_value(), "HANGAR_SECRET_KEY")
            retired: list[bytes] = []
            raw = settings.secret_key_retired.get_secret_value() if settings.secret_key_retired else ""
            for i, part in enumerate(p for p in raw.split(",") if p.strip()):
                retired.append(decode_key(part, f"HANGAR_SECRET_KEY_RETIRED (entry {i})"))
            return cls(fixed=Keyring(current, tuple(retired)))
        box = cls(key_file=KeyFile(settings.data_dir / KEY_FILE_NAME))
        box.check()
        return box

    @property
    def source(self) -> str:
        return "HANGAR_SECRET_KEY" if self.key_file is None else str(self.key_file.path)

    def check(self) -> None:
        """Raise :class:`SecretKeyError` when an existing key file is unsafe or unreadable."""
        if self.key_file is not None and self.key_file.stat() is not None:
            self.keyring(create=False)

    def keyring(self, *, create: bool = True) -> Keyring:
        """The keyring now; with the key file, creating it first when ``create`` and it is missing."""
        if self._fixed is not None:
            return self._fixed
        assert self.key_file is not None
        with self._lock:
            st = self.key_file.stat()
            if st is None:
                if not create:
                    raise SecretKeyError(f"secret key file {self.key_file.path} does not exist")
                self.key_file.create()
                st = self.key_file.stat()
                assert st is not None
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if self._cached is None or self._cached[0] != stamp:
                self._cached = (stamp, self.key_file.read())
            return self._cached[1]

    def seal_json(self, value: Any, aad: bytes) -> str:
        return self.keyring().seal_json(value, aad)

    def open_json(self, sealed: str, aad: bytes) -> Any:
        return self.keyring(create=False).open_json(sealed, aad)


def credential_aad(credential_id: str) -> bytes:
    """The associated data of a vault credential's sealed secret: its row."""
    return f"vault_credential:{credential_id}".encode()
