"""The contract between ``serve`` and the chat adapters (Slack, Discord).

An adapter receives commands from its service, turns them into the board's grammar
(core/grammar.py), runs them through the shared executor and renders the results.
Its ``sink`` delivers outbox rows (cards, thread updates, alerts, digests) back to
the service; only the leader process delivers. Tokens come from the environment
only: an adapter is built when its token is set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from lanewarden.core.board import Board
from lanewarden.core.config import LanewardenConfig
from lanewarden.core.errors import ConfigError
from lanewarden.core.outbox import OutboxSink

if TYPE_CHECKING:
    from lanewarden.bot.http.server import HttpEndpoint


@dataclass
class AdapterContext:
    config: LanewardenConfig
    board: Board
    http: HttpEndpoint | None


class ChatAdapter(Protocol):
    name: str  # "slack" | "discord": the prefix of actor ids and channel refs

    @property
    def sink(self) -> OutboxSink: ...

    async def start(self, ctx: AdapterContext) -> None: ...

    async def stop(self) -> None: ...


def build_adapters(config: LanewardenConfig, env: dict[str, str] | None = None) -> list[ChatAdapter]:
    env = dict(os.environ) if env is None else env
    adapters: list[ChatAdapter] = []
    if env.get("SLACK_BOT_TOKEN"):
        needed = "SLACK_APP_TOKEN" if config.slack.mode == "socket" else "SLACK_SIGNING_SECRET"
        if not env.get(needed):
            raise ConfigError(
                f"slack.mode = {config.slack.mode!r} needs {needed} in the environment "
                "besides SLACK_BOT_TOKEN"
            )
        from lanewarden.bot.slack_app.adapter import SlackAdapter

        adapters.append(SlackAdapter.from_env(config, env))
    if env.get("DISCORD_TOKEN"):
        from lanewarden.bot.discord_app.adapter import DiscordAdapter

        adapters.append(DiscordAdapter.from_env(config, env))
    return adapters
