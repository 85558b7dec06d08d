"""meshgate test upstream: an MCP server built on the official Python SDK (`mcp` 2.x, `MCPServer`).

Modern era (2026-07-28) by default and *only* modern: every request that is not a 2026-07-28
request (no `MCP-Protocol-Version: 2026-07-28`, i.e. an `initialize`, a session request, a GET or
DELETE) is refused the way a modern-only server refuses it (POST: HTTP 400 + JSON-RPC -32022
UnsupportedProtocolVersion naming `["2026-07-28"]`; notifications 202; GET/DELETE 405), so a legacy
client can only reach it through a translating hub. `--era dual` instead lets the SDK serve the
legacy era too (its stateful session transport), which is the SDK's own default.

Fixtures (for the four client/server pairings of issue 10):
  tools   add {a:int, b:int} -> a+b            plain call
          echo {text}                            plain call
          confirm_delete {path}                  server->client round: elicitation via Resolve/Elicit
                                                 (modern: InputRequiredResult + retry with inputResponses;
                                                 legacy: an elicitation/create request mid-call)
          touch_counter {}                       counter += 1, publishes resources/updated demo://counter
          slow_echo {text, ms}                   sleeps ms (<= 600000) then echoes; a cancelled call is
                                                 recorded (modern: the client closed the stream)
          last_cancelled {text?}                 JSON {"text", "at"} of the last cancelled slow_echo or null
  resource demo://counter                        text: the counter value
  prompt  greeting {name}

Usage: python modern_server.py --port N [--era modern|dual]
  --port 0 picks a free port. Binds 127.0.0.1 only. Prints `LISTENING http://127.0.0.1:N/mcp` on
  stdout once the socket accepts connections; diagnostics go to stderr. Exits on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import socket
import sys
import time
from typing import Annotated, Any

import anyio
import uvicorn
from pydantic import BaseModel
from starlette.types import ASGIApp, Receive, Scope, Send

from mcp.server import MCPServer
from mcp.server.mcpserver import Context, Elicit, Resolve
from mcp.server.subscriptions import InMemorySubscriptionBus

MODERN = "2026-07-28"
log = logging.getLogger("modern-server")

bus = InMemorySubscriptionBus()
mcp = MCPServer(
    "meshgate-py-modern",
    version="1.0.0",
    instructions="meshgate Python (mcp 2.x) modern test upstream.",
    subscriptions=bus,
    warn_on_duplicate_tools=False,
)
state: dict[str, Any] = {"counter": 0, "cancelled": []}


@mcp.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@mcp.tool()
def echo(text: str) -> str:
    """Echo the text back."""
    return text


class DeleteConfirmation(BaseModel):
    confirm: bool


def ask_confirmation(path: str) -> Elicit[DeleteConfirmation]:
    return Elicit(f"Really delete {path}?", DeleteConfirmation)


@mcp.tool()
def confirm_delete(path: str, answer: Annotated[DeleteConfirmation, Resolve(ask_confirmation)]) -> str:
    """Ask the user (elicitation) before 'deleting' path; returns what happened."""
    return f"deleted {path}" if answer.confirm else f"kept {path}"


@mcp.tool()
async def touch_counter(ctx: Context) -> int:
    """Increment the counter and publish notifications/resources/updated for demo://counter."""
    state["counter"] += 1
    await ctx.notify_resource_updated("demo://counter")
    return state["counter"]


@mcp.tool()
async def slow_echo(text: str, ms: int) -> str:
    """Sleep ms milliseconds, then echo text; a cancelled call is recorded (see last_cancelled)."""
    if ms < 0 or ms > 600000:
        raise ValueError("ms must be 0..600000")
    try:
        await anyio.sleep(ms / 1000)
    except anyio.get_cancelled_exc_class():
        state["cancelled"].append({"text": text, "at": time.time()})
        del state["cancelled"][:-100]
        log.info("slow_echo %r cancelled", text)
        raise
    return text


@mcp.tool()
def last_cancelled(text: str | None = None) -> str:
    """JSON of the last cancelled slow_echo call ({"text", "at"}), optionally filtered by text; or null."""
    hit = next((c for c in reversed(state["cancelled"]) if text is None or c["text"] == text), None)
    return json.dumps(hit)


@mcp.resource("demo://counter", mime_type="text/plain")
def counter() -> str:
    """The counter (touch_counter increments it)."""
    return str(state["counter"])


@mcp.prompt()
def greeting(name: str) -> str:
    """Greet someone."""
    return f"Please greet {name} warmly."


class ModernOnly:
    """ASGI gate in front of the SDK app: answer non-2026-07-28 traffic as a modern-only server."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if headers.get("mcp-protocol-version") == MODERN or scope["path"] != "/mcp":
            await self.app(scope, receive, send)
            return
        if scope["method"] in ("GET", "DELETE"):
            await _respond(send, 405, b"", [(b"allow", b"POST")])
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if len(body) > 4 * 1024 * 1024:
                await _respond(send, 413, b"")
                return
            if not msg.get("more_body"):
                break
        try:
            req = json.loads(body)
        except ValueError:
            await _respond_json(send, 400, {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error"}})
            return
        if not isinstance(req, dict) or "id" not in req:
            await _respond(send, 202, b"")
            return
        params = req.get("params") if isinstance(req.get("params"), dict) else {}
        requested = params.get("protocolVersion") or headers.get("mcp-protocol-version") or "2025-03-26"
        await _respond_json(
            send,
            400,
            {
                "jsonrpc": "2.0",
                "id": req["id"],
                "error": {
                    "code": -32022,
                    "message": f"Unsupported protocol version {requested}; this server speaks only {MODERN}",
                    "data": {"supported": [MODERN], "requested": requested},
                },
            },
        )


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers or []})
    await send({"type": "http.response.body", "body": body})


async def _respond_json(send: Send, status: int, doc: dict[str, Any]) -> None:
    await _respond(send, status, json.dumps(doc).encode(), [(b"content-type", b"application/json")])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--era", choices=["modern", "dual"], default="modern")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="[py-modern] %(message)s")

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    port = sock.getsockname()[1]
    app: ASGIApp = mcp.streamable_http_app(host="127.0.0.1")
    if args.era == "modern":
        app = ModernOnly(app)
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]

    def stop(*_: Any) -> None:
        server.should_exit = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        with anyio.fail_after(15):
            while not server.started:
                await anyio.sleep(0.02)
        print(f"LISTENING http://127.0.0.1:{port}/mcp", flush=True)
        log.info("listening on 127.0.0.1:%d (era %s)", port, args.era)


if __name__ == "__main__":
    anyio.run(main)
