"""Docs that cannot go stale: the generated configuration reference, CLI help for every option,
and the quickstart, whose script is run against a real server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import typer

from hangar.cli import app
from hangar.cli.reference import config_reference
from hangar.config import Settings
from hangar.testing import ServerProcess
from tests.conftest import API_KEY

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_every_setting_has_a_description() -> None:
    missing = [name for name, field in Settings.model_fields.items() if not (field.description or "").strip()]
    assert missing == [], f"Settings fields without a description: {missing}"


def test_configuration_doc_is_current() -> None:
    assert DOC.read_text() == config_reference(app), (
        "docs/configuration.md is stale: run `hangar config-reference > docs/configuration.md`"
    )


def test_reference_names_every_setting_and_its_env_var() -> None:
    text = config_reference(app)
    for name in Settings.model_fields:
        assert f"| `{name}` | `HANGAR_{name.upper()}`" in text
    [data_dir_row] = [line for line in text.splitlines() if line.startswith("| `data_dir` |")]
    assert all(cmd in data_dir_row for cmd in ("`--data-dir` (", "doctor", "keys", "migrate", "serve"))


def walk(command: Any, path: str = "hangar") -> list[tuple[str, Any]]:
    subcommands = getattr(command, "commands", None)
    if subcommands is None:
        return [(path, command)]
    found = [(path, command)]
    for name, sub in subcommands.items():
        found += walk(sub, f"{path} {name}")
    return found


def test_every_command_and_option_has_help() -> None:
    undocumented = []
    for path, command in walk(typer.main.get_command(app)):
        if not (command.help or "").strip():
            undocumented.append(path)
        for param in command.params:
            documented = (getattr(param, "help", None) or "").strip()
            if param.param_type_name in ("option", "argument") and param.name != "help" and not documented:
                undocumented.append(f"{path} {param.name}")
    assert undocumented == []


QUICKSTART = DOC.parent / "quickstart.md"


def fenced(text: str, lang: str) -> list[str]:
    """The bodies of the fenced code blocks of a language (``""`` for unlabelled blocks)."""
    blocks: list[tuple[str, list[str]]] = []
    current: list[str] | None = None
    for line in text.splitlines(keepends=True):
        if line.startswith("```"):
            if current is None:
                current = []
                blocks.append((line[3:].strip(), current))
            else:
                current = None
        elif current is not None:
            current.append(line)
    return ["".join(body) for label, body in blocks if label == lang]


def test_quickstart_runs_as_documented(server: ServerProcess, tmp_path: Path) -> None:
    """The quickstart's script, run against a real server, prints exactly what the page shows."""
    text = QUICKSTART.read_text()
    [script] = fenced(text, "python")
    expected = next(block for block in fenced(text, "") if block.startswith("user.message"))
    assert 'base_url="http://127.0.0.1:8400"' in script
    path = tmp_path / "quickstart.py"
    path.write_text(script.replace("http://127.0.0.1:8400", server.base_url))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HANGAR_", "ANTHROPIC_"))}
    done = subprocess.run(
        [sys.executable, str(path)],
        env={**env, "HANGAR_KEY": API_KEY},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected
