"""What the bot remembers, as plain dataclasses stored through ``to_dict()`` / ``from_dict()``."""

from .conversation_data import ConversationData, MemberData
from .conversation_index import ConversationIndex, KnownConversation
from .user_profile import Picture, UserProfile, picture_url_problem

__all__ = [
    "ConversationData",
    "ConversationIndex",
    "KnownConversation",
    "MemberData",
    "Picture",
    "UserProfile",
    "picture_url_problem",
]
