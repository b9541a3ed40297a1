"""Agent process identity (core/processes.py) on real processes: a leftover group is killed,
a number reused by someone else is left alone, another host is not ours to judge."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lanewarden.core.processes import ProcessIdentity, identify, leftover_gone

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process identity")


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def _session_with_a_child() -> tuple[subprocess.Popen[bytes], int]:
    """A session leader (as agents are) that started a background child, like `tool &`."""
    leader = subprocess.Popen(
        ["sh", "-c", "sleep 120 & echo $!; wait"], stdout=subprocess.PIPE, start_new_session=True
    )
    assert leader.stdout is not None
    child = int(leader.stdout.readline())
    return leader, child


def test_a_leftover_group_is_killed_and_then_known_gone() -> None:
    leader, child = _session_with_a_child()
    identity = identify(leader.pid)
    assert identity is not None and identity.process_group == leader.pid
    assert leftover_gone(identity) is True
    leader.wait(10)
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child) and not _alive(leader.pid)
    assert leftover_gone(identity) is True  # nothing left: gone at once


def test_a_reused_number_is_left_alone() -> None:
    leader, child = _session_with_a_child()
    try:
        identity = identify(leader.pid)
        assert identity is not None
        # the run recorded an agent that started *after* this session: these processes
        # merely carry the same number, and must not be touched
        later = dataclasses.replace(
            identity, process_start=f"{identity.machine}/{identity.start_ticks + 10**6}"
        )
        assert leftover_gone(later, wait=0.2) is True
        assert _alive(leader.pid) and _alive(child)
    finally:
        os.killpg(leader.pid, 9)
        leader.wait(10)


def test_another_host_or_namespace_is_not_ours_to_judge() -> None:
    leader, _ = _session_with_a_child()
    try:
        identity = identify(leader.pid)
        assert identity is not None
        elsewhere = dataclasses.replace(identity, host="another-host")
        assert leftover_gone(elsewhere, wait=0.2) is None
        boot, _, rest = identity.process_start.partition("/")
        other_namespace = ProcessIdentity(
            identity.host, identity.process_group, f"{boot}/1/{rest.split('/')[-1]}"
        )
        assert leftover_gone(other_namespace, wait=0.2) is None
        rebooted = ProcessIdentity(identity.host, identity.process_group, f"another-boot/{rest}")
        assert leftover_gone(rebooted, wait=0.2) is True  # a reboot took the group with it
        assert _alive(leader.pid)
    finally:
        os.killpg(leader.pid, 9)
        leader.wait(10)


def test_an_agent_dies_with_the_process_that_started_it() -> None:
    """The parent-death signal: a middle process starts an agent with tie_to_dispatcher and
    is then SIGKILLed; the agent must not survive it."""
    script = (
        "import functools, os, subprocess, sys, time\n"
        "from lanewarden.core.processes import tie_to_dispatcher\n"
        "p = subprocess.Popen(['sleep', '120'], start_new_session=True,\n"
        "                     preexec_fn=functools.partial(tie_to_dispatcher, os.getpid()))\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    middle = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert middle.stdout is not None
    agent = int(middle.stdout.readline())
    assert _alive(agent)
    middle.kill()
    middle.wait(10)
    deadline = time.monotonic() + 5
    while _alive(agent) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(agent), "the agent outlived the process that started it"
