"""
``wsapp-client`` subcommands: ``publish``, ``presence`` and ``info`` against the HTTP API,
``subscribe`` to a channel over a WebSocket.

The API's URL comes from ``--api`` or ``WSAPP_API_URL`` (default
``http://127.0.0.1:8000/api/``), its key from ``--api-key`` or ``WSAPP_API_KEY`` (the
environment keeps it out of the process list). Answers and publications are printed as
JSON, one a line; failures are one line on standard error and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from ..channels import Position
from ..exceptions import ClientError, MessageError
from .client import Client

__all__ = ["COMMANDS", "main"]

COMMANDS = ("publish", "presence", "info", "subscribe")
DEFAULT_API = "http://127.0.0.1:8000/api/"


def _since(text: str) -> Position:
    offset, colon, epoch = text.partition(":")
    if not colon or not offset.isdigit() or not epoch:
        raise argparse.ArgumentTypeError(f"expected OFFSET:EPOCH, e.g. 42:a1b2c3d4, got {text!r}")
    return Position(int(offset), epoch)


def parse_args(prog: str, argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description="Use wsapp's HTTP API and channels.")
    commands = parser.add_subparsers(dest="command", required=True)
    api = argparse.ArgumentParser(add_help=False)
    api.add_argument(
        "--api",
        default=os.environ.get("WSAPP_API_URL", DEFAULT_API),
        help=f"the API's URL [default: $WSAPP_API_URL or {DEFAULT_API}]",
    )
    api.add_argument(
        "--api-key",
        default=os.environ.get("WSAPP_API_KEY"),
        help="the API key [default: $WSAPP_API_KEY]",
    )
    api.add_argument("--timeout", type=float, default=10, help="seconds to wait for the answer")
    publish = commands.add_parser("publish", parents=[api], help="publish JSON to a channel")
    publish.add_argument("channel")
    publish.add_argument("json", help="the publication's data, as JSON")
    publish.add_argument("--idempotency-key", help="publish once per key (within the window)")
    presence = commands.add_parser("presence", parents=[api], help="list a channel's presence")
    presence.add_argument("channel")
    commands.add_parser("info", parents=[api], help="every process's connections and uptime")
    subscribe = commands.add_parser("subscribe", help="print a channel's publications")
    subscribe.add_argument("url", help="the channels app's URL, e.g. ws://127.0.0.1:8000/channels")
    subscribe.add_argument("channel")
    subscribe.add_argument(
        "--since",
        type=_since,
        metavar="OFFSET:EPOCH",
        help="first print what was published after this position",
    )
    subscribe.add_argument("--timeout", type=float, default=10, help="seconds to connect")
    args = parser.parse_args(argv)  # fmt: skip
    if args.command != "subscribe" and not args.api_key:
        parser.error("no API key: pass --api-key or set WSAPP_API_KEY")
    if args.command == "publish":
        try:
            args.data = json.loads(args.json)
        except ValueError as error:
            parser.error(f"JSON: {error}")
    if args.command == "subscribe" and not args.url.startswith(("ws://", "wss://")):
        parser.error(f"URL must start with ws:// or wss://, not {args.url!r}")
    return args


def main(prog: str, argv: Sequence[str]) -> int:
    """Run one subcommand; return the exit status."""
    args = parse_args(prog, argv)
    try:
        if args.command == "subscribe":
            return _subscribe(args)
        with Client(args.api, args.api_key, timeout=args.timeout) as client:
            if args.command == "publish":
                extra = {"idempotency_key": args.idempotency_key} if args.idempotency_key else {}
                answer = client.publish(args.channel, args.data, **extra)
            elif args.command == "presence":
                answer = client.presence(args.channel)
            else:
                answer = client.info()
        _print(answer)
        return 0
    except (ClientError, MessageError, OSError, ValueError) as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _subscribe(args: argparse.Namespace) -> int:
    from ..client.sync import connect

    request: dict[str, Any] = {"action": "subscribe", "channel": args.channel}
    if args.since is not None:
        request["since"] = args.since.as_dict()
    with connect(args.url, timeout=args.timeout) as ws:
        reply = ws.request(request, timeout=args.timeout)
        if reply.get("type") == "error":
            raise MessageError(reply.get("error", ""), reply.get("detail", ""))
        for item in reply.get("publications", []):
            _print({"type": "publication", "channel": args.channel, **item})
        if args.since is not None and not reply.get("recovered"):
            print(f"not recovered: now at {reply['offset']}:{reply['epoch']}", file=sys.stderr)
        for message in ws:
            if not isinstance(message, dict) or message.get("channel") != args.channel:
                continue
            if message.get("type") == "publication":
                _print(message)
            elif message.get("type") == "unrecovered":
                where = f"{message.get('offset')}:{message.get('epoch')}"
                print(f"publications up to {where} were lost", file=sys.stderr, flush=True)
    closed = ws.close_error
    return 0 if closed.code in (1000, 1001) else 1


def _print(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False, separators=(",", ":")), flush=True)
