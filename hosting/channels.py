"""What Microsoft Teams adds to an activity, settled before the bot sees it: the bot's own @mention, and the tenant.

* In a group chat or a channel Teams delivers only messages that @mention the bot, with ``<at>Bot name</at>`` in
  the text and a ``mention`` entity naming the bot; in a personal chat a user may add one too. A bot that reads
  the text as it comes stores ``<at>State Bot</at> Tessa`` as a name. ``strip_own_mentions`` removes every
  mention of the recipient (the bot) from the text, in every scope, before the turn runs; mentions of other
  people stay. (botbuilder's ``TurnContext.remove_recipient_mention`` uses the mentioned name as a regular
  expression and removes it anywhere in the text: a name like ``A.*`` removes everything.)
* ``ALLOWED_TENANTS`` (``HostSettings.allowed_tenants``): an activity that names a tenant
  (``channelData.tenant.id`` or ``conversation.tenantId``), and any activity from Teams, must come from one of
  them; ``tenant_problem`` says why one does not, and the adapter answers 403 before anything is read or stored.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from botbuilder.schema import Activity

TEAMS = "msteams"


def strip_own_mentions(activity: Activity) -> None:
    """Remove from ``activity.text`` every mention of the recipient that its ``mention`` entities announce."""
    if not activity.text or not activity.entities or activity.recipient is None:
        return
    text = activity.text
    for entity in activity.entities:
        if (getattr(entity, "type", None) or "").lower() != "mention":
            continue
        properties: dict[str, Any] = getattr(entity, "additional_properties", None) or {}
        mentioned = properties.get("mentioned")
        if not isinstance(mentioned, dict) or mentioned.get("id") != activity.recipient.id:
            continue
        written = properties.get("text")
        if not isinstance(written, str) or not written:
            name = mentioned.get("name")
            written = f"<at>{name}</at>" if isinstance(name, str) and name else ""
        if written:
            text = _without_once(text, written)
    if text != activity.text:
        activity.text = text.strip()


def _without_once(text: str, part: str) -> str:
    """``text`` without its first ``part``, and one space next to it (``"Hi <at>Bot</at> there"`` -> ``"Hi there"``)."""
    for variant in (f"{part} ", f" {part}", part):
        if variant in text:
            return text.replace(variant, "", 1)
    return text


def tenant_of(activity: Activity) -> str | None:
    """The tenant the activity names: ``channelData.tenant.id``, else the conversation's ``tenantId``."""
    channel_data = activity.channel_data
    if isinstance(channel_data, dict):
        tenant = channel_data.get("tenant")
        if isinstance(tenant, dict) and isinstance(tenant.get("id"), str) and tenant["id"]:
            return tenant["id"]
    conversation = activity.conversation
    extra = getattr(conversation, "additional_properties", None) or {}
    # The schema names it "tenantID"; Teams sends "tenantId", which the schema keeps among additional properties.
    for tenant_id in (getattr(conversation, "tenant_id", None), extra.get("tenantId")):
        if isinstance(tenant_id, str) and tenant_id:
            return tenant_id
    return None


def tenant_problem(activity: Activity, allowed: Collection[str]) -> str | None:
    """Why ``activity`` is refused under the allow-list ``allowed`` (lower-case tenant ids; empty: any), or None."""
    if not allowed:
        return None
    tenant = tenant_of(activity)
    if tenant is None:
        if activity.channel_id == TEAMS:
            return "this bot serves chosen Teams tenants only, and the activity names none"
        return None
    if tenant.lower() not in allowed:
        return "the activity's tenant is not one this bot serves"
    return None
