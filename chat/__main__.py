"""``python -m chat``: the bot, a local Direct Line endpoint and a Web Chat page on 127.0.0.1."""

import sys

from .server import main

sys.exit(main())
