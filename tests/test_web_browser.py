"""The web board in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

One ``lanewarden serve`` process serves the board; the CLI and the test change the
board from other processes, as people and scripts do. Set LANEWARDEN_WRITE_SCREENSHOTS=1
to refresh docs/web-board.png and docs/web-task.png from this run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from lanewarden.bot.tools.demo import free_port
from lanewarden.core.board import Board, NewTask, open_board
from lanewarden.core.config import load_config

from tests.conftest import IN_CI, LANEWARDEN
from tests.serve_helpers import ROOT, ServeProcess, clean_env, wait_until, write_config

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
SEED = "cli:seed"
DOCS = ROOT / "docs"
WAIT_MS = 15_000  # what a live change may take on a busy CI machine; the page is told within a second


def _require_browser() -> Any:
    problem = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        problem = "playwright is not installed (pip install -e '.[dev]')"
    if problem is None and not Path(CHROMIUM).exists():
        problem = f"{CHROMIUM} is missing (apt-get install -y chromium)"
    if problem:
        if IN_CI:
            pytest.fail(f"CI=true but the browser tests cannot run: {problem}")
        pytest.skip(problem)
    return sync_playwright


@dataclass
class Site:
    url: str
    config: Path
    env: dict[str, str]
    board: Board
    serve: ServeProcess
    ids: dict[str, int]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*LANEWARDEN, "--config", str(self.config), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def link(self, user: str, role: str) -> str:
        made = self.cli("web", "link", "--user", user, "--role", role)
        assert made.returncode == 0, made.stderr
        return made.stdout.strip()


def _seed(board: Board) -> dict[str, int]:
    def add(title: str, **kw: Any) -> int:
        return board.add(NewTask(title=title, **kw), SEED).id

    ids = {
        "slow_a": add("Re-index the support archive", profile="slow", priority=5),
        "slow_b": add("Rebuild the search embeddings", profile="slow", priority=4),
        "cancel_me": add("Draft the release notes", profile="writer", priority=1),
    }
    board.promote(ids["slow_a"], "active", SEED)  # takes the slow profile's only slot
    for i, title in enumerate(
        ("Summarize the April incident reports", "Translate the FAQ into French", "Tag last week's tickets")
    ):
        board.promote(add(title, profile="writer", priority=3 - i), "active", SEED)
    parent = add("Collect the Q3 usage figures", profile="writer", column="backlog", priority=2)
    add("Write the Q3 usage report", profile="writer", parents=(parent,))
    add("Check the new onboarding flow", profile="writer", column="backlog")
    add("Review the vendor contract", profile="writer", column="backlog", priority=-1)
    held = add("Email the partner list", profile="writer")
    board.block(held, SEED, "waiting for legal")
    ids["flaky"] = add("Validate the exported schema", profile="flaky", max_attempts=1)
    board.promote(ids["flaky"], "active", SEED)
    for title in ("Classify incoming feedback", "Draft the weekly digest", "Outline the Q4 roadmap"):
        add(title, profile="writer")
    return ids


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("web")
    env = clean_env(tmp / "home")
    sim_port, http_port = free_port(), free_port()
    simulator = subprocess.Popen(
        [
            *LANEWARDEN,
            "simulate-gateway",
            "--port",
            str(sim_port),
            "--token-ms",
            "4",
            "--output-tokens",
            "20-80",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    python = sys.executable
    config = write_config(
        tmp / "lanewarden.toml",
        {
            "board": {"url": f"sqlite:///{tmp / 'board.db'}"},
            # windowed: nothing starts unless released, so the page decides what runs
            "kanban.dispatcher": {
                "enabled": False,
                "max_active_tasks": 6,
                "poll_interval_seconds": 1,
                "drain_timeout_seconds": 1,
            },
            "kanban.workers": {"profile": "writer"},
            "gateways.sim": {
                "base_url": f"http://127.0.0.1:{sim_port}/v1",
                "kind": "vllm",
                "max_concurrency": 2,
                "probe_interval_seconds": 1,
            },
            "profiles.writer": {"gateway": "sim", "model": "sim-7b", "max_tokens": 80},
            "profiles.slow": {
                "runner": "command",
                "command": [python, "-c", "import time; time.sleep(600)"],
                "max_parallel": 1,
            },
            "profiles.flaky": {"runner": "command", "command": [python, "-c", "raise SystemExit(3)"]},
            "http": {"listen": f"127.0.0.1:{http_port}"},
            "scheduler": {"enabled": False},
        },
    )
    board = open_board(load_config(config)[0])
    ids = _seed(board)
    serve = ServeProcess(config, env, tmp / "serve.log")
    url = f"http://127.0.0.1:{http_port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(healthy, 60, "serve to answer /healthz", [serve])
        wait_until(lambda: board.get(ids["slow_a"]).status == "active", 60, "the slow task to start", [serve])
        wait_until(lambda: board.get(ids["flaky"]).status == "failed", 60, "the flaky task to fail", [serve])
        yield Site(url, config, {**env, "LANEWARDEN_CONFIG": str(config)}, board, serve, ids)
    finally:
        serve.terminate()
        simulator.terminate()
        simulator.wait(10)
        board.db.dispose()


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[Any]:
    sync_playwright = _require_browser()
    with sync_playwright() as playwright:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []  # root in CI containers
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        yield launched
        launched.close()


def _signed_in(browser: Any, site: Site, user: str, role: str, **context: Any) -> Any:
    page = browser.new_context(**context).new_page()
    page.set_default_timeout(WAIT_MS)
    link = site.link(user, role)
    page.goto(link)
    page.get_by_role("button", name=f"Sign in as {user} ({role})").click()
    page.wait_for_url(site.url + "/")
    page.used_link = link  # type: ignore[attr-defined]
    return page


def _card_in(page: Any, column: str, task_id: int) -> Any:
    return page.locator(f'ol.cards[data-column="{column}"] #card-{task_id}')


def test_sign_in_by_link_and_see_the_columns(browser: Any, site: Site) -> None:
    page = _signed_in(browser, site, "ada", "operator", viewport={"width": 1600, "height": 1000})
    headings = page.locator("section.column h2").all_inner_texts()
    assert [h.split()[0] for h in headings] == [
        "Backlog",
        "Ready",
        "Waiting",
        "Released",
        "Active",
        "Blocked",
        "Failed",
        "Done",
    ]
    assert _card_in(page, "failed", site.ids["flaky"]).is_visible()
    assert _card_in(page, "active", site.ids["slow_a"]).is_visible()
    page.wait_for_selector("body[data-live=on]")
    # the link is used up: following it again, in another browser, signs nobody in
    again = browser.new_context().new_page()
    assert again.goto(page.used_link).status == 410
    assert again.goto(site.url + "/").url == site.url + "/signin"
    if os.environ.get("LANEWARDEN_WRITE_SCREENSHOTS"):
        page.wait_for_selector("#strip .spark", timeout=60_000)
        page.screenshot(path=str(DOCS / "web-board.png"))


def test_drag_to_active_under_a_full_cap_waits_for_a_slot(browser: Any, site: Site) -> None:
    page = _signed_in(browser, site, "ada", "operator")
    slow_b = site.ids["slow_b"]
    page.wait_for_selector("body[data-live=on]")
    page.drag_and_drop(f"#card-{slow_b}", 'section.column[data-column="active"]')
    page.locator("#toast").get_by_text(f"#{slow_b} released: starts when a slot is free").wait_for()
    _card_in(page, "released", slow_b).wait_for()  # moved by the live stream, no reload
    task = site.board.get(slow_b)
    assert (task.status, task.released) == ("ready", True)
    page.goto(f"{site.url}/tasks/{slow_b}")
    assert page.get_by_text("profile slow cap full (1/1)").is_visible()
    # a move the rules do not allow is refused in the grammar's own words
    page.goto(site.url + "/")
    page.wait_for_selector("body[data-live=on]")
    flaky = site.ids["flaky"]
    page.drag_and_drop(f"#card-{site.ids['cancel_me']}", 'section.column[data-column="failed"]')
    page.locator("#toast .error").get_by_text("--column must be one of backlog, ready, done").wait_for()
    assert _card_in(page, "failed", flaky).is_visible()


def test_a_card_moves_live_when_the_cli_finishes_a_task(browser: Any, site: Site) -> None:
    page = _signed_in(browser, site, "ada", "operator")
    slow_a, slow_b = site.ids["slow_a"], site.ids["slow_b"]
    page.wait_for_selector("body[data-live=on]")
    assert _card_in(page, "active", slow_a).is_visible()
    moved = site.cli("move", str(slow_a), "done")  # another process, through the same grammar
    assert moved.returncode == 0, moved.stderr
    _card_in(page, "done", slow_a).wait_for()
    # the slot it freed goes to the released task, and the page follows that too
    _card_in(page, "active", slow_b).wait_for()


def test_cancel_asks_for_confirmation(browser: Any, site: Site) -> None:
    page = _signed_in(browser, site, "ada", "operator")
    task = site.ids["cancel_me"]
    page.goto(f"{site.url}/tasks/{task}")
    page.get_by_role("link", name="Cancel…").click()
    page.get_by_role("link", name="Keep it").click()
    assert site.board.get(task).status == "ready"
    page.get_by_role("link", name="Cancel…").click()
    page.get_by_label("Reason (optional)").fill("written by hand instead")
    page.get_by_role("button", name="Cancel task").click()
    page.get_by_text(f"#{task} cancelled").first.wait_for()
    assert site.board.get(task).status == "cancelled"
    assert page.locator(".status").inner_text() == "cancelled"
    history = page.locator(".history").inner_text()
    assert "web:ada" in history and "written by hand instead" in history


def test_a_viewer_sees_no_action_button(browser: Any, site: Site) -> None:
    page = _signed_in(browser, site, "val", "viewer")
    assert page.locator("ol.cards .card").count() > 5
    assert page.locator('form[action="/act"]').count() == 0
    assert page.locator('.card[draggable="true"]').count() == 0
    page.goto(f"{site.url}/tasks/{site.ids['flaky']}")
    assert page.locator("section.actions").count() == 0
    assert page.locator("form button").all_inner_texts() == ["Sign out"]


def test_task_page_and_phone_layout(browser: Any, site: Site) -> None:
    page = _signed_in(browser, site, "ada", "operator", viewport={"width": 1280, "height": 900})
    done = page.locator('ol.cards[data-column="done"] .card[data-profile="writer"] a').first
    done.wait_for(timeout=60_000)  # a writer task finished on the simulated gateway
    done.click()
    page.wait_for_selector("#task-view")
    assert page.get_by_role("heading", name="Runs").is_visible()
    assert page.locator("table tbody tr").count() >= 1
    if os.environ.get("LANEWARDEN_WRITE_SCREENSHOTS"):
        page.screenshot(path=str(DOCS / "web-task.png"), full_page=True)
    phone = _signed_in(
        browser, site, "ada", "operator", viewport={"width": 390, "height": 844}, is_mobile=True
    )
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390  # the page itself never scrolls sideways; the columns do, inside it
    if os.environ.get("LANEWARDEN_WRITE_SCREENSHOTS"):
        phone.screenshot(path=str(DOCS / "web-phone.png"))
