"""Answering one interaction exactly once: a reply, a deferral and its follow-up, or an error.

Errors are always ephemeral. A public deferral ("Lanewarden is thinking…" shown to the
channel) that ends in an error is deleted and the error sent privately instead, so a
mistake is never shown to everyone.
"""

from __future__ import annotations

import logging
from typing import Any

import discord
from lanewarden.bot.discord_app.replies import NO_MENTIONS, Reply, error_reply

log = logging.getLogger("lanewarden.discord")


class Responder:
    """Answers one interaction once: a reply, a deferral and its follow-up, or an error.

    ``edit`` is for buttons on an ephemeral prompt (the cancel confirmation): the
    answer replaces the prompt instead of adding a message.
    """

    def __init__(self, interaction: discord.Interaction[Any], *, public: bool, edit: bool = False) -> None:
        self.interaction = interaction
        self.public = public
        self.edit = edit
        self.deferred_publicly = False

    async def defer(self) -> None:
        if self.edit:
            await self.interaction.response.defer()
        else:
            await self.interaction.response.defer(ephemeral=not self.public, thinking=True)
            self.deferred_publicly = self.public

    async def error(self, message: str) -> None:
        await self.send(error_reply(message))

    async def send(self, reply: Reply) -> None:
        try:
            await self._send(reply)
        except discord.HTTPException as exc:
            # 10062 Unknown interaction (answered too late), 40060 already acknowledged:
            # nobody is waiting for this answer any more
            log.warning("could not answer interaction %s: %s %s", self.interaction.id, exc.status, exc.text)

    async def _send(self, reply: Reply) -> None:
        interaction = self.interaction
        ephemeral = reply.always_ephemeral or not self.public
        if not interaction.response.is_done():
            if self.edit:
                await interaction.response.edit_message(
                    content=reply.content, embeds=reply.embeds, attachments=reply.files(), view=None
                )
                return
            await interaction.response.send_message(
                content=reply.content,
                embeds=reply.embeds,
                files=reply.files(),
                ephemeral=ephemeral,
                allowed_mentions=NO_MENTIONS,
            )
            return
        if self.deferred_publicly and reply.always_ephemeral:
            # the "thinking" placeholder is visible to everyone: replace it by a private note
            await interaction.delete_original_response()
            await interaction.followup.send(
                content=reply.content or "", embeds=reply.embeds, files=reply.files(), ephemeral=True
            )
            return
        await interaction.edit_original_response(
            content=reply.content,
            embeds=reply.embeds,
            attachments=reply.files(),
            allowed_mentions=NO_MENTIONS,
            **({"view": None} if self.edit else {}),
        )
