"""The ceiling: a bare aiohttp handler that parses the activity and answers one echo in expectReplies form.

No SDK, no state: what is left of a turn's cost is aiohttp, JSON and the load generator.
"""

from __future__ import annotations

from aiohttp import web

from bench.serve import MESSAGES_PATH, run


async def messages(request: web.Request) -> web.Response:
    activity = await request.json()
    reply = {
        "type": "message",
        "text": f"echo: {activity.get('text', '')}",
        "from": activity.get("recipient"),
        "recipient": activity.get("from"),
        "conversation": activity.get("conversation"),
        "replyToId": activity.get("id"),
    }
    return web.json_response({"activities": [reply]})


def create_app() -> web.Application:
    app = web.Application()
    app.router.add_post(MESSAGES_PATH, messages)
    return app


if __name__ == "__main__":
    run(create_app())
