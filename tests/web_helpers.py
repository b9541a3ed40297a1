"""The web board behind a real aiohttp server on loopback, and a signed-in client for it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from lanewarden.bot.http.server import HttpEndpoint
from lanewarden.bot.web import WebBoard
from lanewarden.core.board import Board
from lanewarden.core.schema import cap_overrides, events, pauses, task_links, tasks
from lanewarden.core.signin import mint_link
from sqlalchemy import select

SECRET = b"a test secret that is long enough for the signer"
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


@dataclass
class WebUserClient:
    client: TestClient
    csrf: str
    actor_id: str

    async def act(self, **fields: Any) -> tuple[int, dict[str, Any]]:
        data = {"csrf": self.csrf, **{k: str(v) for k, v in fields.items()}}
        response = await self.client.post("/act", data=data, headers={"Accept": "application/json"})
        return response.status, await response.json()


async def start_web(board: Board) -> tuple[WebBoard, TestClient]:
    endpoint = HttpEndpoint("127.0.0.1:0", board.db)
    web_board = WebBoard(board, secret=SECRET)
    web_board.install(endpoint.app)
    client = TestClient(TestServer(endpoint.app, host="127.0.0.1"))
    await client.start_server()
    return web_board, client


async def sign_in(client: TestClient, board: Board, role: str, user: str | None = None) -> WebUserClient:
    name = user or f"{role}-user"
    link = mint_link(board, actor_id=f"web:{name}", role=role, name=name, created_by="cli:tester", minutes=5)
    response = await client.post(f"/signin/{link.token}", allow_redirects=False)
    assert response.status == 303, await response.text()
    page = await client.get("/")
    assert page.status == 200
    match = CSRF_META.search(await page.text())
    assert match is not None
    return WebUserClient(client, match.group(1), f"web:{name}")


def snapshot(board: Board) -> dict[str, Any]:
    """Everything an action could change (events aside)."""
    with board.db.read() as conn:
        return {
            "tasks": [tuple(r) for r in conn.execute(select(tasks).order_by(tasks.c.id))],
            "links": sorted(
                tuple(r) for r in conn.execute(select(task_links.c.parent_id, task_links.c.child_id))
            ),
            "caps": sorted(
                tuple(r)
                for r in conn.execute(
                    select(cap_overrides.c.scope, cap_overrides.c.name, cap_overrides.c.value)
                )
            ),
            "pauses": sorted(tuple(r) for r in conn.execute(select(pauses.c.scope, pauses.c.name))),
        }


def events_by(board: Board, actor: str) -> list[tuple[str, str]]:
    with board.db.read() as conn:
        rows = conn.execute(select(events.c.kind, events.c.message).where(events.c.actor == actor))
        return [tuple(r) for r in rows]
