"""Chat with the bot in a browser, locally: Bot Framework Web Chat against a development Direct Line endpoint.

Development only. ``python -m chat`` (``make chat``) builds the normal app with ``app.create_app`` and adds a
local Direct Line 3.0 endpoint and a Web Chat page to it; production (``app:create_app``) never has them.
"""

from .directline import DirectLine
from .server import ChatError, create_chat_app, local_settings

__all__ = ["ChatError", "DirectLine", "create_chat_app", "local_settings"]
