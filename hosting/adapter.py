"""``POST /api/messages`` end to end: check the request, authenticate it, run the turn, deliver the replies.

``StateBotAdapter`` is botbuilder's ``CloudAdapter`` used only for what the SDK does well (the middleware chain,
``TurnContext``, authentication); the rest is ours, because in 4.17.1 it goes wrong:

* malformed requests get a 4xx with a JSON body (the SDK answers 500 with a traceback, or 404);
* a bad bearer token is a 401, not a 500;
* the turn runs in ``hosting.pipeline.TurnPipeline``: replies are buffered and leave only after the turn's state
  is saved, and a lost e_tag race re-runs the turn instead of losing it (the SDK sends replies as the bot
  produces them and saves afterwards, so a failed save follows replies the user already read);
* ``deliveryMode: expectReplies`` returns 200 ``{"activities": [...]}`` (the SDK answers 500);
* no ConnectorClient or UserTokenClient is built per turn; replies go out on one aiohttp session
  (``hosting.replies``).
"""

from __future__ import annotations

import logging
import time

from aiohttp import web
from botbuilder.core import Bot, TurnContext
from botbuilder.integration.aiohttp import CloudAdapter
from botbuilder.schema import Activity, ActivityTypes, DeliveryModes, ResourceResponse
from botframework.connector.auth import BotFrameworkAuthentication

from .http import RequestError, RequestPolicy, error_response, read_activity
from .logs import log_text
from .pipeline import (
    BUFFER_KEY,
    INVOKE_RESPONSE_KEY,
    TurnOutcome,
    TurnPipeline,
    TurnResult,
    deliverable,
    describe,
)
from .replies import ReplyError, ReplySender
from .states import TurnStates
from .wire import to_json

logger = logging.getLogger(__name__)


class StateBotAdapter(CloudAdapter):
    def __init__(
        self,
        authentication: BotFrameworkAuthentication,
        policy: RequestPolicy,
        bot: Bot,
        states: TurnStates,
        replies: ReplySender,
        retries: int,
    ) -> None:
        super().__init__(authentication)
        self._policy = policy
        self._replies = replies
        self.pipeline = TurnPipeline(
            states=states,
            logic=bot.on_turn,
            new_context=self._new_context,
            run_middleware=self.run_pipeline,
            retries=retries,
        )

    async def handle(self, request: web.Request) -> web.Response:
        """Serve one ``POST /api/messages``."""
        started = time.perf_counter()
        try:
            activity = await read_activity(request, self._policy)
        except RequestError as err:
            logger.info("refused a request: %s %s", err.status, err.code)
            return err.response()
        # Before the conversation's lock, so that forged requests never queue in front of a real user's turn.
        try:
            authenticated = await self.bot_framework_authentication.authenticate_request(
                activity, request.headers.get("Authorization", "")
            )
        except RequestError as err:  # 401, or 503 without signing keys; hosting/auth.py logged why
            return err.response()
        activity.caller_id = authenticated.caller_id

        result = await self.pipeline.run(activity)
        response = await self._respond(activity, result)
        logger.info(
            "turn %s: %s, %d repl%s, %d attempt%s, %.1f ms -> %d",
            describe(activity),
            result.outcome,
            len(result.activities),
            "y" if len(result.activities) == 1 else "ies",
            result.attempts,
            "" if result.attempts == 1 else "s",
            (time.perf_counter() - started) * 1000,
            response.status,
        )
        return response

    async def _respond(self, activity: Activity, result: TurnResult) -> web.Response:
        failure = FAILURES.get(result.outcome)
        if activity.delivery_mode == DeliveryModes.expect_replies:
            body = {"activities": [to_json(reply) for reply in result.activities]}
            if failure is not None:
                return web.json_response({**failure.body(), **body}, status=failure.status)
            return web.json_response(body, status=200)
        try:
            await self._replies.send(result.activities)
        except ReplyError as err:
            logger.warning(
                "turn %s: replies were not delivered to its serviceUrl: %s", describe(activity), log_text(err)
            )
            if result.outcome == TurnOutcome.OK:
                return error_response(
                    502, "reply_not_delivered", "the turn was saved, but its replies could not be delivered"
                )
        if failure is not None:
            return failure.response()
        if activity.type == ActivityTypes.invoke:
            invoke = result.invoke_response
            if invoke is None:
                return error_response(501, "not_implemented", "the bot does not handle this invoke")
            return web.json_response(invoke.body, status=int(invoke.status))
        return web.Response(status=201)

    def _new_context(self, activity: Activity) -> TurnContext:
        context = TurnContext(self, activity)
        context.turn_state[BUFFER_KEY] = []
        return context

    async def send_activities(self, context: TurnContext, activities: list[Activity]) -> list[ResourceResponse]:
        """Buffer the turn's outgoing activities; the pipeline hands them out once the state is saved."""
        buffer: list[Activity] = context.turn_state[BUFFER_KEY]
        responses = []
        for activity in activities:
            if activity.type == ActivityTypes.invoke_response:
                context.turn_state[INVOKE_RESPONSE_KEY] = activity.value
            elif deliverable(activity):
                activity.id = None
                buffer.append(activity)
            responses.append(ResourceResponse(id=f"{activity.conversation.id}|{len(buffer)}"))
        return responses


# Turns that could not be served, as the HTTP caller sees them (the user gets the pipeline's reply as well).
FAILURES = {
    TurnOutcome.STORAGE_UNAVAILABLE: RequestError(
        503,
        TurnOutcome.STORAGE_UNAVAILABLE,
        "the bot's state storage is unavailable; retry later",
        {"Retry-After": "5"},
    ),
    TurnOutcome.RECORD_DAMAGED: RequestError(
        503, TurnOutcome.RECORD_DAMAGED, "a stored record of this conversation cannot be decoded; it was kept as it is"
    ),
}
