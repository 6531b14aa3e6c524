"""A provider-side client of the seamless webhook: builds envelopes, sends events, opens answers.

Used by the tests, the load tests and integrators who want a reference implementation::

    client = ProviderClient("http://127.0.0.1:8080", "acme", key_b64, key_id="k_1a2b")
    answer = await client.send("bet", player_id="p1", session_token=token,
                               transaction_id="t1", round_id="r1", game_id="g1",
                               amount=100, currency="EUR")
    answer["code"]  # "R0"
"""

from __future__ import annotations

import base64
import secrets
import time
from typing import Any

import httpx
import orjson

from app.seamless import envelope


def seal_event(key: bytes, provider: str, event: dict[str, Any]) -> bytes:
    """The HTTP body for ``event``: ``{"payload": base64(nonce || ciphertext || tag)}``."""
    payload = envelope.seal(key, provider, orjson.dumps(event))
    return orjson.dumps({"payload": payload})


def open_answer(key: bytes, provider: str, body: bytes) -> dict[str, Any]:
    """The response object of a webhook answer: decrypted, or as is when sent plain (R2)."""
    wrapper = orjson.loads(body)
    if "payload" not in wrapper:
        return dict(wrapper)
    raw = envelope.decode(wrapper["payload"])
    plaintext = envelope.open_with(key, provider, raw)
    if plaintext is None:
        raise envelope.EnvelopeError("the answer does not open with this key")
    answer: dict[str, Any] = orjson.loads(plaintext)
    return answer


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(8)}"


class ProviderClient:
    """Sends seamless events for one provider over HTTP (or any httpx transport)."""

    def __init__(
        self,
        base_url: str,
        provider: str,
        key: bytes | str,
        *,
        key_id: str | None = None,
        http: httpx.AsyncClient | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.provider = provider
        self.key = base64.b64decode(key) if isinstance(key, str) else key
        self.key_id = key_id
        self._own_http = http is None
        self.http = http or httpx.AsyncClient(base_url=base_url, timeout=timeout)
        self.path = f"/v1/seamless/{provider}"

    def event(self, name: str, **fields: Any) -> dict[str, Any]:
        """An event object with a fresh request_id and the current timestamp filled in."""
        event = {"event": name, "request_id": new_id("req"), "timestamp": int(time.time())}
        event.update(fields)
        return event

    async def send(self, name: str, **fields: Any) -> dict[str, Any]:
        """Build, seal and send one event; the decrypted answer."""
        return await self.send_event(self.event(name, **fields))

    async def send_event(self, event: dict[str, Any]) -> dict[str, Any]:
        """Seal and send a complete event object (e.g. to resend one identically)."""
        return await self.post(seal_event(self.key, self.provider, event))

    async def post(self, body: bytes) -> dict[str, Any]:
        """Send a ready body as is (a resend of identical bytes, or a hostile one in tests)."""
        headers = {"content-type": "application/json"}
        if self.key_id is not None:
            headers["x-key-id"] = self.key_id
        response = await self.http.post(self.path, content=body, headers=headers)
        response.raise_for_status()
        return open_answer(self.key, self.provider, response.content)

    async def aclose(self) -> None:
        if self._own_http:
            await self.http.aclose()
