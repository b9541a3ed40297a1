"""`lanewarden doctor` (a real subprocess) on node exporters: one answering with a nearly
full GPU, one unreachable, and a stored reading that shows a model spilling to the CPU."""

from __future__ import annotations

import asyncio
from pathlib import Path

from lanewarden.core.board import NewTask, open_board
from lanewarden.core.clock import utcnow
from lanewarden.core.config import load_config
from lanewarden.core.node_monitor import record_reading
from lanewarden.core.nodes import NodeFigures
from lanewarden.core.schema import runs
from sqlalchemy import insert

from tests.fakes.node_exporter import FakeNodeExporter
from tests.serve_helpers import write_config
from tests.test_doctor import board_sections, closed_port, lines_of, run_doctor


async def test_exporters_vram_and_a_model_on_the_cpu(tmp_path: Path, lw_env: dict[str, str]) -> None:
    exporter = FakeNodeExporter()
    await exporter.start()
    try:
        exporter.vram_used_mib = 14700.0  # of 15109: 97%
        silent = f"http://127.0.0.1:{closed_port()}/metrics"
        config_path = write_config(
            tmp_path / "lanewarden.toml",
            board_sections(
                f"sqlite:///{tmp_path / 'board.db'}",
                {
                    "gpu1": {
                        "base_url": f"http://127.0.0.1:{closed_port()}/v1",
                        "node_metrics": [*exporter.urls, silent],
                    }
                },
            ),
        )
        config = load_config(config_path)[0]
        board = open_board(config)
        task = board.add(NewTask(title="runs", column="backlog"), "test")
        now = utcnow()
        with board.db.write() as conn:  # one request in flight on gpu1
            conn.execute(
                insert(runs).values(
                    task_id=task.id,
                    attempt=1,
                    dispatcher="d",
                    profile="writer",
                    gateway="gpu1",
                    claimed_at=now,
                    lease_expires_at=now,
                )
            )
        record_reading(board.db, config, "gpu1", NodeFigures(gpu_util=4.0, cpu_busy=0.93))
        board.db.dispose()
        code, output = await asyncio.to_thread(run_doctor, config_path, lw_env)
    finally:
        await exporter.stop()
    oks = "\n".join(lines_of(output, "ok", "node gpu1"))
    assert "/dcgm: dcgm, 1 GPU(s)" in oks and "/node: node, load 2.08, RAM 22.5G of 23.5G free" in oks, output
    warnings = "\n".join(lines_of(output, "WARN", "node gpu1"))
    assert f"exporter unreachable: {silent}: ConnectError" in warnings, output
    assert "GPU 0 (Tesla T4): VRAM 97% used (14.4G of 14.8G)" in warnings, output
    assert "CPU 93% busy while the GPU is 4% busy with 1 request(s) in flight" in warnings, output
    assert not lines_of(output, "FAIL", "node gpu1"), output
    assert code == 2, output  # the gateway itself is down: that, not the node, is the failure
