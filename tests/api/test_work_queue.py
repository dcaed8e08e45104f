"""The self-hosted work queue (``client.beta.environments.work``): every endpoint's success and
error paths, the credentials each accepts, leases and their lapse, and the sessions token."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx
import pytest
from anthropic.types.beta import BetaEnvironment, BetaManagedAgentsSession
from anthropic.types.beta.environments import (
    BetaHeartbeatPreconditionFailedError,
    BetaHeartbeatPreconditionFailedErrorDetails,
    BetaSelfHostedWork,
    BetaSelfHostedWorkHeartbeatResponse,
    BetaSelfHostedWorkListResponse,
    BetaSelfHostedWorkQueueStats,
)

from hangar.config import Settings
from hangar.store import Store, open_database
from hangar.testing import ServerProcess
from tests.conftest import API_KEY
from tests.helpers import strict

NO_HEARTBEAT = "NO_HEARTBEAT"


def environment_key(server: ServerProcess, environment_id: str) -> str:
    """An environment key in the server's database, as ``hangar keys create --environment`` makes
    one (that command is tested in ``test_cli``; here it would cost a process start per test)."""
    settings = Settings(data_dir=server.data_dir, database_url=server.database_url)

    async def create() -> str:
        db = open_database(settings.resolved_database_url)
        try:
            keys = Store.open(db).keys
            workspace = await keys.environment_workspace(environment_id)
            assert workspace is not None
            plaintext, _ = await keys.create(
                "worker", workspace_id=workspace, kind="environment", environment_id=environment_id
            )
            return plaintext
        finally:
            await db.close()

    return asyncio.run(create())


def sessions_token(item: BetaSelfHostedWork) -> str:
    assert item.secret
    raw = base64.urlsafe_b64decode(item.secret + "=" * (-len(item.secret) % 4))
    payload = json.loads(raw)
    assert isinstance(payload, dict) and isinstance(payload["sessions_token"], str)
    return str(payload["sessions_token"])


def work(item: Any) -> BetaSelfHostedWork:
    return strict(BetaSelfHostedWork, item)  # type: ignore[no-any-return]


def beat(item: Any) -> BetaSelfHostedWorkHeartbeatResponse:
    return strict(BetaSelfHostedWorkHeartbeatResponse, item)  # type: ignore[no-any-return]


@dataclass
class Queue:
    server: ServerProcess
    api: anthropic.Anthropic  # API key
    ek: anthropic.Anthropic  # environment key
    env_id: str
    agent_id: str

    @property
    def w(self) -> Any:
        return self.ek.beta.environments.work

    def session(self) -> str:
        s = strict(
            BetaManagedAgentsSession,
            self.api.beta.sessions.create(agent=self.agent_id, environment_id=self.env_id),
        )
        return str(s.id)

    def poll(self, **kw: Any) -> BetaSelfHostedWork | None:
        found = self.w.poll(self.env_id, **kw)
        return None if found is None else work(found)

    def claimed(self) -> tuple[BetaSelfHostedWork, anthropic.Anthropic]:
        """Poll and ack one item; the item and a client holding its sessions token."""
        item = self.poll()
        assert item is not None
        acked = work(self.w.ack(item.id, environment_id=self.env_id))
        assert acked.state == "starting"
        return item, self.token_client(sessions_token(item))

    def token_client(self, token: str) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.server.base_url, api_key=token, max_retries=0)


def make_queue(server: ServerProcess, api: anthropic.Anthropic, name: str) -> Queue:
    env = strict(BetaEnvironment, api.beta.environments.create(name=name, config={"type": "self_hosted"}))
    agent = api.beta.agents.create(name=f"{name}-agent", model="scripted")
    ek = anthropic.Anthropic(base_url=server.base_url, api_key=environment_key(server, env.id), max_retries=0)
    return Queue(server, api, ek, env.id, agent.id)


@pytest.fixture
def queue(
    server: ServerProcess, client: anthropic.Anthropic, request: pytest.FixtureRequest
) -> Iterator[Queue]:
    q = make_queue(server, client, request.node.name[:60])
    try:
        yield q
    finally:
        q.ek.close()


# --- poll ------------------------------------------------------------------------------------


def test_session_create_queues_work_and_poll_hands_it_out(queue: Queue) -> None:
    empty = queue.w.with_raw_response.poll(queue.env_id)
    assert empty.status_code == 200 and empty.http_response.text == "null"
    assert empty.parse() is None

    sid = queue.session()
    item = queue.poll(anthropic_worker_id="host-a-0123456789ab")
    assert item is not None
    assert item.id.startswith("work_") and item.type == "work"
    assert item.environment_id == queue.env_id and item.state == "queued"
    assert item.data.type == "session" and item.data.id == sid
    assert item.metadata == {} and item.created_at.endswith("Z")
    assert item.acknowledged_at is None and item.started_at is None and item.stopped_at is None
    token = sessions_token(item)
    assert "=" not in item.secret  # type: ignore[operator]

    # Handed out and not acked: pending, not handed out again within the reclaim window.
    assert queue.poll() is None
    stats = strict(BetaSelfHostedWorkQueueStats, queue.api.beta.environments.work.stats(queue.env_id))
    assert (stats.depth, stats.pending, stats.workers_polling) == (0, 1, 1)
    assert stats.oldest_queued_at == item.created_at

    # GET (API key) never shows the secret; the list (environment key) neither.
    got = work(queue.api.beta.environments.work.retrieve(item.id, environment_id=queue.env_id))
    assert got.secret is None and got.id == item.id
    listed = strict(
        BetaSelfHostedWorkListResponse, queue.w.with_raw_response.list(queue.env_id).parse().to_dict()
    )
    assert [w.id for w in listed.data] == [item.id] and listed.data[0].secret is None
    assert listed.next_page is None

    # The token reads the session.
    with queue.token_client(token) as it:
        s = strict(BetaManagedAgentsSession, it.beta.sessions.retrieve(sid))
        assert s.id == sid


def test_poll_parameters(queue: Queue) -> None:
    for bad in (0, 1000, -1):
        with pytest.raises(anthropic.BadRequestError, match="block_ms"):
            queue.w.poll(queue.env_id, block_ms=bad)
    with pytest.raises(anthropic.BadRequestError, match="reclaim_older_than_ms"):
        queue.w.poll(queue.env_id, reclaim_older_than_ms=-5)
    r = httpx.get(
        f"{queue.server.base_url}/v1/environments/{queue.env_id}/work/poll?block_ms=soon",
        headers={"authorization": f"Bearer {queue.ek.api_key}"},
    )
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(anthropic.BadRequestError, match="Anthropic-Worker-ID"):
        queue.w.poll(queue.env_id, anthropic_worker_id="x" * 300)

    # Omitted block_ms: non-blocking. A blocking poll on an empty queue waits out block_ms.
    t0 = time.monotonic()
    assert queue.w.poll(queue.env_id) is None
    assert time.monotonic() - t0 < 0.9
    t0 = time.monotonic()
    assert queue.w.poll(queue.env_id, block_ms=400) is None
    assert 0.35 <= time.monotonic() - t0 < 2.0


def test_blocking_poll_returns_when_work_arrives(queue: Queue) -> None:
    got: list[Any] = []

    def poller() -> None:
        t0 = time.monotonic()
        got.append(queue.w.poll(queue.env_id, block_ms=999))
        got.append(time.monotonic() - t0)

    th = threading.Thread(target=poller)
    th.start()
    time.sleep(0.2)
    sid = queue.session()
    th.join(10)
    item, waited = got
    # Not the deadline's empty answer: the poll woke with the new item inside its block.
    assert item is not None and work(item).data.id == sid
    assert waited < 2.0


def test_unacked_items_are_reclaimed(queue: Queue) -> None:
    sid = queue.session()
    first = queue.poll()
    assert first is not None and queue.poll() is None
    # reclaim_older_than_ms=0: an unacked item is claimable again at once, with a new token.
    again = queue.poll(reclaim_older_than_ms=0)
    assert again is not None and again.id == first.id
    assert sessions_token(again) != sessions_token(first)
    with queue.token_client(sessions_token(first)) as old, pytest.raises(anthropic.AuthenticationError):
        old.beta.sessions.retrieve(sid)
    with queue.token_client(sessions_token(again)) as new:
        assert new.beta.sessions.retrieve(sid).id == sid
    # The default window (5 s) has not passed.
    assert queue.poll() is None


def test_concurrent_polls_claim_each_item_once(queue: Queue) -> None:
    sids = {queue.session() for _ in range(4)}
    results: list[Any] = []
    lock = threading.Lock()

    def poller() -> None:
        with anthropic.Anthropic(
            base_url=queue.server.base_url, api_key=queue.ek.api_key, max_retries=0
        ) as c:
            found = c.beta.environments.work.poll(queue.env_id)
        with lock:
            results.append(found)

    threads = [threading.Thread(target=poller) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    claimed = [work(r) for r in results if r is not None]
    assert len(results) == 10 and len(claimed) == 4
    assert {c.data.id for c in claimed} == sids
    assert len({c.id for c in claimed}) == 4


# --- ack, heartbeat, leases ------------------------------------------------------------------


def test_ack_and_heartbeat_lease(queue: Queue) -> None:
    queue.session()
    item = queue.poll()
    assert item is not None
    acked = work(queue.w.ack(item.id, environment_id=queue.env_id))
    assert acked.state == "starting" and acked.acknowledged_at is not None and acked.secret is None
    with pytest.raises(anthropic.ConflictError, match="state is starting") as conflict:
        queue.w.ack(item.id, environment_id=queue.env_id)
    assert conflict.value.response.headers["x-should-retry"] == "false"
    stats = strict(BetaSelfHostedWorkQueueStats, queue.api.beta.environments.work.stats(queue.env_id))
    assert (stats.depth, stats.pending, stats.oldest_queued_at) == (0, 0, None)

    with queue.token_client(sessions_token(item)) as it:
        tw = it.beta.environments.work
        first = beat(tw.heartbeat(item.id, environment_id=queue.env_id, expected_last_heartbeat=NO_HEARTBEAT))
        assert first.type == "work_heartbeat" and first.state == "active" and first.lease_extended
        assert first.ttl_seconds == 90 and first.last_heartbeat.endswith("Z")

        # A wrong echo, or NO_HEARTBEAT once there is one: 412 with the server's view.
        for wrong in ("2020-01-01T00:00:00.000000Z", NO_HEARTBEAT):
            with pytest.raises(BetaHeartbeatPreconditionFailedError) as lost:
                tw.heartbeat(item.id, environment_id=queue.env_id, expected_last_heartbeat=wrong)
            assert lost.value.status_code == 412
            body = lost.value.body
            assert isinstance(body, dict) and body["error"]["type"] == "invalid_request_error"
            details = strict(BetaHeartbeatPreconditionFailedErrorDetails, body["error"]["details"])
            assert details.error_code == "heartbeat_precondition_failed"
            assert details.current_state.state == "active"
            assert details.current_state.last_heartbeat == first.last_heartbeat
            assert details.current_state.ttl_seconds == 90
            assert details.current_state.lease_extended is False

        second = beat(
            tw.heartbeat(item.id, environment_id=queue.env_id, expected_last_heartbeat=first.last_heartbeat)
        )
        assert second.lease_extended and second.last_heartbeat > first.last_heartbeat
        longer = beat(
            tw.heartbeat(
                item.id,
                environment_id=queue.env_id,
                expected_last_heartbeat=second.last_heartbeat,
                desired_ttl_seconds=120,
            )
        )
        assert longer.ttl_seconds == 120
        for bad_ttl in (0, 3601):
            with pytest.raises(anthropic.BadRequestError, match="desired_ttl_seconds"):
                tw.heartbeat(item.id, environment_id=queue.env_id, desired_ttl_seconds=bad_ttl)

    # The environment key may heartbeat too (the precondition applies the same way).
    by_key = beat(
        queue.w.heartbeat(item.id, environment_id=queue.env_id, expected_last_heartbeat=longer.last_heartbeat)
    )
    assert by_key.state == "active" and by_key.ttl_seconds == 120

    got = work(queue.api.beta.environments.work.retrieve(item.id, environment_id=queue.env_id))
    assert got.state == "active" and got.started_at == first.last_heartbeat
    assert got.latest_heartbeat_at == by_key.last_heartbeat


def test_ack_requires_a_poll_and_a_queued_item(queue: Queue) -> None:
    queue.session()
    listed = queue.w.list(queue.env_id)
    [item] = [work(w) for w in listed.data]
    with pytest.raises(anthropic.ConflictError, match="before a poll"):
        queue.w.ack(item.id, environment_id=queue.env_id)
    # A heartbeat before the ack finds no lease: 412 with state queued.
    with pytest.raises(BetaHeartbeatPreconditionFailedError) as lost:
        queue.w.heartbeat(item.id, environment_id=queue.env_id, expected_last_heartbeat=NO_HEARTBEAT)
    details = strict(BetaHeartbeatPreconditionFailedErrorDetails, lost.value.body["error"]["details"])  # type: ignore[index]
    assert details.current_state.state == "queued" and details.current_state.last_heartbeat is None
    with pytest.raises(anthropic.NotFoundError, match="Work work_nope not found"):
        queue.w.ack("work_nope", environment_id=queue.env_id)


def test_lapsed_lease_goes_back_to_the_queue(queue: Queue) -> None:
    sid = queue.session()
    item, it = queue.claimed()
    with it:
        hb = beat(
            it.beta.environments.work.heartbeat(
                item.id,
                environment_id=queue.env_id,
                expected_last_heartbeat=NO_HEARTBEAT,
                desired_ttl_seconds=1,
            )
        )
        assert hb.ttl_seconds == 1 and hb.state == "active"
        assert queue.poll() is None  # held
        time.sleep(1.3)
        # The lease lapsed: another worker takes the same item; the old token is revoked.
        again = queue.poll()
        assert again is not None and again.id == item.id and again.state == "queued"
        assert again.acknowledged_at is None and again.latest_heartbeat_at == hb.last_heartbeat
        with pytest.raises(anthropic.AuthenticationError):
            it.beta.sessions.retrieve(sid)
    queue.w.ack(again.id, environment_id=queue.env_id)
    with queue.token_client(sessions_token(again)) as it2:
        fresh = beat(
            it2.beta.environments.work.heartbeat(
                item.id, environment_id=queue.env_id, expected_last_heartbeat=NO_HEARTBEAT
            )
        )
        assert fresh.state == "active" and fresh.ttl_seconds == 1  # the item keeps the TTL it was given


# --- stop ------------------------------------------------------------------------------------


def test_stop_paths(queue: Queue) -> None:
    # A queued item stops at once, even without force.
    queue.session()
    queued = work(queue.w.list(queue.env_id).data[0])
    stopped = work(queue.api.beta.environments.work.stop(queued.id, environment_id=queue.env_id))
    assert (
        stopped.state == "stopped"
        and stopped.stopped_at is not None
        and stopped.stop_requested_at is not None
    )
    with pytest.raises(anthropic.ConflictError, match="already stopped") as again:
        queue.api.beta.environments.work.stop(queued.id, environment_id=queue.env_id, force=True)
    assert again.value.response.headers["x-should-retry"] == "false"

    # A held item: an API key's graceful stop asks the worker to drain.
    sid = queue.session()
    item, it = queue.claimed()
    with it:
        tw = it.beta.environments.work
        hb = beat(tw.heartbeat(item.id, environment_id=queue.env_id, expected_last_heartbeat=NO_HEARTBEAT))
        draining = work(queue.api.beta.environments.work.stop(item.id, environment_id=queue.env_id))
        assert draining.state == "stopping" and draining.stop_requested_at is not None
        assert draining.stopped_at is None
        # Not compared while stopping: any echo gets the state, and no extension.
        seen = beat(tw.heartbeat(item.id, environment_id=queue.env_id, expected_last_heartbeat="whatever"))
        assert seen.state == "stopping" and seen.lease_extended is False
        assert seen.last_heartbeat == hb.last_heartbeat
        repeat = work(queue.api.beta.environments.work.stop(item.id, environment_id=queue.env_id))
        assert repeat.state == "stopping" and repeat.stop_requested_at == draining.stop_requested_at
        # The worker (its sessions token) stops it: stopped, and the token is revoked.
        final = work(tw.stop(item.id, environment_id=queue.env_id, force=True))
        assert final.state == "stopped" and final.stop_requested_at == draining.stop_requested_at
        with pytest.raises(anthropic.AuthenticationError):
            it.beta.sessions.retrieve(sid)
    with pytest.raises(anthropic.ConflictError):
        queue.w.stop(item.id, environment_id=queue.env_id, force=True)
    after = beat(
        queue.w.heartbeat(item.id, environment_id=queue.env_id, expected_last_heartbeat=NO_HEARTBEAT)
    )
    assert after.state == "stopped" and after.lease_extended is False

    # The environment key's stop without force (the SDK poller's `{}`) ends its item at once.
    queue.session()
    third, it3 = queue.claimed()
    it3.close()
    raw = queue.w.with_raw_response.stop(third.id, environment_id=queue.env_id)
    assert json.loads(raw.http_request.content or b"{}") == {}
    assert work(raw.parse()).state == "stopped"

    with pytest.raises(anthropic.BadRequestError, match="force"):
        queue.w.stop(third.id, environment_id=queue.env_id, extra_body={"force": "yes"})


def test_stopped_and_dormant_sessions_get_a_new_item(queue: Queue) -> None:
    sid = queue.session()
    item, it = queue.claimed()
    it.close()
    queue.w.stop(item.id, environment_id=queue.env_id, force=True)
    # An interrupt alone wakes nothing.
    queue.api.beta.sessions.events.send(sid, events=[{"type": "user.interrupt"}])
    assert [w.id for w in queue.w.list(queue.env_id).data] == [item.id]
    # A message to the dormant session queues a new item; a second message does not add one.
    for text in ("hello", "again"):
        queue.api.beta.sessions.events.send(
            sid, events=[{"type": "user.message", "content": [{"type": "text", "text": text}]}]
        )
    items = [work(w) for w in queue.w.list(queue.env_id).data]
    assert len(items) == 2 and items[0].id != item.id
    assert (items[0].state, items[0].data.id) == ("queued", sid)
    assert items[1].state == "stopped"


# --- get, update, list, stats ----------------------------------------------------------------


def test_update_metadata(queue: Queue) -> None:
    queue.session()
    item = work(queue.w.list(queue.env_id).data[0])
    wk = queue.api.beta.environments.work
    up = work(wk.update(item.id, environment_id=queue.env_id, metadata={"host": "box-1", "pool": "a"}))
    assert up.metadata == {"host": "box-1", "pool": "a"}
    up = work(wk.update(item.id, environment_id=queue.env_id, metadata={"pool": None, "zone": "eu"}))
    assert up.metadata == {"host": "box-1", "zone": "eu"}
    assert work(wk.retrieve(item.id, environment_id=queue.env_id)).metadata == up.metadata

    with pytest.raises(anthropic.BadRequestError) as bad:
        wk.update(item.id, environment_id=queue.env_id, metadata={"k": "v" * 513})
    assert bad.value.body["error"]["details"]["error_code"] == "invalid_metadata"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError, match="metadata"):
        wk.update(item.id, environment_id=queue.env_id, metadata={"k": 5})  # type: ignore[dict-item]
    r = httpx.post(
        f"{queue.server.base_url}/v1/environments/{queue.env_id}/work/{item.id}",
        headers={"authorization": f"Bearer {API_KEY}"},
        json={},
    )
    assert r.status_code == 400 and r.json()["error"]["message"] == "metadata: field required"
    with pytest.raises(anthropic.BadRequestError, match="extra: unknown field"):
        wk.update(item.id, environment_id=queue.env_id, metadata={}, extra_body={"extra": 1})
    assert work(wk.retrieve(item.id, environment_id=queue.env_id)).metadata == up.metadata
    with pytest.raises(anthropic.NotFoundError):
        wk.update("work_nope", environment_id=queue.env_id, metadata={})
    with pytest.raises(anthropic.NotFoundError):
        wk.retrieve("work_nope", environment_id=queue.env_id)


def test_list_pages_newest_first(queue: Queue) -> None:
    sids = [queue.session() for _ in range(3)]
    page = queue.w.list(queue.env_id, limit=2)
    first = strict(
        BetaSelfHostedWorkListResponse,
        {"data": [w.to_dict() for w in page.data], "next_page": page.next_page},
    )
    assert [w.data.id for w in first.data] == sids[::-1][:2] and first.next_page
    rest = queue.w.list(queue.env_id, limit=2, page=first.next_page)
    assert [w.data.id for w in rest.data] == sids[:1] and rest.next_page is None
    assert [w.data.id for w in queue.w.list(queue.env_id, limit=1)] == sids[::-1]  # auto-paging
    with pytest.raises(anthropic.BadRequestError, match="limit"):
        queue.w.list(queue.env_id, limit=101)
    with pytest.raises(anthropic.BadRequestError, match="invalid page cursor"):
        queue.w.list(queue.env_id, page="garbage")


def test_stats_counts(queue: Queue) -> None:
    wk = queue.api.beta.environments.work
    empty = strict(BetaSelfHostedWorkQueueStats, wk.stats(queue.env_id))
    assert empty.type == "work_queue_stats"
    assert (empty.depth, empty.pending, empty.oldest_queued_at, empty.workers_polling) == (0, 0, None, 0)

    sids = [queue.session() for _ in range(3)]
    oldest = work(queue.w.list(queue.env_id).data[-1])
    assert oldest.data.id == sids[0]
    queue.poll(anthropic_worker_id="worker-a")  # one handed out (pending)
    queue.poll(anthropic_worker_id="worker-b")  # another
    queue.w.ack(oldest.id, environment_id=queue.env_id)  # the oldest leaves the queue
    queue.w.poll(queue.env_id, anthropic_worker_id="worker-b")
    queue.w.poll(queue.env_id)  # no worker id: not counted
    stats = strict(BetaSelfHostedWorkQueueStats, wk.stats(queue.env_id))
    assert (stats.depth, stats.pending, stats.workers_polling) == (0, 2, 2)
    second = work(queue.w.list(queue.env_id).data[1])
    assert stats.oldest_queued_at == second.created_at
    # The environment key may read the stats too.
    by_key = strict(BetaSelfHostedWorkQueueStats, queue.w.stats(queue.env_id))
    assert by_key.pending == 2


# --- credentials -----------------------------------------------------------------------------


def test_credentials_per_endpoint(queue: Queue, server: ServerProcess, client: anthropic.Anthropic) -> None:
    sid = queue.session()
    other_sid = queue.session()
    item, it = queue.claimed()
    env = queue.env_id
    api_w = queue.api.beta.environments.work
    it_w = it.beta.environments.work
    denied = anthropic.PermissionDeniedError
    with it:
        # poll, ack, list: the environment key only.
        for w in (api_w, it_w):
            with pytest.raises(denied):
                w.poll(env)
            with pytest.raises(denied):
                w.ack(item.id, environment_id=env)
            with pytest.raises(denied):
                w.list(env)
        # get, update: an API key only.
        for w in (queue.w, it_w):
            with pytest.raises(denied):
                w.retrieve(item.id, environment_id=env)
            with pytest.raises(denied):
                w.update(item.id, environment_id=env, metadata={})
        # stats: not the sessions token. heartbeat: not an API key.
        with pytest.raises(denied):
            it_w.stats(env)
        with pytest.raises(denied, match="does not accept an API key"):
            api_w.heartbeat(item.id, environment_id=env, expected_last_heartbeat=NO_HEARTBEAT)

        # The sessions token reaches its own session and item, nothing else.
        assert it.beta.sessions.retrieve(sid).id == sid
        assert it.beta.sessions.events.list(sid).data is not None
        with pytest.raises(denied):
            it.beta.sessions.retrieve(other_sid)
        with pytest.raises(denied):
            it.beta.sessions.list()
        with pytest.raises(denied):
            it.beta.agents.create(name="nope", model="scripted")
        with pytest.raises(denied):
            it.beta.environments.retrieve(env)
        with pytest.raises(denied):
            it.beta.sessions.archive(sid)
        other_item = next(w for w in queue.w.list(env).data if w.data.id == other_sid)
        with pytest.raises(denied):
            it_w.heartbeat(other_item.id, environment_id=env, expected_last_heartbeat=NO_HEARTBEAT)
        with pytest.raises(denied):
            it_w.stop(other_item.id, environment_id=env)
        assert beat(
            it_w.heartbeat(item.id, environment_id=env, expected_last_heartbeat=NO_HEARTBEAT)
        ).lease_extended

    # An environment key is bound to its environment.
    other = make_queue(server, client, "credentials-other")
    with other.ek:
        with pytest.raises(denied, match="belongs to environment"):
            other.w.poll(env)
        with pytest.raises(denied, match="belongs to environment"):
            other.w.heartbeat(item.id, environment_id=env)
    # No key, or a wrong one: 401.
    for headers in ({}, {"authorization": "Bearer sk-hangar-work-forged"}, {"authorization": "Bearer nope"}):
        r = httpx.get(f"{server.base_url}/v1/environments/{env}/work/poll", headers=headers)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"


def test_unknown_and_cloud_environments(queue: Queue, client: anthropic.Anthropic) -> None:
    wk = client.beta.environments.work
    with pytest.raises(anthropic.NotFoundError, match="Environment env_nope not found"):
        wk.stats("env_nope")
    cloud = client.beta.environments.create(name="cloud-no-queue")
    with pytest.raises(anthropic.BadRequestError, match="not self-hosted"):
        wk.stats(cloud.id)
    with pytest.raises(anthropic.NotFoundError, match="Work work_nope not found"):
        wk.retrieve("work_nope", environment_id=queue.env_id)
    # A session on a cloud environment queues nothing.
    agent = client.beta.agents.create(name="cloud-agent", model="scripted")
    client.beta.sessions.create(agent=agent.id, environment_id=cloud.id)
    assert queue.w.list(queue.env_id).data == []
