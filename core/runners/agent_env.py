"""The environment a ``command`` agent starts with: the documented minimum, nothing more.

An agent's stdout becomes a result any viewer reads, so whatever the agent can see may
end up on the board. It gets the locale, a PATH, its home and temp directories, its
own gateway (``OPENAI_BASE_URL``, ``OPENAI_API_KEY``, ``OPENAI_MODEL``) and its task
(``LANEWARDEN_TASK_ID``, ``LANEWARDEN_RUN_ID``, ``LANEWARDEN_WORKSPACE``), plus what its
profile names: ``env = {NAME = "value"}`` and ``pass_env = ["NAME"]``. The config refuses
a profile that names one of Lanewarden's own secrets (core/redaction.py); the check here
repeats it for the names known without the config (chat tokens, database credentials,
LANEWARDEN_*), so that a profile built another way cannot pass those either.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from lanewarden.core.redaction import secret_kind
from lanewarden.core.runners import Job

PASSED_THROUGH = ("PATH", "HOME", "LANG", "TZ", "TMPDIR")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


def agent_environment(job: Job, workspace: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The child's whole environment for ``job`` (``environ`` defaults to this process's)."""
    source = os.environ if environ is None else environ
    env = {name: source[name] for name in PASSED_THROUGH if name in source}
    env.update({name: value for name, value in source.items() if name.startswith("LC_")})
    env.setdefault("PATH", DEFAULT_PATH)
    profile = job.profile
    named = {name: source[name] for name in profile.pass_env if name in source}
    named.update(profile.env)
    for name, value in named.items():
        if secret_kind(name) is None:
            env[name] = value
    env.update(
        LANEWARDEN_TASK_ID=str(job.claim.task.id),
        LANEWARDEN_RUN_ID=str(job.claim.run_id),
        LANEWARDEN_WORKSPACE=str(workspace),
    )
    if job.gateway is not None:
        env["OPENAI_BASE_URL"] = job.gateway.base_url
        env["OPENAI_API_KEY"] = job.gateway.api_key() or "not-needed"
    if profile.model:
        env["OPENAI_MODEL"] = profile.model
    return env
