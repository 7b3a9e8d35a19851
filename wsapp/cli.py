"""
The command-line client: ``python -m wsapp.client URL`` or ``wsapp-client URL``.

It prints every incoming message on its own line and sends each line typed on standard
input as a text message, until end of input or until the server closes. ``--send JSON``
sends one message, prints the reply and exits. Failures print one line to standard error
and exit with status 1; usage errors exit with status 2.

``publish CHANNEL JSON``, ``presence CHANNEL``, ``info`` (the HTTP API) and ``subscribe
URL CHANNEL [--since OFFSET:EPOCH]`` are subcommands (:mod:`wsapp.api.cli`).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Sequence
from typing import Any, TextIO

from .api.cli import COMMANDS
from .api.cli import main as api_main
from .client.sync import Connection, connect
from .exceptions import ClientError, MessageError

__all__ = ["main"]

PROG = "wsapp-client"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Talk to a WebSocket server: print what arrives, send what you type."
    )
    parser.add_argument("url", help="ws:// or wss:// URL, e.g. ws://127.0.0.1:8000/counter")
    parser.add_argument(
        "--send",
        metavar="JSON",
        help="send this one message, print the first reply and exit; a JSON object gets an "
        '"id" (unless it has one) and its reply is the message echoing that id',
    )
    parser.add_argument(
        "--timeout", type=float, default=10, help="seconds to wait to connect or for the reply"
    )
    parser.add_argument(
        "--no-compression", action="store_true", help="do not offer permessage-deflate"
    )
    parser.add_argument(
        "--cafile", help="PEM file of the certificate authorities to trust for wss:// URLs"
    )
    args = parser.parse_args(argv)
    if not args.url.startswith(("ws://", "wss://")):
        parser.error(f"URL must start with ws:// or wss://, not {args.url!r}")
    if args.send is not None:
        try:
            args.message = json.loads(args.send)
        except ValueError as error:
            parser.error(f"--send takes JSON: {error}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the client; return the process exit status."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments and arguments[0] in COMMANDS:
        return api_main(PROG, arguments)
    args = parse_args(argv)
    try:
        tls = _trust_root(args.cafile) if args.cafile else None
        with connect(
            args.url, timeout=args.timeout, compression=not args.no_compression, tls=tls
        ) as ws:
            if args.send is not None:
                _print(_send_one(ws, args.message, args.timeout), sys.stdout)
                return 0
            return _interactive(ws)
    except (ClientError, MessageError) as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _send_one(ws: Connection, message: Any, timeout: float) -> Any:
    if isinstance(message, dict):
        return ws.request(message, timeout=timeout)
    ws.send(message)
    return ws.recv(timeout=timeout)


def _interactive(ws: Connection) -> int:
    done = threading.Event()
    input_ended = threading.Event()

    def print_incoming() -> None:
        for message in ws:
            _print(message, sys.stdout)
        done.set()

    def send_typed() -> None:
        for line in sys.stdin:
            if line.strip() and not ws.closed:
                ws.send(line.rstrip("\r\n"))
        input_ended.set()
        done.set()

    printer = threading.Thread(target=print_incoming, daemon=True)
    printer.start()
    threading.Thread(target=send_typed, daemon=True).start()
    done.wait()
    if input_ended.is_set():
        ws.close()
        printer.join(5)
        return 0
    closed = ws.close_error
    if closed.code in (1000, 1001):
        return 0
    print(f"{PROG}: {closed}", file=sys.stderr)
    return 1


def _print(message: Any, out: TextIO) -> None:
    if isinstance(message, bytes):
        more = "..." if len(message) > 64 else ""
        text = f"<{len(message)} bytes binary: {message[:64].hex()}{more}>"
    elif isinstance(message, str):
        text = message
    else:
        text = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
    print(text, file=out, flush=True)


def _trust_root(cafile: str) -> Any:
    from cryptography import x509

    from .tls import CAFile

    try:
        with open(cafile, "rb") as pem:
            x509.load_pem_x509_certificates(pem.read())
    except OSError as error:
        raise OSError(f"cannot read --cafile {cafile}: {error.strerror}") from None
    except ValueError:
        raise ValueError(f"--cafile {cafile} holds no PEM certificate") from None
    return CAFile(cafile)
