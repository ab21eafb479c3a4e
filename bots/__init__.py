"""The bot: what it says (``state_bot``), its commands (``commands``) and what it keeps about a user
(``user_data``). How a turn reaches it is the engine's business (``hosting``)."""

from .state_bot import StateBot, create_bot

__all__ = ["StateBot", "create_bot"]
