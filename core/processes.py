"""An agent process never outlives its dispatcher, and a leftover one is found and killed.

Two halves (Linux; elsewhere both degrade to the lease alone, see docs/faults.md):

* ``tie_to_dispatcher`` runs in the forked child before ``exec``: ``prctl(PR_SET_PDEATHSIG,
  SIGKILL)`` makes the kernel kill the agent the moment its dispatcher dies, even by
  ``kill -9``. It only covers the agent itself, not what the agent started in its
  process group; hence the second half.
* Each run records where its agent runs (``ProcessIdentity``: host name, process group,
  and a start stamp of boot id, PID namespace and start time in clock ticks). A
  dispatcher that reclaims the run on the same host kills whatever is left of that group
  and frees the slot only once the group is gone (``leftover_gone``). The start stamp
  tells our group from a later one that reused the number.

The parent-death signal follows the *thread* that forked the child: agents are started
from the event loop's thread, which lives as long as the dispatcher.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("lanewarden.processes")
PR_SET_PDEATHSIG = 1
HOST_NAME_MAX = 128
GONE_WAIT_SECONDS = 3.0


def _resolve_prctl() -> object | None:
    """Looked up once, in the parent: the child between fork and exec does as little as it can."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _resolve_prctl()


def tie_to_dispatcher(parent_pid: int) -> None:
    """``preexec_fn`` of an agent: die with the dispatcher (Linux)."""
    if _PRCTL is None:
        return
    _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # type: ignore[operator]
    if os.getppid() != parent_pid:  # the dispatcher died before the prctl took effect
        os._exit(137)


def kill_what_is_left(process_group: int) -> None:
    """After an agent exited: SIGKILL whatever it left running in its process group.

    Called right after the agent was reaped; the group's number cannot be taken by a new
    group while any member of ours is left, so this reaches ours or nothing."""
    try:
        os.killpg(process_group, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass(frozen=True, slots=True)
class ProcessIdentity:
    """Where a run's agent runs: stored on its run row (runs.host, process_group, process_start)."""

    host: str
    process_group: int
    process_start: str  # "<boot id>/<pid namespace>/<start time in clock ticks>"

    @property
    def machine(self) -> str:
        """Boot id and PID namespace: equal means we can see and signal that process group."""
        return self.process_start.rpartition("/")[0]

    @property
    def start_ticks(self) -> int:
        return int(self.process_start.rpartition("/")[2])


def host_name() -> str:
    return socket.gethostname()[:HOST_NAME_MAX]


def this_machine() -> str | None:
    """Boot id and PID namespace of this process, or None off Linux."""
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None
    return f"{boot_id}/{namespace}"


def identify(pid: int) -> ProcessIdentity | None:
    """The identity of a just-started agent (a session leader: its group id is its pid)."""
    machine = this_machine()
    stat = _stat(pid)
    if machine is None or stat is None:
        return None
    return ProcessIdentity(host_name(), pid, f"{machine}/{stat.start_ticks}")


def leftover_gone(identity: ProcessIdentity, wait: float = GONE_WAIT_SECONDS) -> bool | None:
    """Kill what is left of a reclaimed run's process group; True once nothing of it runs.

    None when this process cannot tell (another host or PID namespace, or not Linux):
    the caller then relies on the lease. A host whose boot id changed has rebooted, so
    nothing of the group can be left."""
    machine = this_machine()
    if machine is None or identity.host != host_name():
        return None
    if identity.machine.partition("/")[0] != machine.partition("/")[0]:
        return True  # same host name, another boot: the group died with the old kernel
    if identity.machine != machine:
        return None  # another PID namespace (container) on this host: not ours to judge
    deadline = time.monotonic() + wait
    while True:
        members = _members(identity)
        if not members:
            return True
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            except PermissionError:
                return False
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def safe_to_free(run_id: int, host: str | None, group: int | None, start: str | None) -> bool | None:
    """May an expired run's slot be freed? False while its agent's group is still alive here
    (the caller tries again at its next heartbeat); None when only the lease can tell."""
    if host is None or group is None or start is None:
        return None  # no agent process recorded (llm, noop, or not started yet)
    try:
        verdict = leftover_gone(ProcessIdentity(host, group, start))
    except (OSError, ValueError) as exc:  # cannot look: the expired lease is all we have
        log.warning("run %d: cannot check its agent's process group: %s", run_id, exc)
        return None
    if verdict is False:
        log.warning("run %d: its agent's process group %d is still alive", run_id, group)
    return verdict


@dataclass(frozen=True, slots=True)
class _Stat:
    state: str
    session: int
    start_ticks: int


def _stat(pid: int) -> _Stat | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its last ')'
    fields = raw[raw.rindex(")") + 2 :].split()
    return _Stat(state=fields[0], session=int(fields[3]), start_ticks=int(fields[19]))


def _members(identity: ProcessIdentity) -> list[int]:
    """Living processes of the run's session (the agent called setsid, so session id =
    group id = the agent's pid). Zombies count as gone: they run nothing. A process that
    started before our agent cannot be its descendant, so a reused number is left alone."""
    leader = _stat(identity.process_group)
    reused = leader is not None and leader.start_ticks != identity.start_ticks
    if reused and leader.session == identity.process_group:
        return []  # the number now leads another session: ours is gone
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        stat = _stat(int(entry.name))
        if (
            stat is not None
            and stat.session == identity.process_group
            and stat.state not in ("Z", "X")
            and stat.start_ticks >= identity.start_ticks
        ):
            found.append(int(entry.name))
    return found
