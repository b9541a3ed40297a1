"""Run an agent command line per task, in its own workspace and process group.

The argv may use ``{prompt}``, ``{task_id}``, ``{title}`` and ``{workspace}``. User text
never becomes an option of the agent: core/config.py refuses a profile that passes it as
a whole positional argument without ``--`` before it, and where it is an option's value
(``-q {prompt}``) a title beginning with ``-`` fails the run.
The environment is a minimal one (core/runners/agent_env.py). Stdout is the
result and the exit code the outcome. On timeout or stop the whole process group gets
SIGTERM, then SIGKILL after a grace period, so agents cannot leave children behind.
The agent dies with its dispatcher, and its process group is recorded on the run so a
leftover can be killed after a crash (core/processes.py); it works in a directory of
its own per board and run (core/workspaces.py).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import functools
import os
import signal
from collections.abc import Callable

from lanewarden.core.config import exposed_arguments
from lanewarden.core.processes import kill_what_is_left, tie_to_dispatcher
from lanewarden.core.redaction import tail
from lanewarden.core.runners import Job, RunOutput, TaskFailed
from lanewarden.core.runners.agent_env import agent_environment

MAX_OUTPUT_BYTES = 1_000_000
KILL_GRACE_SECONDS = 3.0
EXIT_POLL_SECONDS = 0.1
READ_CHUNK_BYTES = 65_536


class CommandRunner:
    async def run(self, job: Job) -> RunOutput:
        argv_template = job.profile.command or []
        if not argv_template:
            raise TaskFailed("profile has no command", retryable=False)
        task = job.claim.task
        workspace = job.workspace
        workspace.mkdir(parents=True, exist_ok=True)
        values = {
            "prompt": job.prompt(),
            "task_id": str(task.id),
            "title": task.title,
            "workspace": str(workspace),
        }
        try:
            argv = [part.format_map(values) for part in argv_template]
        except (KeyError, ValueError) as exc:
            raise TaskFailed(f"bad placeholder in the profile's command: {exc}", retryable=False) from None
        refuse_option_lookalikes(argv_template, argv)
        env = agent_environment(job, workspace)
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                cwd=workspace,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # its own process group, killed as a whole
                preexec_fn=functools.partial(tie_to_dispatcher, os.getpid()),  # dies with us
            )
        except FileNotFoundError:
            raise TaskFailed(f"command not found: {argv[0]}", retryable=False) from None
        except PermissionError:
            raise TaskFailed(f"command is not executable: {argv[0]}", retryable=False) from None
        try:
            if job.on_process is not None:
                await job.on_process(process.pid)
            stdout, stderr = await outputs_until_exit(process, job.output)
        except BaseException:
            await kill_group(process)
            raise
        out = tail(stdout, MAX_OUTPUT_BYTES)
        if process.returncode != 0:
            said = tail(stderr, 2000).strip() or tail(stdout, 2000).strip()
            raise TaskFailed(f"exit status {process.returncode}: {said}")
        return RunOutput(text=out.strip())

    async def aclose(self) -> None:
        return None


def refuse_option_lookalikes(template: list[str], argv: list[str]) -> None:
    """A title beginning with '-' where the command passes it as an option's whole value
    (``-q {prompt}``): some parsers would read it as an option, so the run is refused."""
    for index in exposed_arguments(template):
        if argv[index].startswith("-"):
            raise TaskFailed(
                f"the task's title begins with '-' and the profile's command passes it as the whole "
                f"argument {template[index]!r}, where an agent could read it as an option; retitle "
                "the task, or write the command with --name={prompt} or -- {prompt}",
                retryable=False,
            )


async def outputs_until_exit(
    process: asyncio.subprocess.Process, sink: Callable[[str], None] | None = None
) -> tuple[bytes, bytes]:
    """Stdout and stderr of an agent, read until it exits, each chunk also handed to ``sink``
    as it comes (``logs``). Then whatever it left running in
    its group is killed: a background child holding the pipes would otherwise keep the run
    (and its slot) open long after the agent itself finished. (``Process.wait()`` itself
    waits for the pipes to close on Python 3.11, hence the look at ``returncode``.)"""
    assert process.stdout is not None and process.stderr is not None
    reading = asyncio.ensure_future(
        asyncio.gather(_drain(process.stdout, sink), _drain(process.stderr, sink))
    )
    try:
        while not reading.done() and process.returncode is None:
            await asyncio.wait({reading}, timeout=EXIT_POLL_SECONDS)
        if process.returncode is None:  # it closed its output but still works: let it finish
            await process.wait()
        kill_what_is_left(process.pid)
        stdout, stderr = await reading
        await process.wait()
    except BaseException:
        reading.cancel()
        raise
    return stdout, stderr


async def _drain(stream: asyncio.StreamReader, sink: Callable[[str], None] | None) -> bytes:
    """All of ``stream``, passing each chunk to ``sink`` as text (a character split between
    two reads is decoded whole)."""
    data = bytearray()
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    while chunk := await stream.read(READ_CHUNK_BYTES):
        data += chunk
        if sink is not None:
            sink(decoder.decode(chunk))
    if sink is not None:
        sink(decoder.decode(b"", final=True))
    return bytes(data)


async def kill_group(process: asyncio.subprocess.Process) -> None:
    """SIGTERM the process group, SIGKILL it if it lingers, and reap the child."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.shield(process.wait()), KILL_GRACE_SECONDS)
    except (TimeoutError, asyncio.CancelledError):
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(process.wait(), KILL_GRACE_SECONDS)
