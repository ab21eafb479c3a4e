"""What the bot remembers, as plain dataclasses stored through ``to_dict()`` / ``from_dict()``."""

from .conversation_data import ConversationData, MemberData
from .user_profile import Picture, UserProfile

__all__ = ["ConversationData", "MemberData", "Picture", "UserProfile"]
