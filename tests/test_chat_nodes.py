"""Node health where chat users look: Slack's App Home and Discord's status reply."""

from __future__ import annotations

from pathlib import Path

from lanewarden.bot.discord_app.replies import reply_for
from lanewarden.bot.slack_app.blocks import home_view
from lanewarden.core.board import open_board
from lanewarden.core.executor import Executor
from lanewarden.core.grammar import parse
from lanewarden.core.node_monitor import record_reading
from lanewarden.core.nodes import NodeFigures
from lanewarden.core.status import build_status

from tests.conftest import ADMIN, make_config


def test_home_and_discord_status_show_the_node(tmp_path: Path) -> None:
    config = make_config(
        f"sqlite:///{tmp_path / 'board.db'}",
        gateways={"gpu1": {"base_url": "http://127.0.0.1:9/v1", "node_metrics": ["http://127.0.0.1:9/m"]}},
        profiles={"default": {"runner": "noop"}},
    )
    board = open_board(config)
    figures = NodeFigures(gpu_util=42.0, vram_used_bytes=6 * 2**30, vram_total_bytes=24 * 2**30)
    record_reading(board.db, config, "gpu1", figures)
    home = home_view([], build_status(board.db, config))
    texts = [e["text"] for b in home["blocks"] if b["type"] == "context" for e in b["elements"]]
    assert any("node gpu1: GPU 42% busy, VRAM 6.0G/24.0G (25%)" in t for t in texts), texts
    reply = reply_for(Executor(board).execute(parse("status"), ADMIN))
    shown = reply.content + "".join(data.decode() for _, data in reply.attachments)
    assert "node gpu1: GPU 42% busy" in shown
    board.db.dispose()
