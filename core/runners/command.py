"""Run an agent command line per task, in its own workspace and process group.

The argv may use ``{prompt}``, ``{task_id}``, ``{title}`` and ``{workspace}``; the
profile's gateway is exported as ``OPENAI_BASE_URL``, ``OPENAI_API_KEY`` and
``OPENAI_MODEL``, plus ``LANEWARDEN_TASK_ID`` and ``LANEWARDEN_RUN_ID``. Stdout is the
result and the exit code the outcome. On timeout or stop the whole process group gets
SIGTERM, then SIGKILL after a grace period, so agents cannot leave children behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

from lanewarden.core.config import lanewarden_home
from lanewarden.core.runners import Job, RunOutput, TaskFailed

MAX_OUTPUT_BYTES = 1_000_000
KILL_GRACE_SECONDS = 3.0


class CommandRunner:
    async def run(self, job: Job) -> RunOutput:
        argv_template = job.profile.command or []
        if not argv_template:
            raise TaskFailed("profile has no command", retryable=False)
        task = job.claim.task
        workspace = (job.workspace_root or lanewarden_home() / "workspaces") / f"task-{task.id}"
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
        env = dict(os.environ)
        env.update(
            LANEWARDEN_TASK_ID=str(task.id),
            LANEWARDEN_RUN_ID=str(job.claim.run_id),
            LANEWARDEN_WORKSPACE=str(workspace),
        )
        if job.gateway is not None:
            env["OPENAI_BASE_URL"] = job.gateway.base_url
            env["OPENAI_API_KEY"] = job.gateway.api_key() or "not-needed"
        if job.profile.model:
            env["OPENAI_MODEL"] = job.profile.model
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                cwd=workspace,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # its own process group, killed as a whole
            )
        except FileNotFoundError:
            raise TaskFailed(f"command not found: {argv[0]}", retryable=False) from None
        except PermissionError:
            raise TaskFailed(f"command is not executable: {argv[0]}", retryable=False) from None
        try:
            stdout, stderr = await process.communicate()
        except BaseException:
            await kill_group(process)
            raise
        out = stdout[-MAX_OUTPUT_BYTES:].decode("utf-8", "replace")
        if process.returncode != 0:
            tail = stderr[-2000:].decode("utf-8", "replace").strip() or out[-2000:].strip()
            raise TaskFailed(f"exit status {process.returncode}: {tail}")
        return RunOutput(text=out.strip())

    async def aclose(self) -> None:
        return None


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
