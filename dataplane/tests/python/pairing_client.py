"""Pairing client for issue 10, Python side: the official Python SDK client (`mcp` 2.x `Client`).

Usage: python pairing_client.py --url URL --target everything|py-modern
                                [--mode legacy|auto|2026-07-28] [--timeout-s 60] [--wire]
  --mode legacy      initialize handshake + session (the legacy-era pairing)
  --mode 2026-07-28  modern era adopted directly, no probe, no fallback (the modern-era pairing; default)
  --mode auto        server/discover probe, falls back to initialize on anything but modern evidence
  --target names the upstream behind URL (directly or through the hub, prefixing off) and fixes
  the check list; the checks mirror dataplane/tests/node/pairing-client.mjs:
    everything: connect, lists, call (echo), server-to-client request (trigger-sampling-request ->
      our sampling callback), subscription update (resources/subscribe + toggle-subscriber-updates),
      cancellation (trigger-long-running-operation cancelled; the session keeps working).
    py-modern: connect, lists, call (add), server-to-client request (confirm_delete: elicitation,
      MRTR in the modern era), subscription update (legacy: resources/subscribe; modern:
      subscriptions/listen) after touch_counter, cancellation (slow_echo cancelled; last_cancelled
      shows the server saw it).
  --wire logs each POST's JSON-RPC method, MCP headers and params._meta to stderr.
Prints `ok - <check>` / `not ok - <check>: reason` and finally exactly `N passed, M failed`; exits 1
on any failure (2 on usage errors). Every wait is bounded; the whole run by --timeout-s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import anyio
import httpx2
import mcp_types as types

from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

REQ_S = 10.0
CANNED = f"canned-sampling-{os.getpid()}"


class Run:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0
        self.connected = False

    async def check(self, name: str, fn: Callable[[], Awaitable[None]], timeout_s: float = 15.0) -> None:
        try:
            if not self.connected and name != "connect":
                raise RuntimeError("not connected")
            with anyio.fail_after(timeout_s):
                await fn()
            self.passed += 1
            print(f"ok - {name}", flush=True)
        except Exception as e:  # a failed check is reported, never raised
            self.failed += 1
            msg = " ".join(f"{type(e).__name__}: {e}".split())[:400]
            print(f"not ok - {name}: {msg}", flush=True)


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


def need(cond: bool, msg: str) -> None:
    if not cond:
        raise AssertionError(msg)


async def main() -> int:
    p = argparse.ArgumentParser(description="meshgate Python pairing client")
    p.add_argument("--url", required=True)
    p.add_argument("--target", required=True, choices=["everything", "py-modern"])
    p.add_argument("--mode", default="2026-07-28", choices=["legacy", "auto", "2026-07-28"])
    p.add_argument("--timeout-s", type=float, default=60.0)
    p.add_argument("--wire", action="store_true")
    a = p.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning, module="mcp")  # MCPDeprecationWarning on legacy-era calls
    run = Run()
    calls = {"sampling": 0, "elicitation": 0}
    updates: list[str] = []

    async def on_request(request: httpx2.Request) -> None:
        if request.method != "POST" or not a.wire:
            return
        try:
            msg = json.loads(request.content)
        except ValueError:
            msg = {}
        hdrs = {k: v for k, v in request.headers.items() if k.lower().startswith("mcp-")}
        meta = (msg.get("params") or {}).get("_meta") if isinstance(msg, dict) else None
        print(f"[wire] {json.dumps({'method': msg.get('method'), 'headers': hdrs, 'meta': meta})}", file=sys.stderr)

    async def sampling(_ctx: Any, _params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        calls["sampling"] += 1
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text=CANNED), model="canned", stop_reason="endTurn"
        )

    async def elicitation(_ctx: Any, _params: types.ElicitRequestParams) -> types.ElicitResult:
        calls["elicitation"] += 1
        return types.ElicitResult(action="accept", content={"confirm": True})

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ServerNotification) and isinstance(message, types.ResourceUpdatedNotification):
            updates.append(str(message.params.uri))
        elif isinstance(getattr(message, "root", None), types.ResourceUpdatedNotification):
            updates.append(str(message.root.params.uri))

    http = create_mcp_http_client()
    http.event_hooks["request"] = [on_request]
    client = Client(
        streamable_http_client(a.url, http_client=http),
        mode=a.mode,
        sampling_callback=sampling,
        elicitation_callback=elicitation,
        message_handler=on_message,
        read_timeout_seconds=REQ_S,
        cache=None,
        client_info=types.Implementation(name="meshgate-pairing-py", version="1.0.0"),
    )
    want_era = "modern" if a.mode == "2026-07-28" or (a.mode == "auto" and a.target == "py-modern") else "legacy"

    with anyio.move_on_after(a.timeout_s) as hard:
        # The client's context (its task group) must not be entered inside a shorter-lived cancel
        # scope, so connect is checked here rather than through run.check; read_timeout_seconds
        # bounds the handshake.
        connect_error: str | None = None
        try:
            async with client:
                run.connected = True

                async def connect() -> None:
                    v = client.protocol_version
                    need(
                        (v == "2026-07-28") if want_era == "modern" else v.startswith("2025-"),
                        f"negotiated {v}, expected the {want_era} era",
                    )
                    if a.mode != "2026-07-28":  # a pinned client adopts a synthesized discover: no serverInfo
                        need(client.server_info is not None and bool(client.server_info.name), "no serverInfo")

                await run.check("connect", connect)
                if a.target == "everything":
                    await everything_checks(run, client, calls, updates)
                else:
                    await py_modern_checks(run, client, calls, updates)
        except Exception as e:  # connect (or teardown) failed: report it as the connect check
            connect_error = " ".join(f"{type(e).__name__}: {_leaf(e)}".split())[:400]
        if connect_error is not None and not run.connected:
            run.failed += 1
            print(f"not ok - connect: {connect_error}", flush=True)
            for name in ("lists", "call", "server-to-client request", "subscription update", "cancellation"):
                await run.check(name, _noop)
        elif connect_error is not None:
            run.failed += 1
            print(f"not ok - teardown: {connect_error}", flush=True)
    if hard.cancelled_caught:
        run.failed += 1
        print(f"not ok - hard timeout: whole run exceeded {a.timeout_s} s", flush=True)
    print(f"{run.passed} passed, {run.failed} failed", flush=True)
    return 1 if run.failed else 0


def _leaf(e: BaseException) -> str:
    """The innermost message of an exception group (anyio wraps task-group failures)."""
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        e = e.exceptions[0]
    return f"{type(e).__name__}: {e}"


async def _noop() -> None:
    return None


async def wait_for(pred: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        await anyio.sleep(0.05)


async def everything_checks(run: Run, client: Client, calls: dict[str, int], updates: list[str]) -> None:
    async def lists() -> None:
        tools = [t.name for t in (await client.list_tools()).tools]
        for n in ("echo", "trigger-long-running-operation", "toggle-subscriber-updates"):
            need(n in tools, f"tools/list lacks {n}: {tools}")
        need(len((await client.list_resources()).resources) > 0, "resources/list is empty")
        prompts = [p.name for p in (await client.list_prompts()).prompts]
        need("simple-prompt" in prompts, f"prompts/list lacks simple-prompt: {prompts}")

    async def call() -> None:
        r = await client.call_tool("echo", {"message": "pairing"})
        need(text_of(r) == "Echo: pairing", f"echo returned {text_of(r)!r}")

    async def server_request() -> None:
        deadline = time.monotonic() + 5
        tools: list[str] = []
        while "trigger-sampling-request" not in tools and time.monotonic() < deadline:
            tools = [t.name for t in (await client.list_tools()).tools]
            if "trigger-sampling-request" not in tools:
                await anyio.sleep(0.1)
        need("trigger-sampling-request" in tools, "trigger-sampling-request never appeared in tools/list")
        before = calls["sampling"]
        r = await client.call_tool("trigger-sampling-request", {"prompt": "hello", "maxTokens": 10})
        need(calls["sampling"] == before + 1, f"sampling callback ran {calls['sampling'] - before} times")
        need(CANNED in text_of(r), f"tool result lacks the sampled text: {text_of(r)[:200]}")

    async def subscription() -> None:
        uri = "demo://resource/static/document/architecture.md"
        await client.subscribe_resource(uri)
        n0 = len(updates)
        await client.call_tool("toggle-subscriber-updates", {})
        try:
            await wait_for(lambda: uri in updates[n0:], 8, f"notifications/resources/updated for {uri}")
        finally:
            await client.call_tool("toggle-subscriber-updates", {})

    async def cancellation() -> None:
        started = time.monotonic()
        with anyio.move_on_after(0.5) as scope:
            await client.call_tool("trigger-long-running-operation", {"duration": 30, "steps": 30}, read_timeout_seconds=40)
        need(scope.cancelled_caught, "the long-running call finished before it could be cancelled")
        need(time.monotonic() - started < 10, "cancelling took more than 10 s")
        r = await client.call_tool("echo", {"message": "after-cancel"})
        need(text_of(r) == "Echo: after-cancel", "follow-up call after the cancel failed")

    await run.check("lists", lists)
    await run.check("call", call)
    await run.check("server-to-client request", server_request)
    await run.check("subscription update", subscription, 20)
    await run.check("cancellation", cancellation)


async def py_modern_checks(run: Run, client: Client, calls: dict[str, int], updates: list[str]) -> None:
    async def lists() -> None:
        tools = [t.name for t in (await client.list_tools()).tools]
        for n in ("add", "echo", "confirm_delete", "touch_counter", "slow_echo", "last_cancelled"):
            need(n in tools, f"tools/list lacks {n}: {tools}")
        uris = [str(r.uri) for r in (await client.list_resources()).resources]
        need("demo://counter" in uris, f"resources/list lacks demo://counter: {uris}")
        prompts = [p.name for p in (await client.list_prompts()).prompts]
        need("greeting" in prompts, f"prompts/list lacks greeting: {prompts}")

    async def call() -> None:
        r = await client.call_tool("add", {"a": 2, "b": 3})
        need(text_of(r) == "5", f"add returned {text_of(r)!r}")

    async def server_request() -> None:
        before = calls["elicitation"]
        r = await client.call_tool("confirm_delete", {"path": "/tmp/pairing"})
        need(calls["elicitation"] == before + 1, f"elicitation callback ran {calls['elicitation'] - before} times")
        need(text_of(r) == "deleted /tmp/pairing", f"confirm_delete returned {text_of(r)!r}")

    async def subscription() -> None:
        uri = "demo://counter"
        if client.protocol_version.startswith("2025-"):
            await client.subscribe_resource(uri)
            n0 = len(updates)
            await client.call_tool("touch_counter", {})
            await wait_for(lambda: uri in updates[n0:], 5, f"notifications/resources/updated for {uri}")
            return
        async with client.listen(resource_subscriptions=[uri]) as sub:
            honored = list((sub.honored.resource_subscriptions if sub.honored else None) or [])
            need(uri in honored, f"listen ack did not honour {uri}: {sub.honored}")
            await client.call_tool("touch_counter", {})
            with anyio.fail_after(5):
                async for event in sub:
                    if getattr(event, "uri", None) == uri:
                        return

    async def cancellation() -> None:
        tag = f"cancel-{os.getpid()}-{time.time()}"
        with anyio.move_on_after(0.4) as scope:
            await client.call_tool("slow_echo", {"text": tag, "ms": 30000}, read_timeout_seconds=40)
        need(scope.cancelled_caught, "slow_echo finished before it could be cancelled")
        deadline = time.monotonic() + 5
        seen = None
        while time.monotonic() < deadline:
            seen = json.loads(text_of(await client.call_tool("last_cancelled", {"text": tag})) or "null")
            if seen:
                break
            await anyio.sleep(0.1)
        need(bool(seen) and seen.get("text") == tag, "server never recorded the cancellation")

    await run.check("lists", lists)
    await run.check("call", call)
    await run.check("server-to-client request", server_request)
    await run.check("subscription update", subscription)
    await run.check("cancellation", cancellation)


if __name__ == "__main__":
    sys.exit(anyio.run(main))
