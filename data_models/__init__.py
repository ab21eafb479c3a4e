"""What the bot remembers, as plain dataclasses stored through ``to_dict()`` / ``from_dict()``."""

from .conversation_data import ConversationData
from .user_profile import Picture, UserProfile

__all__ = ["ConversationData", "Picture", "UserProfile"]
