"""Provisioning through the whole stack (real server, real bubblewrap, the official client):
packages from a loopback pip index, file resources mounted read-only under
/mnt/session/uploads, outputs reaching the Files API once per version, repositories cloned over
git's smart HTTP on loopback with the token kept outside the sandbox, and the errors of each."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
import sqlalchemy as sa
from anthropic.types.beta import BetaFileMetadata
from anthropic.types.beta.sessions import BetaManagedAgentsGitHubRepositoryResource

from hangar.testing import ServerProcess
from tests.api.test_cli import db_args, hangar
from tests.conftest import API_KEY
from tests.helpers import strict
from tests.local_servers import build_wheel, commit_of, git_http, make_repo, pip_index
from tests.sessions_helpers import user_message, wait_idle

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")

TOOLSET = {"type": "agent_toolset_20260401"}
TOKEN = "tok-" + "s3cret" * 4
WHEEL = build_wheel("hangar-probe", "1.0", "VALUE = 'probe from the local index'\n")


def tool(name: str, **tool_input: Any) -> str:
    return f"[[tool:{name} {json.dumps(tool_input)}]]"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("git")
    bare = make_repo(root)
    with pip_index({"hangar-probe": WHEEL}) as index, git_http(root, TOKEN) as git:
        yield {"index": index, "git": git, "bare": bare}


@pytest.fixture(scope="module")
def client(env: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[anthropic.Anthropic]:
    """One server (SQLite: provisioning does not depend on the database backend) whose pip
    index is the loopback one."""
    proc = ServerProcess(
        tmp_path_factory.mktemp("srv"),
        api_key=API_KEY,
        env={"HANGAR_PIP_INDEX_URL": f"{env['index'].url}/simple/"},
    ).start()
    try:
        with anthropic.Anthropic(base_url=proc.base_url, api_key=API_KEY, max_retries=0) as c:
            yield c
    finally:
        proc.stop()


def bash(
    client: anthropic.Anthropic, session_id: str, command: str, turn: int
) -> tuple[str, bool, list[Any]]:
    client.beta.sessions.events.send(session_id, events=[user_message(tool("bash", command=command))])
    events = wait_idle(client, session_id, turns=turn, timeout=60)
    result = [e for e in events if e.type == "agent.tool_result"][-1]
    return "".join(b.text for b in result.content if b.type == "text"), bool(result.is_error), events


def scoped_files(client: anthropic.Anthropic, session_id: str) -> list[BetaFileMetadata]:
    return [strict(BetaFileMetadata, f) for f in client.beta.files.list(scope_id=session_id, limit=100).data]


def test_packages_uploads_and_outputs(client: anthropic.Anthropic) -> None:
    agent = client.beta.agents.create(name="prov", model="scripted", tools=[TOOLSET])
    environment = client.beta.environments.create(
        name="with-packages", config={"type": "cloud", "packages": {"pip": ["hangar-probe==1.0"]}}
    )
    upload = client.beta.files.upload(file=("data.csv", b"a,b\n1,2\n", "text/csv"))
    s = client.beta.sessions.create(
        agent=agent.id,
        environment_id=environment.id,
        resources=[{"type": "file", "file_id": upload.id, "mount_path": "inputs/data.csv"}],
    )
    command = (
        "python3 -c 'import hangar_probe; print(hangar_probe.VALUE)'; cat /mnt/session/uploads/inputs/data.csv; "
        "(echo x > /mnt/session/uploads/inputs/data.csv) 2>&1 | sed 's/.*: //'; "
        "mkdir -p /mnt/session/outputs/nested && echo report > /mnt/session/outputs/report.txt && "
        "echo deep > /mnt/session/outputs/nested/deep.md && ln -s /etc/passwd /mnt/session/outputs/link"
    )
    text, is_error, _ = bash(client, s.id, command, 1)
    assert not is_error, text
    assert text.splitlines()[:4] == ["probe from the local index", "a,b", "1,2", "Read-only file system"]
    files = scoped_files(client, s.id)
    outputs = {f.filename: f for f in files if f.downloadable}
    assert set(outputs) == {"report.txt", "deep.md"}  # nested files count; the symlink does not
    assert client.beta.files.download(outputs["report.txt"].id).read() == b"report\n"
    assert outputs["deep.md"].scope is not None and outputs["deep.md"].scope.id == s.id
    mounted = [f for f in files if not f.downloadable]
    assert [f.filename for f in mounted] == ["data.csv"]  # the session copy of the upload
    # The write tool reaches the outputs too; unchanged files are not recorded again, a changed
    # one is recorded as a new file (the Files API has no versions).
    client.beta.sessions.events.send(
        s.id, events=[user_message(tool("write", file_path="/mnt/session/outputs/report.txt", content="v2"))]
    )
    events = wait_idle(client, s.id, turns=2, timeout=60)
    assert [e for e in events if e.type == "agent.tool_result"][-1].is_error is False
    reports = [f for f in scoped_files(client, s.id) if f.filename == "report.txt"]
    assert len(reports) == 2 and len([f for f in scoped_files(client, s.id) if f.filename == "deep.md"]) == 1
    newest = max(reports, key=lambda f: f.created_at)
    assert client.beta.files.download(newest.id).read() == b"v2"
    # The read tool sees the read-only upload; the edit tool may not change it.
    client.beta.sessions.events.send(
        s.id,
        events=[
            user_message(
                tool("edit", file_path="/mnt/session/uploads/inputs/data.csv", old_string="a", new_string="z")
            )
        ],
    )
    events = wait_idle(client, s.id, turns=3, timeout=60)
    edit = [e for e in events if e.type == "agent.tool_result"][-1]
    assert edit.is_error and "read-only mount" in edit.content[0].text


def test_a_resource_added_between_turns_is_mounted_for_the_next(client: anthropic.Anthropic) -> None:
    # The loop learns whether a session has resources from the row it locks at the start of a
    # turn; a file added after a turn without any must show up in the next one.
    agent = client.beta.agents.create(name="late", model="scripted", tools=[TOOLSET])
    environment = client.beta.environments.create(name="late-resource", config={"type": "cloud"})
    s = client.beta.sessions.create(agent=agent.id, environment_id=environment.id)
    text, is_error, _ = bash(client, s.id, "test -e /mnt/session/uploads/late.txt && echo yes || echo no", 1)
    assert (text.strip(), is_error) == ("no", False)
    upload = client.beta.files.upload(file=("late.txt", b"added later\n", "text/plain"))
    client.beta.sessions.resources.add(s.id, type="file", file_id=upload.id, mount_path="late.txt")
    text, is_error, _ = bash(client, s.id, "cat /mnt/session/uploads/late.txt", 2)
    assert (text, is_error) == ("added later", False)


def test_package_install_failure_is_a_session_error(client: anthropic.Anthropic) -> None:
    agent = client.beta.agents.create(name="prov-fail", model="scripted", tools=[TOOLSET])
    environment = client.beta.environments.create(
        name="bad-packages", config={"type": "cloud", "packages": {"pip": ["no-such-package-xyz"]}}
    )
    s = client.beta.sessions.create(agent=agent.id, environment_id=environment.id)
    client.beta.sessions.events.send(s.id, events=[user_message(tool("bash", command="echo never"))])
    events = wait_idle(client, s.id, timeout=60)
    errors = [e for e in events if e.type == "session.error"]
    assert len(errors) == 1 and errors[0].error.type == "unknown_error"
    assert errors[0].error.retry_status.type == "exhausted"
    assert errors[0].error.message.startswith(
        "Installing the environment's pip packages (no-such-package-xyz)"
    )
    assert "no-such-package-xyz" in errors[0].error.message.split("Last output:")[1]
    assert not any(e.type == "agent.tool_use" for e in events)
    assert events[-1].stop_reason.type == "retries_exhausted"


def test_repositories_cloned_with_the_token_kept_outside(
    client: anthropic.Anthropic, env: dict[str, Any]
) -> None:
    url = f"{env['git'].url}/repo.git"
    feature = commit_of(env["bare"], "feature")
    agent = client.beta.agents.create(name="prov-git", model="scripted", tools=[TOOLSET])
    environment = client.beta.environments.create(name="git-env")
    s = client.beta.sessions.create(
        agent=agent.id,
        environment_id=environment.id,
        resources=[
            {"type": "github_repository", "url": url, "authorization_token": TOKEN},
            {
                "type": "github_repository",
                "url": url,
                "authorization_token": TOKEN,
                "checkout": {"type": "commit", "sha": feature},
                "mount_path": "/mnt/repos/pinned",
            },
            {
                "type": "github_repository",
                "url": url,
                "authorization_token": "wrong",
                "mount_path": "/workspace/bad",
            },
            {
                "type": "github_repository",
                "url": url,
                "authorization_token": TOKEN,
                "checkout": {"type": "branch", "name": "no-such-branch"},
                "mount_path": "/workspace/nobranch",
            },
        ],
    )
    resources = [strict(BetaManagedAgentsGitHubRepositoryResource, r) for r in s.resources]
    assert resources[0].mount_path == "/workspace/repo" and resources[0].checkout is None
    assert "authorization_token" not in s.model_dump() and TOKEN not in json.dumps(s.model_dump(mode="json"))
    command = (
        "cat /workspace/repo/README /mnt/repos/pinned/README; git -C /workspace/repo remote get-url origin; "
        f"grep -rl {TOKEN} /workspace /mnt/repos 2>/dev/null | wc -l; ls /workspace; "
        "touch /workspace/repo/new && echo writable"
    )
    text, is_error, events = bash(client, s.id, command, 1)
    assert not is_error, text
    lines = text.splitlines()
    assert lines[:4] == ["hello from main", "hello from feature", url, "0"]
    assert "bad" not in lines[4:] and "nobranch" not in lines[4:] and lines[-1] == "writable"
    errors = {e.error.type: e.error for e in events if e.type == "session.error"}
    assert set(errors) == {"repository_authentication_error", "repository_checkout_error"}
    assert all(e.retry_status.type == "retrying" and e.repository_url == url for e in errors.values())
    assert TOKEN not in json.dumps([e.model_dump(mode="json") for e in events if e.type == "session.error"])
    assert events[-1].stop_reason.type == "end_turn"  # the turn went on without those repositories
    # Token rotation: the failed clone is tried again at the next turn, with the new token.
    bad = s.resources[2].id
    rotated = strict(
        BetaManagedAgentsGitHubRepositoryResource,
        client.beta.sessions.resources.update(bad, session_id=s.id, authorization_token=TOKEN),
    )
    assert rotated.id == bad and rotated.updated_at >= rotated.created_at
    text, _, events = bash(client, s.id, "cat /workspace/bad/README", 2)
    assert text.strip() == "hello from main"
    assert [e.error.type for e in events if e.type == "session.error"].count(
        "repository_authentication_error"
    ) == 1


def test_repository_resource_validation(client: anthropic.Anthropic) -> None:
    agent = client.beta.agents.create(name="prov-val", model="scripted")
    environment = client.beta.environments.create(name="val-env")
    cases = [
        (
            {"url": "ftp://127.0.0.1/x.git"},
            "resources[0].url: expected an https:// (or http://) git repository URL",
        ),
        ({"url": "https://u:p@127.0.0.1/x.git"}, "resources[0].url: must not contain credentials"),
        ({"url": "https://h/x.git", "mount_path": "/etc/x"}, "resources[0].mount_path: must be a path under"),
        ({"url": "https://h/x.git", "checkout": {"type": "tag", "name": "v"}}, "resources[0].checkout.type"),
        (
            {"url": "https://h/x.git", "checkout": {"type": "commit", "sha": "zz"}},
            "resources[0].checkout.sha",
        ),
        ({"url": "https://h/x.git", "extra": 1}, "resources[0].extra: unknown field"),
    ]
    for extra, message in cases:
        with pytest.raises(anthropic.BadRequestError) as info:
            client.beta.sessions.create(
                agent=agent.id,
                environment_id=environment.id,
                resources=[{"type": "github_repository", **extra}],
            )
        assert message in str(info.value), (extra, str(info.value))
    with pytest.raises(anthropic.BadRequestError, match="overlaps another resource: /workspace/x"):
        client.beta.sessions.create(
            agent=agent.id,
            environment_id=environment.id,
            resources=[
                {"type": "github_repository", "url": "https://h/x.git"},
                {"type": "github_repository", "url": "https://h/other/x.git"},
            ],
        )
    s = client.beta.sessions.create(
        agent=agent.id,
        environment_id=environment.id,
        resources=[{"type": "github_repository", "url": "https://h/x.git", "authorization_token": "t"}],
    )
    with pytest.raises(anthropic.BadRequestError, match="authorization_token: expected a non-empty string"):
        client.beta.sessions.resources.update(s.resources[0].id, session_id=s.id, authorization_token="")


def test_rotate_key_reseals_repository_tokens(env: dict[str, Any], tmp_path: Path) -> None:
    """`hangar secrets rotate-key` re-encrypts repository tokens too: after it the key file holds
    only the new key, and a clone still gets the token."""
    url = f"{env['git'].url}/repo.git"
    srv = ServerProcess(tmp_path / "srv", api_key=API_KEY).start()
    try:
        with anthropic.Anthropic(base_url=srv.base_url, api_key=API_KEY, max_retries=0) as c:
            agent = c.beta.agents.create(name="prov-rotate", model="scripted", tools=[TOOLSET])
            environment = c.beta.environments.create(name="rotate-env")
            s = c.beta.sessions.create(
                agent=agent.id,
                environment_id=environment.id,
                resources=[{"type": "github_repository", "url": url, "authorization_token": TOKEN}],
            )
            engine = sa.create_engine(f"sqlite:///{srv.data_dir / 'hangar.db'}")
            query = sa.text("SELECT secret FROM session_resources WHERE session_id = :s")
            with engine.connect() as conn:
                [before] = conn.execute(query, {"s": s.id}).scalars().all()
            done = hangar("secrets", "rotate-key", *db_args(srv))
            assert done.returncode == 0, done.stderr
            assert "re-encrypted 1 secret(s)" in done.stdout and "dropped old key(s)" in done.stdout
            with engine.connect() as conn:
                [after] = conn.execute(query, {"s": s.id}).scalars().all()
            engine.dispose()
            assert TOKEN not in after and after.split(".")[1] != before.split(".")[1]  # a new key id
            text, is_error, _ = bash(c, s.id, "cat /workspace/repo/README", 1)
            assert not is_error and text.strip() == "hello from main"
    finally:
        srv.stop()
