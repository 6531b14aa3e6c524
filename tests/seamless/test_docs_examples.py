"""docs/seamless.md quotes the examples and test vectors of /openapi.json, so the two cannot drift.

The examples are declared once, in :mod:`app.openapi` (sealed there for real); the prose copies
them for people and integrators, and these tests fail when a copy differs from the document.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import orjson

from app import aead, openapi
from app.seamless import endpoints, envelope

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "seamless.md"
CLIENTS = ROOT / "docs" / "clients"
SAMPLES = ("envelope.js", "Envelope.java", "envelope.go", "envelope.php")
REQUEST_FIELDS = ("key", "nonce", "plaintext", "payload")
ANSWER_FIELDS = ("plaintext", "payload")


def section(heading: str) -> str:
    """The text of a ``###`` section of docs/seamless.md, up to the next heading."""
    text = DOC.read_text()
    start = text.index(f"\n### {heading}\n")
    end = re.compile(r"\n##+ ").search(text, start + 1)
    return text[start : end.start() if end else len(text)]


def fenced(text: str) -> list[str]:
    """The contents of the fenced code blocks of ``text``, in order."""
    return re.findall(r"^```[a-z]*\n(.*?)^```$", text, flags=re.S | re.M)


def json_objects(block: str) -> list[dict[str, Any]]:
    """Every JSON object of a block, each possibly over several lines."""
    decoder = json.JSONDecoder()
    objects, at = [], 0
    while (at := _skip_space(block, at)) < len(block):
        obj, at = decoder.raw_decode(block, at)
        objects.append(obj)
    return objects


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at].isspace():
        at += 1
    return at


def webhook_examples() -> tuple[dict[str, Any], dict[str, Any]]:
    """(request examples, answer examples) of the seamless webhook in the OpenAPI document."""
    operation = openapi.document()["paths"][endpoints.ROUTE]["post"]
    requests = operation["requestBody"]["content"]["application/json"]["examples"]
    answers = operation["responses"]["200"]["content"]["application/json"]["examples"]
    return requests, answers


def vectors() -> list[dict[str, str]]:
    """The published test vectors, as docs/seamless.md lists them (``name value`` lines)."""
    blocks = fenced(section("Test vectors"))
    return [dict(line.split(None, 1) for line in block.splitlines()) for block in blocks]


def test_the_docs_examples_are_the_openapi_examples() -> None:
    events, answers = (json_objects(block) for block in fenced(section("Examples")))
    requests, sealed_answers = webhook_examples()
    assert events == [example["x-decrypted"] for example in requests.values()]
    assert answers == [
        example["x-decrypted"] for example in sealed_answers.values() if "x-decrypted" in example
    ]
    assert [event["event"] for event in events] == list(requests)


def test_the_response_object_example_is_the_bets_answer() -> None:
    (shown,) = json_objects(fenced(DOC.read_text().split("\n## Response object\n")[1])[0])
    assert shown == webhook_examples()[1]["bet"]["x-decrypted"]


def test_the_test_vectors_are_the_openapi_bet_and_its_answer() -> None:
    request, answer = vectors()
    requests, answers = webhook_examples()
    for vector, example in ((request, requests["bet"]), (answer, answers["bet"])):
        key = bytes.fromhex(vector["key"])
        assert vector["provider"] == openapi.EXAMPLE_PROVIDER
        assert key == openapi.EXAMPLE_KEY == base64.b64decode(vector["key_base64"])
        assert vector["payload"] == example["value"]["payload"]
        raw = envelope.decode(vector["payload"])
        assert raw[: aead.NONCE_BYTES] == bytes.fromhex(vector["nonce"])
        plaintext = envelope.open_with(key, vector["provider"], raw)
        assert plaintext == vector["plaintext"].encode() == orjson.dumps(example["x-decrypted"])
    # The published key is the one the document names (in base64) for its examples.
    description = openapi.document()["paths"][endpoints.ROUTE]["post"]["description"]
    assert request["key_base64"] in description


def test_every_client_sample_carries_the_published_vectors() -> None:
    for name in SAMPLES:
        source = (CLIENTS / name).read_text().replace('\\"', '"')
        request, answer = vectors()
        # Each seals the request with its nonce, and opens the answer (its nonce is inside).
        for vector, fields in ((request, REQUEST_FIELDS), (answer, ANSWER_FIELDS)):
            for field in fields:
                assert vector[field] in source, (name, field)
        assert f"(clients/{name})" in DOC.read_text(), f"{name} is linked from docs/seamless.md"
