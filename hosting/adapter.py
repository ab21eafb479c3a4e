"""``POST /api/messages`` end to end: check the request, authenticate it, run the turn, deliver the replies; and
the turns a bot starts itself (proactive messages, new conversations).

``StateBotAdapter`` is botbuilder's ``CloudAdapter`` used only for what the SDK does well (the middleware chain,
``TurnContext``, authentication); the rest is ours, because in 4.17.1 it goes wrong:

* malformed requests get a 4xx with a JSON body (the SDK answers 500 with a traceback, or 404);
* a bad bearer token is a 401, not a 500;
* the turn runs in ``hosting.pipeline.TurnPipeline``: replies are buffered and leave only after the turn's state
  is saved, and a lost e_tag race re-runs the turn instead of losing it (the SDK sends replies as the bot
  produces them and saves afterwards, so a failed save follows replies the user already read);
* ``deliveryMode: expectReplies`` returns 200 ``{"activities": [...]}`` (the SDK answers 500);
* Teams: ``ALLOWED_TENANTS`` refuses other tenants' activities with a 403, and the bot's own @mention is removed
  from the text before the bot reads it (``hosting.channels``);
* no ConnectorClient or UserTokenClient is built per turn; replies go out on one aiohttp session
  (``hosting.replies``);
* with telemetry on, each turn is a span with its outcome and counts, and feeds the turn metrics
  (``hosting.telemetry``).

What the SDK's CloudAdapter offers a bot works, the same way:

* ``continue_conversation(reference, callback)`` (and ``continue_conversation_with_claims``): a proactive turn
  of a stored ``ConversationReference``, through the same pipeline as a turn a user started: the conversation's
  lock, one read of its states, ``callback`` run with everything it sends buffered, one write, the same retries;
  then its replies go to the reference's serviceUrl, which must be one replies may go to (the policy incoming
  activities are checked with: ``hosting.http.service_url_problem``; anything else is a ``ValueError``). It
  returns the channel's answers to the replies (``ResourceResponse``, with the ids the channel gave them). A
  proactive turn has nobody to answer: when it does not complete it raises ``ProactiveTurnError``, whose
  ``outcome`` is the pipeline's (``turn_conflict``, ``storage_unavailable``, ``record_damaged``, ``bot_error``:
  nothing was saved and nothing sent, the user is not told) or ``reply_not_delivered`` (the state was saved;
  ``saved`` says which). Calling it from a turn of the same conversation, in the same task, would wait for
  itself: that raises ``RuntimeError`` at once (send with the turn's own context instead).
* ``create_conversation(bot_app_id, callback, parameters, channel_id, service_url)``:
  ``POST {serviceUrl}/v3/conversations``, then ``callback`` runs as the first turn of the new conversation (the
  SDK's ``createConversation`` event), as above. A channel that refuses is ``ProactiveTurnError``
  (``conversation_not_created``). That turn has no user, so no UserState or PrivateConversationState.
* ``update_activity`` and ``delete_activity`` during a turn (a proactive one too) are sent after the turn's state
  is saved, in order with its replies (``PUT`` / ``DELETE`` ``{serviceUrl}/v3/conversations/{id}/activities/
  {activityId}``), and a failure is a reply not delivered. The id ``send_activity`` returns is provisional:
  updating or deleting that reply in the same turn works (the channel's id is used), but the channel's own ids
  are known only after the turn: a bot that keeps an id for later sends the activity with
  ``continue_conversation``, which returns them. With a ``TurnContext`` whose turn has ended (in a task the turn
  left running) sending, updating and deleting raise ``OutsideTurnError``: run a proactive turn instead.
* every turn finds a ``UserTokenClient`` where ``OAuthPrompt`` looks for it, built on first use
  (``hosting.auth.OnDemandUserTokenClient``).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager

from aiohttp import web
from botbuilder.core import Bot, TurnContext
from botbuilder.core.conversation_reference_extension import get_continuation_activity
from botbuilder.integration.aiohttp import CloudAdapter
from botbuilder.schema import (
    Activity,
    ActivityTypes,
    ConversationParameters,
    ConversationReference,
    DeliveryModes,
    ResourceResponse,
)
from botframework.connector.auth import (
    AuthenticationConstants,
    BotFrameworkAuthentication,
    ClaimsIdentity,
    UserTokenClient,
)

from .channels import strip_own_mentions, tenant_of, tenant_problem
from .deliveries import DEFAULT_REMEMBERED
from .http import RequestError, RequestPolicy, error_response, read_activity, service_url_problem
from .logs import log_text, short_id
from .outgoing import Method, Outgoing
from .pipeline import (
    BUFFER_KEY,
    CLOSED_KEY,
    INVOKE_RESPONSE_KEY,
    TurnOutcome,
    TurnPipeline,
    TurnResult,
    deliverable,
    describe,
)
from .replies import ReplyError, ReplySender
from .states import TurnStates
from .telemetry import Telemetry, TurnRecord
from .wire import to_json

logger = logging.getLogger(__name__)

#: ``ProactiveTurnError.outcome`` when the turn was saved but what it sent did not reach the channel.
REPLY_NOT_DELIVERED = "reply_not_delivered"
#: ``ProactiveTurnError.outcome`` when the channel did not create the conversation (no turn ran).
CONVERSATION_NOT_CREATED = "conversation_not_created"

Callback = Callable[[TurnContext], Awaitable[None]]


class ProactiveTurnError(Exception):
    """A turn the bot started (``continue_conversation``, ``create_conversation``) did not complete.

    ``outcome``: a ``TurnOutcome`` value (nothing saved, nothing sent), ``reply_not_delivered`` (``saved``: the
    state changes were stored, the replies did not all reach the channel) or ``conversation_not_created``.
    """

    def __init__(self, outcome: str, message: str, *, saved: bool) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.saved = saved


class OutsideTurnError(RuntimeError):
    """An activity was sent, updated or deleted with a ``TurnContext`` that is not (or no longer) that of a
    running turn."""

    def __init__(self) -> None:
        super().__init__(
            "this TurnContext is not that of a running turn (the turn has ended), so nothing can be sent, updated "
            "or deleted with it; to do so later, run a turn of the conversation with "
            "adapter.continue_conversation(reference, callback) and use the callback's TurnContext"
        )


class StateBotAdapter(CloudAdapter):
    """The adapter of ``POST /api/messages`` and of the turns the bot starts itself; see the module docstring."""

    def __init__(
        self,
        authentication: BotFrameworkAuthentication,
        policy: RequestPolicy,
        bot: Bot,
        states: TurnStates,
        replies: ReplySender,
        retries: int,
        user_tokens: UserTokenClient | None = None,
        remembered: int = DEFAULT_REMEMBERED,
        telemetry: Telemetry | None = None,
    ) -> None:
        super().__init__(authentication)
        self._policy = policy
        self._replies = replies
        self._telemetry = telemetry
        # Provisional ids of replies, unique in this process for its life (a uuid4 per reply is a system call).
        self._provisional_prefix = f"pending-{uuid.uuid4().hex[:12]}-"
        self._provisional_ids = itertools.count(1)
        self.user_tokens = user_tokens
        self.pipeline = TurnPipeline(
            states=states,
            logic=bot.on_turn,
            new_context=self._new_context,
            run_middleware=self.run_pipeline,
            retries=retries,
            remembered=remembered,
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
        problem = tenant_problem(activity, self._policy.allowed_tenants)
        if problem is not None:
            logger.info("refused a request: 403 tenant_not_allowed (%s)", short_id(tenant_of(activity)))
            return error_response(403, "tenant_not_allowed", problem)
        strip_own_mentions(activity)

        new_context = functools.partial(self._new_context, identity=authenticated.claims_identity)
        with self._observed("turn", activity) as record:
            result = await self.pipeline.run(activity, new_context=new_context, remember=True)
            response = await self._respond(activity, result)
            _note(record, result, response.status)
        _log_turn("turn", activity, result, started, f" -> {response.status}")
        return response

    def _observed(self, name: str, activity: Activity) -> AbstractContextManager[TurnRecord]:
        """The turn's span and metrics when telemetry is on (``hosting.telemetry``); otherwise nothing."""
        if self._telemetry is None:
            return contextlib.nullcontext(TurnRecord())
        return self._telemetry.turn(name, activity)

    async def _respond(self, activity: Activity, result: TurnResult) -> web.Response:
        """Deliver what the turn sends and answer the request. A redelivery sends only what the first delivery
        could not; what does not get through is noted in the delivery log for the next redelivery."""
        failure = FAILURES.get(result.outcome)
        expect_replies = activity.delivery_mode == DeliveryModes.expect_replies
        redelivered = result.redelivered
        if redelivered is not None:
            already, to_channel = redelivered.sent, redelivered.unsent()
        elif expect_replies:  # the replies are the answer; the turn's updates and deletions go to the serviceUrl
            already, to_channel = 0, [item for item in result.outgoing if item.method != Method.POST]
        else:
            already, to_channel = 0, result.outgoing
        sent = await self._deliver(activity, to_channel)
        delivered = sent == len(to_channel)
        result.undelivered = len(to_channel) - sent
        if redelivered is not None:
            result.resent = sent
        if result.log_key is not None and (not delivered or (redelivered is not None and to_channel)):
            await self.pipeline.note_delivery(result, activity, already + sent, to_channel[sent:])
        succeeded = result.outcome in (TurnOutcome.OK, TurnOutcome.REDELIVERED)
        if expect_replies:
            body = {"activities": [to_json(reply) for reply in result.replies]}
            if failure is not None:
                return web.json_response({**failure.body(), **body}, status=failure.status)
            if not delivered:
                return web.json_response({**NOT_DELIVERED.body(), **body}, status=NOT_DELIVERED.status)
            return web.json_response(body, status=200)
        if not delivered and succeeded:
            return NOT_DELIVERED.response()
        if failure is not None:
            return failure.response()
        if activity.type == ActivityTypes.invoke:
            invoke = result.invoke_response
            if invoke is None:
                return error_response(501, "not_implemented", "the bot does not handle this invoke")
            return web.json_response(invoke.body, status=int(invoke.status))
        return web.Response(status=201)

    async def _deliver(self, activity: Activity, outgoing: list[Outgoing]) -> int:
        """How many of ``outgoing`` reached the channel, in order (all of them, or up to the first failure, which
        is logged)."""
        try:
            await self._replies.deliver(outgoing)
        except ReplyError as err:
            logger.warning(
                "turn %s: replies were not delivered to its serviceUrl: %s", describe(activity), log_text(err)
            )
            return err.delivered
        return len(outgoing)

    def _new_context(self, activity: Activity, identity: ClaimsIdentity | None = None) -> TurnContext:
        context = TurnContext(self, activity)
        context.turn_state[BUFFER_KEY] = []
        context.turn_state[self.BOT_IDENTITY_KEY] = identity
        if self.user_tokens is not None:
            context.turn_state[self.USER_TOKEN_CLIENT_KEY] = self.user_tokens
        return context

    @staticmethod
    def _buffer(context: TurnContext) -> list[Outgoing]:
        buffer = context.turn_state.get(BUFFER_KEY)
        if buffer is None or context.turn_state.get(CLOSED_KEY):
            raise OutsideTurnError
        return buffer

    async def send_activities(self, context: TurnContext, activities: list[Activity]) -> list[ResourceResponse]:
        """Buffer the turn's outgoing activities; the pipeline hands them out once the state is saved. The ids
        returned are provisional (see the module docstring)."""
        buffer = self._buffer(context)
        responses = []
        for activity in activities:
            provisional_id = f"{self._provisional_prefix}{next(self._provisional_ids)}"
            if activity.type == ActivityTypes.invoke_response:
                context.turn_state[INVOKE_RESPONSE_KEY] = activity.value
            elif deliverable(activity):
                activity.id = None
                buffer.append(Outgoing(Method.POST, activity, provisional_id))
            responses.append(ResourceResponse(id=provisional_id))
        return responses

    async def update_activity(self, context: TurnContext, activity: Activity) -> ResourceResponse:
        """Replace the activity ``activity.id`` of the turn's conversation with ``activity``, after the turn's
        state is saved, in order with its replies."""
        if context is None or activity is None:
            raise TypeError("update_activity needs the turn's context and the activity")
        if not activity.id:
            raise ValueError("update_activity needs the id of the activity to replace, in activity.id")
        buffer = self._buffer(context)
        change = copy.deepcopy(activity)  # as the bot made it now, whatever it does to it later in the turn
        change.service_url = context.activity.service_url  # the SDK's connector is the turn's too
        change.conversation = change.conversation or context.activity.conversation
        buffer.append(Outgoing(Method.PUT, change))
        return ResourceResponse(id=activity.id)

    async def delete_activity(self, context: TurnContext, reference: ConversationReference) -> None:
        """Delete the activity ``reference.activity_id`` of the turn's conversation, after the turn's state is
        saved, in order with its replies."""
        if context is None or reference is None:
            raise TypeError("delete_activity needs the turn's context and a ConversationReference")
        if not reference.activity_id:
            raise ValueError("delete_activity needs the id of the activity to delete, in reference.activity_id")
        buffer = self._buffer(context)
        target = Activity(
            id=reference.activity_id,
            service_url=context.activity.service_url,
            conversation=reference.conversation or context.activity.conversation,
        )
        buffer.append(Outgoing(Method.DELETE, target))

    async def continue_conversation(
        self,
        reference: ConversationReference,
        callback: Callback,
        bot_app_id: str | None = None,
        claims_identity: ClaimsIdentity | None = None,
        audience: str | None = None,
    ) -> list[ResourceResponse]:
        """Run ``callback`` as a turn of the conversation ``reference`` names (a proactive message), through the
        turn pipeline; its replies leave once its state is saved. The channel's answers to the replies, in order;
        ``ProactiveTurnError`` when the turn did not complete, ``ValueError`` for a reference replies cannot be
        sent to."""
        identity = claims_identity or self.create_claims_identity(bot_app_id or "")
        return await self._proactive(get_continuation_activity(reference), callback, identity, audience)

    async def continue_conversation_with_claims(
        self,
        claims_identity: ClaimsIdentity,
        reference: ConversationReference,
        audience: str | None,
        logic: Callback,
    ) -> list[ResourceResponse]:
        """``continue_conversation`` with the given identity in the turn's context."""
        return await self._proactive(get_continuation_activity(reference), logic, claims_identity, audience)

    async def process_proactive(
        self,
        claims_identity: ClaimsIdentity,
        continuation_activity: Activity,
        audience: str | None,
        logic: Callback,
    ) -> list[ResourceResponse]:
        """``continue_conversation`` with a continuation activity already made."""
        return await self._proactive(continuation_activity, logic, claims_identity, audience)

    async def create_conversation(
        self,
        bot_app_id: str,
        callback: Callback | None = None,
        conversation_parameters: ConversationParameters | None = None,
        channel_id: str | None = None,
        service_url: str | None = None,
        audience: str | None = None,
    ) -> list[ResourceResponse]:
        """Ask the channel for a new conversation (``POST {serviceUrl}/v3/conversations``), then run ``callback``
        as its first turn, as ``continue_conversation`` does (the new conversation's id is in the callback's
        ``turn_context.activity.conversation``). ``ProactiveTurnError`` (``conversation_not_created``) when the
        channel refuses."""
        if not service_url:
            raise TypeError("create_conversation(): service_url is required")
        if not conversation_parameters:
            raise TypeError("create_conversation(): conversation_parameters is required")
        if not callback:
            raise TypeError("create_conversation(): callback is required")
        if not channel_id:
            raise TypeError("create_conversation(): channel_id is required")
        self._check_service_url(service_url)
        try:
            created = await self._replies.create_conversation(service_url, conversation_parameters, audience)
        except ReplyError as err:
            logger.warning("the channel did not create a conversation: %s", log_text(err))
            raise ProactiveTurnError(
                CONVERSATION_NOT_CREATED, f"the channel did not create the conversation: {err}", saved=False
            ) from err
        identity = self.create_claims_identity(bot_app_id or "")
        identity.claims[AuthenticationConstants.SERVICE_URL_CLAIM] = service_url
        activity = self._create_create_activity(created, channel_id, service_url, conversation_parameters)
        return await self._proactive(activity, callback, identity, audience)

    async def _proactive(
        self, activity: Activity, logic: Callback, identity: ClaimsIdentity, audience: str | None
    ) -> list[ResourceResponse]:
        if logic is None:
            raise TypeError("a proactive turn needs a callback to run")
        missing = [
            name
            for name, value in (
                ("channel_id", activity.channel_id),
                ("service_url", activity.service_url),
                ("conversation.id", activity.conversation.id if activity.conversation else None),
            )
            if not value
        ]
        if missing:
            raise ValueError(f"the conversation reference has no {', '.join(missing)}")
        self._check_service_url(activity.service_url)
        started = time.perf_counter()
        with self._observed("proactive turn", activity) as record:
            new_context = functools.partial(self._new_context, identity=identity)
            result = await self.pipeline.run(activity, logic=logic, new_context=new_context)
            _note(record, result, 0)
            if result.outcome != TurnOutcome.OK:
                raise ProactiveTurnError(
                    result.outcome,
                    f"the proactive turn {describe(activity)} did not complete ({result.outcome}); nothing was saved "
                    "or sent",
                    saved=False,
                ) from result.error
            try:
                responses = await self._replies.deliver(result.outgoing, audience)
            except ReplyError as err:
                record.undelivered = len(result.outgoing) - err.delivered
                logger.warning(
                    "proactive turn %s: saved, but its replies were not delivered to its serviceUrl: %s",
                    describe(activity),
                    log_text(err),
                )
                raise ProactiveTurnError(
                    REPLY_NOT_DELIVERED,
                    f"the proactive turn {describe(activity)} was saved, but its replies were not delivered: {err}",
                    saved=True,
                ) from err
        _log_turn("proactive turn", activity, result, started)
        return responses

    def _check_service_url(self, service_url: str) -> None:
        problem = service_url_problem(service_url, credentials=self._policy.credentials)
        if problem:
            raise ValueError(f"the conversation's serviceUrl {problem}")


def _log_turn(kind: str, activity: Activity, result: TurnResult, started: float, answer: str = "") -> None:
    """The one INFO line of a turn: what it was, its outcome, what it sent, its attempts and time (never text)."""
    logger.info(
        "%s %s: %s, %s, %d attempt%s, %.1f ms%s",
        kind,
        describe(activity),
        result.outcome,
        _counted(result),
        result.attempts,
        "" if result.attempts == 1 else "s",
        (time.perf_counter() - started) * 1000,
        answer,
    )


def _note(record: TurnRecord, result: TurnResult, status: int) -> None:
    """What telemetry records of a turn (``hosting.telemetry``): counts and codes, nothing anybody said."""
    record.outcome = result.outcome.value  # a plain str in attributes, not the enum
    record.attempts = result.attempts
    record.conflicts = result.conflicts
    record.replies = len(result.replies)
    record.undelivered = result.undelivered
    record.status = status


def _counted(result: TurnResult) -> str:
    replies = len(result.replies)
    changes = len(result.outgoing) - replies
    text = f"{replies} repl{'y' if replies == 1 else 'ies'}"
    if changes:
        text = f"{text} and {changes} change{'' if changes == 1 else 's'}"
    return f"{text} ({result.resent} sent again)" if result.outcome == TurnOutcome.REDELIVERED else text


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
NOT_DELIVERED = RequestError(502, REPLY_NOT_DELIVERED, "the turn was saved, but its replies could not be delivered")
