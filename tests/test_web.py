"""The web board's handlers through a real aiohttp server: sign-in, sessions, CSRF, every
action by every role, paging, the task page and the live stream."""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import subprocess
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from lanewarden.bot.web import WebBoard, load_secret
from lanewarden.bot.web.security import SECRET_ENV
from lanewarden.core.access import Actor
from lanewarden.core.board import Board, NewTask, open_board
from lanewarden.core.clock import utcnow
from lanewarden.core.config import LanewardenConfig
from lanewarden.core.errors import AccessDenied, ConfigError, Conflict
from lanewarden.core.executor import Executor
from lanewarden.core.grammar import parse
from lanewarden.core.results import WebLinkShown
from lanewarden.core.schema import tasks, web_links
from lanewarden.core.signin import mint_link
from lanewarden.core.wakeup import PostgresListener, SqliteChangeWatcher
from sqlalchemy import func, select, update

from tests.conftest import LANEWARDEN, make_config
from tests.serve_helpers import write_config
from tests.web_helpers import events_by, sign_in, snapshot, start_web

ADMIN = "cli:tester"


@pytest.fixture
def config(board_url: str) -> LanewardenConfig:
    return make_config(board_url, http={"listen": "127.0.0.1:8787"}, web={"public_url": "http://board.test"})


@pytest.fixture
async def web(board: Board) -> AsyncIterator[tuple[WebBoard, TestClient]]:
    web_board, client = await start_web(board)
    yield web_board, client
    await client.close()


def add(board: Board, title: str = "a task", **kw: Any) -> int:
    return board.add(NewTask(title=title, **kw), ADMIN).id


# ------------------------------------------------------------------ sign-in


async def test_anonymous_sees_only_health_metrics_and_sign_in(web: tuple[WebBoard, TestClient], board: Board):
    _, client = web
    task = add(board)
    for path in ("/", f"/tasks/{task}", "/columns/ready", f"/tasks/{task}/cancel"):
        response = await client.get(path, allow_redirects=False)
        assert response.status == 303 and response.headers["Location"] == "/signin", path
    for path in ("/events", "/board/columns"):
        assert (await client.get(path)).status == 401, path
    before = snapshot(board)
    response = await client.post("/act", data={"action": "cancel", "id": task, "confirm": "yes"})
    assert response.status == 401
    assert snapshot(board) == before
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/signin")).status == 401  # the help page, with no board on it
    assert (await client.get("/static/board.js")).status == 200


async def test_link_signs_in_once_and_a_look_does_not_use_it(web: tuple[WebBoard, TestClient], board: Board):
    _, client = web
    link = mint_link(board, actor_id="slack:U1", role="operator", name="ada", created_by=ADMIN, minutes=5)
    for _ in range(2):  # link previews and prefetchers GET it: that must not use it up
        page = await client.get(f"/signin/{link.token}")
        assert page.status == 200 and "Sign in as ada (operator)" in await page.text()
    first = await client.post(f"/signin/{link.token}", allow_redirects=False)
    assert first.status == 303
    cookie = first.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # served over plain http (see the https test below)
    assert (await client.get("/", allow_redirects=False)).status == 200
    client.session.cookie_jar.clear()
    again = await client.post(f"/signin/{link.token}", allow_redirects=False)
    assert again.status == 410 and "Set-Cookie" not in again.headers
    assert (await client.get(f"/signin/{link.token}")).status == 410
    assert (await client.get("/", allow_redirects=False)).status == 303
    assert [k for k, _ in events_by(board, "slack:U1")] == ["web_signin"]


async def test_cookie_is_secure_when_the_board_is_served_over_https(board_url: str) -> None:
    config = make_config(board_url, http={"listen": "127.0.0.1:8787"}, web={"public_url": "https://b.test"})
    board = open_board(config)
    _, client = await start_web(board)
    try:
        link = mint_link(board, actor_id="web:x", role="viewer", name="x", created_by=ADMIN, minutes=5)
        response = await client.post(f"/signin/{link.token}", allow_redirects=False)
        assert "Secure" in response.headers["Set-Cookie"]
    finally:
        await client.close()
        board.db.dispose()


async def test_expired_and_unknown_links_sign_nobody_in(web: tuple[WebBoard, TestClient], board: Board):
    _, client = web
    link = mint_link(board, actor_id="web:old", role="admin", name="old", created_by=ADMIN, minutes=1)
    with board.db.write() as conn:
        conn.execute(update(web_links).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert (await client.post(f"/signin/{link.token}", allow_redirects=False)).status == 410
    assert (await client.post("/signin/not-a-token", allow_redirects=False)).status == 410
    assert (await client.get("/", allow_redirects=False)).status == 303
    with board.db.read() as conn:  # only the hash is stored
        assert conn.execute(select(func.count()).where(web_links.c.token_hash == link.token)).scalar() == 0


async def test_sign_out_ends_the_session_even_for_a_copied_cookie(
    web: tuple[WebBoard, TestClient], board: Board
):
    _, client = web
    user = await sign_in(client, board, "viewer")
    (cookie,) = [c.value for c in client.session.cookie_jar if c.key == "lw_session"]
    refused = await client.post("/signout", data={}, allow_redirects=False)
    assert refused.status == 403  # no CSRF token
    response = await client.post("/signout", data={"csrf": user.csrf}, allow_redirects=False)
    assert response.status == 303 and response.headers["Location"].startswith("/signin")
    assert (await client.get("/", allow_redirects=False)).status == 303
    client.session.cookie_jar.update_cookies({"lw_session": cookie})
    assert (await client.get("/", allow_redirects=False)).status == 303
    tampered = cookie[:-2] + ("A" if cookie[-2] != "A" else "B") + cookie[-1]
    client.session.cookie_jar.update_cookies({"lw_session": tampered})
    assert (await client.get("/", allow_redirects=False)).status == 303


async def test_csrf_and_origin_are_checked_on_every_post(web: tuple[WebBoard, TestClient], board: Board):
    web_board, client = web
    task = add(board)
    user = await sign_in(client, board, "admin")
    before = snapshot(board)
    form = {"action": "cancel", "id": str(task), "confirm": "yes"}
    assert (await client.post("/act", data=form)).status == 403
    assert (await client.post("/act", data={**form, "csrf": "forged"})).status == 403
    other = web_board.signer.csrf_token("another-session")
    assert (await client.post("/act", data={**form, "csrf": other})).status == 403
    evil = {"Origin": "https://evil.example"}
    assert (await client.post("/act", data={**form, "csrf": user.csrf}, headers=evil)).status == 403
    assert snapshot(board) == before
    status, answer = await user.act(**form)
    assert status == 200 and answer == {"ok": True, "message": f"#{task} cancelled"}


# ------------------------------------------------------------------ actions


def _backlog(board: Board) -> dict[str, Any]:
    return {"action": "promote", "id": add(board, column="backlog"), "column": "ready"}


def _linked(board: Board) -> dict[str, Any]:
    parent, child = add(board, "parent"), add(board, "child")
    board.link(parent, child, ADMIN)
    return {"action": "unlink", "parent": parent, "child": child}


def _blocked(board: Board) -> dict[str, Any]:
    task = add(board)
    board.block(task, ADMIN, "held")
    return {"action": "unblock", "id": task}


def _cancelled(board: Board) -> dict[str, Any]:
    task = add(board)
    board.cancel(task, ADMIN)
    return {"action": "retry", "id": task}


def _overridden(board: Board) -> dict[str, Any]:
    board.set_cap("board", None, 9, ADMIN)
    return {"action": "caps-reset", "scope": "board"}


def _paused(board: Board) -> dict[str, Any]:
    board.pause("board", None, ADMIN)
    return {"action": "resume", "scope": "board"}


# (name, the role the grammar asks for, the form for a board in the right state)
ACTION_CASES: list[tuple[str, str, Callable[[Board], dict[str, Any]]]] = [
    ("promote", "operator", _backlog),
    ("release", "operator", lambda b: {"action": "promote", "id": add(b), "column": "active"}),
    ("promote-batch", "operator", lambda b: (add(b), {"action": "promote-batch", "max": 2})[1]),
    ("move", "operator", lambda b: {"action": "move", "id": add(b), "column": "backlog"}),
    ("drop", "operator", lambda b: {"action": "drop", "id": add(b), "from": "ready", "to": "backlog"}),
    ("block", "operator", lambda b: {"action": "block", "id": add(b), "reason": "vendor"}),
    ("unblock", "operator", _blocked),
    ("cancel", "operator", lambda b: {"action": "cancel", "id": add(b), "confirm": "yes", "reason": "dup"}),
    ("retry", "operator", _cancelled),
    ("comment", "operator", lambda b: {"action": "comment", "id": add(b), "text": "logs in /srv"}),
    ("priority", "operator", lambda b: {"action": "priority", "id": add(b), "priority": 7}),
    ("link", "operator", lambda b: {"action": "link", "parent": add(b), "child": add(b)}),
    ("unlink", "operator", _linked),
    ("caps-set", "admin", lambda b: {"action": "caps-set", "scope": "gateway", "name": "gpu", "value": 1}),
    ("caps-reset", "admin", _overridden),
    ("pause", "admin", lambda b: {"action": "pause", "scope": "profile", "name": "researcher"}),
    ("resume", "admin", _paused),
]
RANK = {"viewer": 1, "operator": 2, "admin": 3}


@pytest.mark.parametrize("role", ["viewer", "operator", "admin"])
async def test_every_action_by_every_role(web: tuple[WebBoard, TestClient], board: Board, role: str):
    _, client = web
    user = await sign_in(client, board, role)
    for name, needs, setup in ACTION_CASES:
        form = setup(board)
        before = snapshot(board)
        seen = len(events_by(board, user.actor_id))
        status, answer = await user.act(**form)
        mine = events_by(board, user.actor_id)[seen:]
        if RANK[role] >= RANK[needs]:
            assert status == 200 and answer["ok"], (name, answer)
            changed = snapshot(board) != before or any(k == "commented" for k, _ in mine)
            assert changed, name
            assert ("command", f"web: {mine[0][1].removeprefix('web: ')}") == mine[0], name  # audited
        else:
            assert status == 403, (name, status, answer)
            assert f"needs the {needs} role; you are {role}" in answer["message"]
            assert snapshot(board) == before, name
            assert [k for k, _ in mine] == ["denied"], name


async def test_refusals_are_the_grammars_and_boards_own_words(web: tuple[WebBoard, TestClient], board: Board):
    _, client = web
    user = await sign_in(client, board, "operator")
    task = add(board)
    board.move(task, "done", ADMIN)
    before = snapshot(board)
    status, answer = await user.act(action="drop", id=task, **{"from": "done", "to": "failed"})
    assert (status, answer["message"]) == (400, "--column must be one of backlog, ready, done, got 'failed'")
    status, answer = await user.act(action="drop", id=task, **{"from": "done", "to": "ready"})
    assert (status, answer["message"]) == (409, f"#{task} is done; it can move to nothing: it is final")
    status, answer = await user.act(action="cancel", id=task)  # no confirmation
    assert status == 409 and "confirmation" in answer["message"]
    status, answer = await user.act(action="pause", scope="profile", name="")
    assert status == 400
    status, answer = await user.act(action="nonsense")
    assert (status, answer["message"]) == (400, "the board has no action 'nonsense'")
    assert snapshot(board) == before


async def test_a_form_without_javascript_redirects_back_with_the_answer(
    web: tuple[WebBoard, TestClient], board: Board
):
    _, client = web
    user = await sign_in(client, board, "operator")
    task = add(board)
    form = {
        "csrf": user.csrf,
        "action": "block",
        "id": str(task),
        "reason": "vendor",
        "next": f"/tasks/{task}",
    }
    response = await client.post("/act", data=form, allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == f"/tasks/{task}?notice=%23{task}+blocked"
    escape = {**form, "next": "//evil.example/x"}
    response = await client.post("/act", data=escape, allow_redirects=False)
    assert response.headers["Location"].startswith("/?")


async def test_release_under_a_full_cap_waits_for_a_slot(web: tuple[WebBoard, TestClient], board: Board):
    _, client = web
    user = await sign_in(client, board, "operator")
    board.set_cap("board", None, 0, ADMIN)
    task = add(board, profile="researcher")
    status, answer = await user.act(action="drop", id=task, **{"from": "ready", "to": "active"})
    assert status == 200 and answer["message"] == f"#{task} released: starts when a slot is free"
    got = board.get(task)
    assert (got.status, got.released) == ("ready", True)
    page = await (await client.get(f"/tasks/{task}")).text()
    assert "board cap full (0/0 active)" in page


# ------------------------------------------------------------------ pages


async def test_viewer_sees_no_action_and_operator_no_admin_tools(
    web: tuple[WebBoard, TestClient], board: Board
):
    _, client = web
    task = add(board)
    await sign_in(client, board, "viewer")
    for path in ("/", f"/tasks/{task}"):
        html = await (await client.get(path)).text()
        assert 'action="/act"' not in html and 'data-can-act="no"' in html, path
        assert "Cancel…" not in html
    client.session.cookie_jar.clear()
    await sign_in(client, board, "operator")
    html = await (await client.get("/")).text()
    assert 'value="promote-batch"' in html and 'value="caps-set"' not in html
    assert "Cancel…" in await (await client.get(f"/tasks/{task}")).text()
    client.session.cookie_jar.clear()
    await sign_in(client, board, "admin")
    html = await (await client.get("/")).text()
    assert 'value="caps-set"' in html and 'value="pause"' in html


async def test_columns_are_paged(web: tuple[WebBoard, TestClient], board: Board):
    _, client = web
    await sign_in(client, board, "viewer")
    with board.db.write() as conn:  # 120 ready tasks in one go
        now = utcnow()
        conn.execute(
            tasks.insert(),
            [
                {
                    "title": f"bulk {i}",
                    "profile": "default",
                    "status": "ready",
                    "priority": i % 7,
                    "created_by": ADMIN,
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(120)
            ],
        )
    html = await (await client.get("/")).text()
    ready = html.split('data-column="ready"', 2)[2].split("</ol>")[0]
    assert ready.count('<li class="card') == 50
    assert '<span class="count" data-count="ready">120</span>' in html
    assert "/columns/ready?offset=50" in html and "70 more" in html
    second = await (await client.get("/columns/ready?offset=100&fragment=1")).text()
    assert second.count('<li class="card') == 20
    assert "Next →" not in await (await client.get("/columns/ready?offset=100")).text()
    filtered = await (await client.get("/?q=bulk+11")).text()
    assert '<span class="count" data-count="ready">11</span>' in filtered  # bulk 11, bulk 110-119


async def test_task_page_shows_what_show_prints(web: tuple[WebBoard, TestClient], board: Board):
    _, client = web
    await sign_in(client, board, "viewer")
    parent = add(board, "fetch the logs", column="backlog")
    child = add(board, "summarize <the> logs", parents=(parent,), body="use the April ones")
    board.comment(child, "they are in /srv/logs", ADMIN)
    html = await (await client.get(f"/tasks/{child}")).text()
    assert f'<a href="/tasks/{parent}">#{parent}</a>' in html
    assert f"parent #{parent} is backlog, not done" in html
    assert "summarize &lt;the&gt; logs" in html and "<the>" not in html  # escaped
    assert "use the April ones" in html and "they are in /srv/logs" in html
    assert (await client.get("/tasks/99999")).status == 404


# ------------------------------------------------------------------ live stream


async def _next_event(response: Any, kind: str, timeout: float = 10.0) -> Any:
    async def read() -> Any:
        current = None
        while True:
            line = (await response.content.readline()).decode().rstrip("\n")
            if line.startswith("event: "):
                current = line[7:]
            elif line.startswith("data: ") and current == kind:
                data = line[6:]
                return json.loads(data) if data.startswith("{") else data

    return await asyncio.wait_for(read(), timeout)


async def test_live_stream_sends_the_cards_that_changed(web: tuple[WebBoard, TestClient], board: Board):
    _, client = web
    await sign_in(client, board, "viewer")
    html = await (await client.get("/")).text()
    cursor = html.split('data-cursor="', 1)[1].split('"', 1)[0]
    stream = await client.get(f"/events?since={cursor}")
    assert stream.headers["Content-Type"] == "text/event-stream"
    await _next_event(stream, "strip")  # the hub has read the board: changes from here on are news
    task = add(board, "a live one", priority=3)
    payload = await _next_event(stream, "cards")
    (card,) = [c for c in payload["cards"] if c["id"] == task]
    assert card["column"] == "ready" and "a live one" in card["html"]
    assert payload["counts"]["ready"] == 1
    board.cancel(task, ADMIN)
    payload = await _next_event(stream, "cards")
    assert [(c["id"], c["column"]) for c in payload["cards"]] == [(task, None)]
    assert payload["counts"]["ready"] == 0
    stream.close()


async def test_live_stream_follows_a_change_made_by_another_process(
    web: tuple[WebBoard, TestClient], board: Board, board_url: str, tmp_path: Path, lw_env: dict[str, str]
):
    """A comment changes nothing the dispatcher cares about; the page must still hear of it,
    through the same cross-process wake-ups serve wires (NOTIFY on PostgreSQL, the
    data_version watcher on SQLite)."""
    web_board, client = web
    if board.db.is_postgres:
        listener = PostgresListener(board_url, web_board.hub.wake)
        watching = asyncio.create_task(listener.run())
        await asyncio.wait_for(listener.connected.wait(), 10)
        stop = watching.cancel
    else:
        watcher = SqliteChangeWatcher(board_url, web_board.hub.wake)
        watcher.start()
        stop = watcher.stop
    try:
        task = add(board, "commented elsewhere")
        await sign_in(client, board, "viewer")
        html = await (await client.get("/")).text()
        cursor = html.split('data-cursor="', 1)[1].split('"', 1)[0]
        stream = await client.get(f"/events?since={cursor}")
        await _next_event(stream, "strip")
        path = write_config(tmp_path / "lanewarden.toml", {"board": {"url": board_url}})
        done = await asyncio.to_thread(
            subprocess.run,
            [*LANEWARDEN, "--config", str(path), "comment", str(task), "from", "a", "shell"],
            env=lw_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        payload = await _next_event(stream, "cards", timeout=20)
        assert [c["id"] for c in payload["cards"]] == [task]
        stream.close()
    finally:
        stop()


async def test_a_stream_that_missed_changes_is_told_to_resync(web: tuple[WebBoard, TestClient], board: Board):
    _, client = web
    await sign_in(client, board, "viewer")
    stream = await client.get("/events?since=0")
    add(board)  # an event id above 0
    assert "cursor" in await _next_event(stream, "resync")
    stream.close()


# ------------------------------------------------------------------ the `web` verb and the CLI


def test_web_verb_mints_a_link_for_the_caller_with_their_role(board: Board) -> None:
    executor = Executor(board)
    result = executor.execute(parse("/kanban web"), Actor(id="slack:U7", role="operator", name="kim"))
    assert isinstance(result, WebLinkShown)
    assert result.url.startswith("http://board.test/signin/") and result.role == "operator"
    with pytest.raises(AccessDenied):
        executor.execute(parse("web"), Actor(id="slack:U8", role="none"))
    with board.db.read() as conn:
        assert conn.execute(select(func.count()).select_from(web_links)).scalar() == 1


def test_web_verb_refuses_when_the_page_is_off(board_url: str) -> None:
    board = open_board(make_config(board_url))  # [http] listen unset
    try:
        with pytest.raises(Conflict, match="web board is off"):
            Executor(board).execute(parse("web"), Actor(id="cli:x", role="admin"))
    finally:
        board.db.dispose()


@pytest.mark.parametrize("board_url", ["sqlite"], indirect=True)
def test_cli_mints_links(tmp_path: Path, lw_env: dict[str, str], board_url: str) -> None:
    path = write_config(
        tmp_path / "lanewarden.toml",
        {"board": {"url": board_url}, "http": {"listen": "127.0.0.1:8899"}},
    )
    run = subprocess.run(
        [*LANEWARDEN, "--config", str(path), "web", "link", "--user", "bob", "--role", "viewer"],
        env=lw_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("http://127.0.0.1:8899/signin/") and "web:bob as viewer" in run.stderr
    bad = subprocess.run(
        [*LANEWARDEN, "--config", str(path), "web", "link", "--user", "bob", "--role", "root"],
        env=lw_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    mine = subprocess.run(
        [*LANEWARDEN, "--config", str(path), "web"], env=lw_env, capture_output=True, text=True, timeout=60
    )
    assert mine.returncode == 0 and "http://127.0.0.1:8899/signin/" in mine.stdout


# ------------------------------------------------------------------ the signing secret


def test_secret_is_generated_private_and_kept(tmp_path: Path) -> None:
    first = load_secret(env={}, home=tmp_path)
    path = tmp_path / "web-secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_secret(env={}, home=tmp_path) == first
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_secret(env={}, home=tmp_path)
    assert load_secret(env={SECRET_ENV: "x" * 40}, home=tmp_path) == b"x" * 40
    with pytest.raises(ConfigError, match="at least 32"):
        load_secret(env={SECRET_ENV: "short"}, home=tmp_path)


async def test_the_strip_ages_gateway_readings_and_greys_a_stale_one(
    web: tuple[WebBoard, TestClient], board: Board
) -> None:
    from lanewarden.core.gateway_state import record_health
    from lanewarden.core.gateways import GatewayHealth

    _, client = web
    await sign_in(client, board, "viewer")
    assert "never probed" in await (await client.get("/")).text()
    record_health(board.db, GatewayHealth("gpu", True, "ok"), utcnow() - timedelta(hours=1))
    html = await (await client.get("/")).text()
    assert 'class="tile health-up stale"' in html and "stale, checked 1h ago" in html
    record_health(board.db, GatewayHealth("gpu", True, "ok"))
    html = await (await client.get("/")).text()
    assert 'class="tile health-up"' in html and re.search(r"checked \d+s ago", html)
