"""The bot (what it says) and its adapter (how a turn arrives over HTTP)."""

from .adapter import StateBotAdapter
from .state_bot import StateBot, create_bot

__all__ = ["StateBot", "StateBotAdapter", "create_bot"]
