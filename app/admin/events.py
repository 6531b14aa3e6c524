"""Events to the operator's platform with their delivery state, and their replay."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from app.admin.actions import Action
from app.admin.pages import Visit, operation_of, screen
from app.payments import events
from app.web.errors import NotFound

LIST = operation_of(events.routes, events.list_events)
REPLAY = operation_of(events.routes, events.replay_event)


@screen(LIST, "events.html")
async def listing(v: Visit) -> Response:
    page = await events.list_events(v.call, v.query(events.EventQuery))
    return v.render(
        "events.html",
        rows=page.data,
        next_link=v.next_page(page.next_cursor),
        statuses=events.EVENT_STATUSES,
        may_replay=v.can(REPLAY),
    )


async def _load(v: Visit, params: dict[str, str]) -> dict[str, Any]:
    row = await v.call.conn.fetchrow(*v.w.queries.event_by_id(id=params["event_id"]))
    if row is None:
        raise NotFound(f"event {params['event_id']!r} not found")
    event = events.OperatorEvent.of(row)
    return {
        "item": {
            "Event": event.id,
            "Type": event.type,
            "Payment": event.payment_id,
            "Status": event.status,
            "Attempts": str(event.attempts),
            "Replays": str(event.replays),
            "Last error": event.last_error or "",
        },
        "back": "/events",
    }


replay = Action(
    "replay",
    REPLAY,
    events.replay_event,
    "confirm.html",
    _load,
    lambda params: "/events",
    title="Replay this event",
    effect="The event is queued for delivery to the operator's platform again, marked "
    "X-Wallet-Replay: true. The platform should deduplicate it by its id.",
)
