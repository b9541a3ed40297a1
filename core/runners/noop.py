"""A runner that does nothing, for benchmarks and rehearsals of the board itself."""

from __future__ import annotations

from lanewarden.core.runners import Job, RunOutput


class NoopRunner:
    async def run(self, job: Job) -> RunOutput:
        return RunOutput(text="ok")

    async def aclose(self) -> None:
        return None
