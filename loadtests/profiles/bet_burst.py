"""bet-burst: many players, each playing bet-then-result rounds as fast as the ramp allows."""

from __future__ import annotations

import random
import secrets
import time
from typing import Any

from locust import FastHttpUser, task

from app.client import open_answer, seal_event
from loadtests.config import LoadConfig

CONFIG = LoadConfig.from_env()


class SeamlessUser(FastHttpUser):
    """Speaks the encrypted contract; counts any code but R0 (or an expected R4) as a failure."""

    abstract = True
    expect_r4 = False

    def send(self, name: str, **fields: Any) -> dict[str, Any] | None:
        event = {
            "event": name,
            "request_id": "lt-" + secrets.token_hex(8),
            "timestamp": int(time.time()),
            **fields,
        }
        body = seal_event(self.key, CONFIG.provider, event)
        headers = {"content-type": "application/json"}
        if CONFIG.key_id:
            headers["x-key-id"] = CONFIG.key_id
        with self.client.post(
            f"/v1/seamless/{CONFIG.provider}",
            data=body,
            headers=headers,
            name=name,
            catch_response=True,
        ) as response:
            if response.status_code != 200 or response.content is None:
                response.failure(f"HTTP {response.status_code}")
                return None
            answer = open_answer(self.key, CONFIG.provider, response.content)
            code = answer.get("code")
            if code == "R0" or (code == "R4" and self.expect_r4):
                response.success()
            else:
                response.failure(f"{code} {answer.get('reason')}")
            return answer

    def on_start(self) -> None:
        import base64

        self.key = base64.b64decode(CONFIG.key)
        self.player = random.choice(CONFIG.players)


class BetBurst(SeamlessUser):
    @task
    def round(self) -> None:
        round_id = "rd-" + secrets.token_hex(6)
        player = self.player
        self.send(
            "bet",
            player_id=player["player_id"],
            session_token=player["session_token"],
            transaction_id="b-" + secrets.token_hex(8),
            round_id=round_id,
            game_id="load-slot",
            amount=CONFIG.bet_amount,
            currency=CONFIG.currency,
        )
        self.send(
            "result",
            player_id=player["player_id"],
            transaction_id="w-" + secrets.token_hex(8),
            round_id=round_id,
            game_id="load-slot",
            amount=random.choice((0, 0, CONFIG.bet_amount * 2)),
            currency=CONFIG.currency,
        )
