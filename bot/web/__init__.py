"""The live web board served by ``serve`` on the [http] endpoint (see docs/web.md)."""

from lanewarden.bot.web.app import WebBoard
from lanewarden.bot.web.security import load_secret

__all__ = ["WebBoard", "load_secret"]
