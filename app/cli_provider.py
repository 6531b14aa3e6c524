"""The provider's side of the command line: ``wallet send`` (seal an event, post it, open the
answer) and ``wallet open`` (decrypt a sealed body printed by curl).

The provider key is secret: read from ``WALLET_PROVIDER_KEY`` or ``--key-file`` (``-`` for
stdin), never needed on argv, where every user of the machine sees it in ``ps``. ``--key`` still
works, with a warning.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import os
import stat
import sys
from functools import cache
from pathlib import Path
from typing import Any

import orjson

from app import cli_output, logs
from app.client import ProviderClient, open_answer
from app.config import Settings
from app.seamless.envelope import KEY_BYTES, EnvelopeError
from app.seamless.events import MODELS

KEY_ENV = "WALLET_PROVIDER_KEY"


def add_key_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--provider", required=True, help="the provider's code")
    parser.add_argument(
        "--key-file",
        metavar="PATH",
        help=f"a file holding the provider key, base64 (chmod 600); - reads stdin. "
        f"Default: the environment variable {KEY_ENV}",
    )
    parser.add_argument(
        "--key", help="the provider key, base64 (discouraged: other users see it in ps)"
    )


def provider_key(args: argparse.Namespace) -> bytes:
    """The key from ``--key-file``, ``--key`` or ``WALLET_PROVIDER_KEY``, in that order."""
    if args.key_file is not None:
        source = "standard input" if args.key_file == "-" else args.key_file
        text = sys.stdin.read() if args.key_file == "-" else _read_key_file(Path(args.key_file))
    elif args.key is not None:
        print(
            f"warning: --key is visible to other users in the process list; "
            f"use {KEY_ENV} or --key-file",
            file=sys.stderr,
        )
        source, text = "--key", args.key
    elif os.environ.get(KEY_ENV):
        source, text = KEY_ENV, os.environ[KEY_ENV]
    else:
        raise SystemExit(f"error: give the provider key in {KEY_ENV} or with --key-file PATH")
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise SystemExit(f"error: {source} does not hold a provider key (base64 of 32 bytes)")
    logs.register_secret_bytes(key)
    return key


def _read_key_file(path: Path) -> str:
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        print(f"warning: {path} is readable by others; chmod 600 it", file=sys.stderr)
    return path.read_text()


# --- wallet send ---------------------------------------------------------------------------------


@cache
def field_types(event: str) -> dict[str, str]:
    """The JSON type of each field of ``event`` (``integer``, ``boolean``, ``string``), read off
    the event's model: a value on the command line gets the type its field has, whatever it
    looks like (``transaction_id=1001`` stays a string)."""
    properties = MODELS[event].model_json_schema()["properties"]
    types = {}
    for name, schema in properties.items():
        options = schema.get("anyOf", [schema])
        kinds = [o["type"] for o in options if o.get("type") not in (None, "null")]
        types[name] = kinds[0] if kinds else "string"
    return types


def event_fields(event: str, items: list[str]) -> dict[str, Any]:
    """``name=value`` typed by the event's model, ``name:=json`` as given (any field, any JSON:
    to send what the model would refuse, or a field it does not know)."""
    if event not in MODELS:
        raise SystemExit(f"error: unknown event {event!r}: one of {', '.join(MODELS)}")
    types = field_types(event)
    fields: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.rstrip(":"):
            raise SystemExit(f"error: fields are name=value or name:=json, got {item!r}")
        if name.endswith(":"):
            try:
                fields[name[:-1]] = orjson.loads(value)
            except orjson.JSONDecodeError:
                raise SystemExit(f"error: {name[:-1]}: not JSON: {value!r}") from None
            continue
        if name not in types:
            raise SystemExit(
                f"error: {event} has no field {name!r} (fields: {', '.join(types)}); "
                f"{name}:=JSON sends it anyway"
            )
        fields[name] = _typed(name, types[name], value)
    return fields


def _typed(name: str, kind: str, value: str) -> Any:
    if kind == "integer":
        try:
            return int(value)
        except ValueError:
            raise SystemExit(f"error: {name}: must be an integer, got {value!r}") from None
    if kind == "boolean":
        if value not in ("true", "false"):
            raise SystemExit(f"error: {name}: must be true or false, got {value!r}")
        return value == "true"
    return value


def cmd_send(settings: Settings, args: argparse.Namespace) -> int:
    fields = event_fields(args.event, args.fields)
    key = provider_key(args)

    async def send() -> dict[str, Any]:
        client = ProviderClient(args.url, args.provider, key, key_id=args.key_id)
        try:
            return await client.send(args.event, **fields)
        finally:
            await client.aclose()

    cli_output.show(asyncio.run(send()), args)
    return 0


# --- wallet open ---------------------------------------------------------------------------------


def cmd_open(settings: Settings, args: argparse.Namespace) -> int:
    if args.body == "-" and args.key_file == "-":
        raise SystemExit("error: the body and the key cannot both come from standard input")
    key = provider_key(args)
    text = (sys.stdin.read() if args.body == "-" else args.body).strip()
    # curl prints the JSON wrapper; a bare payload (copied out of it) opens too.
    body = text.encode() if text.startswith("{") else orjson.dumps({"payload": text})
    try:
        opened = open_answer(key, args.provider, body)
    except EnvelopeError as exc:
        raise SystemExit(f"error: {exc} (provider {args.provider})") from None
    cli_output.show(opened, args)
    return 0


def add_parsers(sub: Any) -> None:
    """``wallet send`` and ``wallet open`` on the command's subparsers."""
    send = sub.add_parser(
        "send",
        help="send one seamless event as a provider would",
        description=f"Seal one event with the provider key ({KEY_ENV} or --key-file), post it "
        "and print the opened answer. Each field's type is the event's: name=value for "
        "the documented fields, name:=JSON for any JSON (httpie's syntax).",
    )
    send.add_argument("--url", default="http://127.0.0.1:8080", help="the wallet's base URL")
    add_key_flags(send)
    send.add_argument("--key-id", help="sent as X-Key-Id")
    send.add_argument("event", help=f"one of {', '.join(MODELS)}")
    send.add_argument(
        "fields",
        nargs="*",
        metavar="FIELD",
        help="name=value, typed as the event declares the field; name:=JSON as given",
    )
    send.set_defaults(run=cmd_send)

    opened = sub.add_parser(
        "open",
        help="decrypt a sealed answer or request",
        description="Print the JSON inside a sealed body (as curl printed it, or its bare "
        f"payload), opened with the provider key ({KEY_ENV} or --key-file).",
    )
    add_key_flags(opened)
    opened.add_argument(
        "body", nargs="?", default="-", help='{"payload": ...} or the payload; - reads stdin'
    )
    opened.set_defaults(run=cmd_open)
