"""Self-hosted environments: built-in tool calls are left to the customer's worker and answered
with `user.tool_result`, here by the official SDK's SessionToolRunner and agent toolset."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import anthropic
from anthropic.lib.tools.agent_toolset import AgentToolContext, beta_agent_toolset_20260401

from tests.conftest import API_KEY


def test_worker_answers_builtin_tools(server: Any, tmp_path: Path) -> None:
    workdir = tmp_path / "worker"
    workdir.mkdir()

    async def run() -> list[Any]:
        async with anthropic.AsyncAnthropic(
            base_url=server.base_url, api_key=API_KEY, max_retries=0
        ) as client:
            env = await client.beta.environments.create(name="self-hosted", config={"type": "self_hosted"})
            toolset = {
                "type": "agent_toolset_20260401",
                "configs": [{"name": "write", "permission_policy": {"type": "always_ask"}}],
            }
            agent = await client.beta.agents.create(name="sh-agent", model="scripted", tools=[toolset])
            s = await client.beta.sessions.create(agent=agent.id, environment_id=env.id)
            tools = beta_agent_toolset_20260401(AgentToolContext(workdir=workdir))
            prompt = (
                f"[[tool:bash {json.dumps({'command': 'echo from-the-worker > out.txt && cat out.txt'})}]] "
                f"[[tool:write {json.dumps({'file_path': 'w.txt', 'content': 'confirmed'})}]]"
            )
            await client.beta.sessions.events.send(
                s.id, events=[{"type": "user.message", "content": [{"type": "text", "text": prompt}]}]
            )

            async def confirm() -> None:
                # The app backend confirms the held write once the session asks for it.
                async with asyncio.timeout(20):
                    while True:
                        page = await client.beta.sessions.events.list(s.id)
                        held = [
                            e
                            for e in page.data
                            if e.type == "agent.tool_use" and e.evaluated_permission == "ask"
                        ]
                        if held:
                            await client.beta.sessions.events.send(
                                s.id,
                                events=[
                                    {
                                        "type": "user.tool_confirmation",
                                        "tool_use_id": held[0].id,
                                        "result": "allow",
                                    }
                                ],
                            )
                            return
                        await asyncio.sleep(0.05)

            confirmer = asyncio.create_task(confirm())
            async with asyncio.timeout(40):
                async for _call in client.beta.sessions.events.tool_runner(s.id, tools=tools, max_idle=1.0):
                    pass
            await confirmer
            return [e async for e in client.beta.sessions.events.list(s.id)]

    history = asyncio.run(run())
    kinds = [e.type for e in history]
    assert "agent.tool_result" not in kinds  # the server ran nothing itself
    results = [e for e in history if e.type == "user.tool_result"]
    assert len(results) == 2
    assert (workdir / "out.txt").read_text().strip() == "from-the-worker"
    assert (workdir / "w.txt").read_text() == "confirmed"
    idles = [e for e in history if e.type == "session.status_idle"]
    assert idles[0].stop_reason.type == "requires_action"
    assert idles[-1].stop_reason.type == "end_turn"
    assert "from-the-worker" in [e for e in history if e.type == "agent.message"][-1].content[0].text
