"""GET /v1/players/{player_id}/sessions: a player's sessions, newest first, paged, never a token."""

from __future__ import annotations

from tests.fixtures.app import Operator


async def test_sessions_are_listed_newest_first_without_their_tokens(operator: Operator) -> None:
    provider = (await operator.provider())["code"]
    player = await operator.player()
    tokens = [await operator.session(player, provider, game_id=f"game-{n}") for n in range(3)]
    first = await operator.call("GET", f"/v1/players/{player}/sessions?limit=2", expect=200)
    assert [s["game_id"] for s in first["data"]] == ["game-2", "game-1"]
    assert {s["state"] for s in first["data"]} == {"active"}
    assert set(first["data"][0]) == {
        "provider",
        "game_id",
        "created_at",
        "expires_at",
        "ended_at",
        "state",
    }
    rest = await operator.call(
        "GET", f"/v1/players/{player}/sessions?limit=2&cursor={first['next_cursor']}", expect=200
    )
    assert [s["game_id"] for s in rest["data"]] == ["game-0"] and rest["next_cursor"] is None
    shown = str(first) + str(rest)
    assert not any(token in shown for token in tokens)


async def test_sessions_of_an_unknown_player_or_with_a_bad_cursor_are_refused(
    operator: Operator,
) -> None:
    missing = await operator.call("GET", "/v1/players/nobody-here/sessions", expect=404)
    assert missing["error"]["code"] == "resource_not_found"
    player = await operator.player()
    bad = await operator.call("GET", f"/v1/players/{player}/sessions?cursor=xyz", expect=400)
    assert bad["error"]["field"] == "cursor"
