"""The buttons on task cards: Promote, Cancel (with a confirmation) and Retry.

They are ``DynamicItem``s: the action and the task id live in the ``custom_id``
(``lw:cancel:42``), and the classes are registered with ``Client.add_dynamic_items`` at
start-up, so a click on a card posted weeks ago, before any number of restarts, still
reaches its handler. No per-message state is kept in memory.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import discord

if TYPE_CHECKING:
    from lanewarden.bot.discord_app.handler import CommandHandler

# what each card button runs, in the grammar's words
ACTIONS: dict[str, tuple[str, discord.ButtonStyle]] = {
    "promote": ("Promote", discord.ButtonStyle.primary),
    "cancel": ("Cancel", discord.ButtonStyle.danger),
    "retry": ("Retry", discord.ButtonStyle.success),
}


def handler_of(interaction: discord.Interaction[Any]) -> CommandHandler:
    return interaction.client.kanban  # type: ignore[attr-defined,no-any-return]


class TaskButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=re.compile(r"lw:(?P<action>promote|cancel|retry):(?P<task_id>[0-9]{1,18})"),
):
    def __init__(self, action: str, task_id: int) -> None:
        label, style = ACTIONS[action]
        super().__init__(discord.ui.Button(label=label, style=style, custom_id=f"lw:{action}:{task_id}"))
        self.action = action
        self.task_id = task_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str]
    ) -> TaskButton:
        return cls(match["action"], int(match["task_id"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await handler_of(interaction).on_card_button(interaction, self.action, self.task_id)


class CancelAnswer(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=re.compile(r"lw:cancel-(?P<answer>yes|no):(?P<task_id>[0-9]{1,18})"),
):
    """The two buttons of the "really cancel?" prompt."""

    def __init__(self, answer: str, task_id: int) -> None:
        if answer == "yes":
            button: discord.ui.Button[Any] = discord.ui.Button(
                label=f"Yes, cancel #{task_id}",
                style=discord.ButtonStyle.danger,
                custom_id=f"lw:cancel-yes:{task_id}",
            )
        else:
            button = discord.ui.Button(
                label="Keep it", style=discord.ButtonStyle.secondary, custom_id=f"lw:cancel-no:{task_id}"
            )
        super().__init__(button)
        self.answer = answer
        self.task_id = task_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str]
    ) -> CancelAnswer:
        return cls(match["answer"], int(match["task_id"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await handler_of(interaction).on_cancel_answer(interaction, self.answer == "yes", self.task_id)


DYNAMIC_ITEMS: tuple[type[discord.ui.DynamicItem[Any]], ...] = (TaskButton, CancelAnswer)


def confirm_cancel_view(task_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelAnswer("yes", task_id))
    view.add_item(CancelAnswer("no", task_id))
    return view
