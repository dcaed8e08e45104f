"""``hangar.crypto``: AES-GCM sealing bound to a row, key ids, the key file and its permissions,
keys from the environment, and a running box following a rotation of the key file."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest
from pydantic import SecretStr

from hangar.config import Settings
from hangar.crypto import (
    KEY_FILE_NAME,
    KeyFile,
    Keyring,
    SecretBox,
    SecretKeyError,
    UnsealError,
    credential_aad,
    decode_key,
    encode_key,
    generate_key,
    key_id,
    sealed_key_id,
)

AAD = credential_aad("vcrd_one")


def settings(tmp_path: Path, **more: object) -> Settings:
    fields: dict[str, object] = {"secret_key": None, "secret_key_retired": None, **more}
    return Settings(data_dir=tmp_path, **fields)  # type: ignore[arg-type]


def test_seal_and_open_round_trip() -> None:
    ring = Keyring(generate_key())
    sealed = ring.seal_json({"token": "hunter2"}, AAD)
    assert sealed.startswith(f"hgs1.{ring.current_id}.")
    assert "hunter2" not in sealed
    assert ring.open_json(sealed, AAD) == {"token": "hunter2"}
    assert sealed_key_id(sealed) == ring.current_id
    assert ring.seal_json({"token": "hunter2"}, AAD) != sealed, "a fresh nonce every time"


def test_a_ciphertext_is_bound_to_its_row() -> None:
    ring = Keyring(generate_key())
    sealed = ring.seal_json({"token": "a"}, credential_aad("vcrd_a"))
    with pytest.raises(UnsealError, match="another row"):
        ring.open_json(sealed, credential_aad("vcrd_b"))


def test_tampering_is_detected() -> None:
    ring = Keyring(generate_key())
    sealed = ring.seal(b"secret", AAD)
    head, body = sealed.rsplit(".", 1)
    flipped = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    with pytest.raises(UnsealError):
        ring.open(f"{head}.{flipped}", AAD)
    with pytest.raises(UnsealError, match="truncated"):
        ring.open(f"{head}.AAAA", AAD)
    with pytest.raises(UnsealError, match="not a sealed secret"):
        ring.open("plaintext", AAD)
    other = Keyring(generate_key())
    forged = f"hgs1.{other.current_id}.{body}"  # the header is authenticated too
    with pytest.raises(UnsealError):
        Keyring(ring.current, (other.current,)).open(forged, AAD)


def test_key_ids_and_retired_keys() -> None:
    old, new = generate_key(), generate_key()
    sealed = Keyring(old).seal(b"x", AAD)
    with pytest.raises(UnsealError, match=key_id(old)):
        Keyring(new).open(sealed, AAD)
    assert Keyring(new, (old,)).open(sealed, AAD) == b"x"
    assert Keyring(new, (old,)).ids == [key_id(new), key_id(old)]
    assert Keyring(new, (old,)).seal(b"y", AAD).startswith(f"hgs1.{key_id(new)}."), (
        "only the current key seals"
    )
    assert key_id(old) != key_id(new) and len(key_id(old)) == 12


def test_decode_key() -> None:
    key = generate_key()
    assert decode_key(encode_key(key), "k") == key
    urlsafe = encode_key(key).replace("+", "-").replace("/", "_").rstrip("=")
    assert decode_key(urlsafe, "k") == key
    with pytest.raises(SecretKeyError, match="32 random bytes"):
        decode_key(encode_key(b"short"), "HANGAR_SECRET_KEY")
    with pytest.raises(SecretKeyError, match="not valid base64"):
        decode_key("not base64!!", "HANGAR_SECRET_KEY")


def test_key_file_is_created_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        box = SecretBox.from_settings(settings(tmp_path))
        assert not (tmp_path / KEY_FILE_NAME).exists(), "created at first use, not at start"
        sealed = box.seal_json({"v": 1}, AAD)
    finally:
        os.umask(previous)
    path = tmp_path / KEY_FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    assert data["version"] == 1 and data["retired"] == []
    assert sealed_key_id(sealed) == key_id(decode_key(data["current"], "file"))
    assert SecretBox.from_settings(settings(tmp_path)).open_json(sealed, AAD) == {"v": 1}


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_readable_key_file_is_refused(tmp_path: Path, mode: int) -> None:
    KeyFile(tmp_path / KEY_FILE_NAME).create()
    (tmp_path / KEY_FILE_NAME).chmod(mode)
    with pytest.raises(SecretKeyError) as exc:
        SecretBox.from_settings(settings(tmp_path))
    assert f"run `chmod 600 {tmp_path / KEY_FILE_NAME}`" in str(exc.value)


def test_a_corrupt_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE_NAME
    path.write_text("{not json")
    path.chmod(0o600)
    with pytest.raises(SecretKeyError, match="not a Hangar key file"):
        SecretBox.from_settings(settings(tmp_path))


def test_opening_without_a_key_file_says_so(tmp_path: Path) -> None:
    sealed = Keyring(generate_key()).seal_json({}, AAD)
    with pytest.raises(SecretKeyError, match="does not exist"):
        SecretBox.from_settings(settings(tmp_path)).open_json(sealed, AAD)


def test_concurrent_first_use_agrees_on_one_key(tmp_path: Path) -> None:
    rings: list[Keyring] = []

    def first_use() -> None:
        rings.append(KeyFile(tmp_path / KEY_FILE_NAME).create())

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r.current for r in rings}) == 1
    assert [p.name for p in tmp_path.iterdir()] == [KEY_FILE_NAME], "no temporary files left"


def test_environment_keys(tmp_path: Path) -> None:
    current, retired = generate_key(), generate_key()
    box = SecretBox.from_settings(
        settings(
            tmp_path,
            secret_key=SecretStr(encode_key(current)),
            secret_key_retired=SecretStr(f"{encode_key(retired)}, "),
        )
    )
    assert box.key_file is None and box.source == "HANGAR_SECRET_KEY"
    assert box.keyring().current == current and box.keyring().retired == (retired,)
    box.seal_json({"a": 1}, AAD)
    assert not (tmp_path / KEY_FILE_NAME).exists(), "the environment key never writes a key file"
    with pytest.raises(SecretKeyError, match="HANGAR_SECRET_KEY_RETIRED"):
        SecretBox.from_settings(
            settings(tmp_path, secret_key=SecretStr(encode_key(current)), secret_key_retired=SecretStr("bad"))
        )


def test_a_running_box_follows_a_rotated_key_file(tmp_path: Path) -> None:
    box = SecretBox.from_settings(settings(tmp_path))
    before = box.seal_json({"n": 1}, AAD)
    key_file = KeyFile(tmp_path / KEY_FILE_NAME)
    old = key_file.read()
    key_file.write(Keyring(generate_key(), (old.current,)))
    after = box.seal_json({"n": 2}, AAD)
    assert sealed_key_id(after) != sealed_key_id(before), "new secrets use the new key at once"
    assert box.open_json(before, AAD) == {"n": 1}, "the retired key still opens"
    key_file.write(Keyring(key_file.read().current))
    with pytest.raises(UnsealError, match=old.current_id):
        box.open_json(before, AAD)
    assert box.open_json(after, AAD) == {"n": 2}
    assert stat.S_IMODE((tmp_path / KEY_FILE_NAME).stat().st_mode) == 0o600
