"""One real MCP server replica built with the official Python SDK (PyPI `mcp` 2.x).

Usage:
    python replica.py --name r1 --variant stateful    # Streamable HTTP, stateful, SSE answers, at /mcp
    python replica.py --name r1 --variant json        # stateful, json_response=True
    python replica.py --name r1 --variant stateless   # stateless_http=True (no Mcp-Session-Id)
    python replica.py --name r1 --variant resumable   # stateful + in-memory EventStore (event ids, Last-Event-ID)
    python replica.py --name r2 --variant sse         # legacy HTTP+SSE, GET /sse + POST /messages/

(``--transport streamable|sse`` is the older spelling of ``--variant stateful|sse``.)
``--tls-cert FILE --tls-key FILE`` serves HTTPS instead (uvicorn's TLS), for Tether's https:// backends.
``--server hypercorn`` serves with Hypercorn instead of uvicorn: HTTP/2 as well (h2 by ALPN with
``--tls-cert``, h2c with prior knowledge without), for Tether's ``protocol = "h2"`` backends (test_h2_backend.py).
``--log-versions`` prints ``VER <http_version> <method> <path>`` on stdout (flushed) per HTTP request,
from the ASGI scope's ``http_version`` (``2`` over HTTP/2).
``--log-requests`` prints ``REQ <method> <path> sid=<session id or ->`` on stdout (flushed) as each HTTP
request arrives, before the SDK sees it (the session id: ``Mcp-Session-Id``, else the ``session_id``
query parameter), so a test can count what reached this replica (test_trust.py). Off by default.

The replica binds 127.0.0.1 (or ``--host``) on an ephemeral port (or ``--port``) itself, hands the listening socket to uvicorn,
and prints exactly ``PORT <n>`` on stdout (flushed) once uvicorn has started.

Every streamable variant ALSO serves 2026-07-28 requests (the SDK routes any request whose
``MCP-Protocol-Version`` header is not a handshake-era version to its modern, session-free path).

Tools (all return or embed the replica name, so a test sees which replica answered):
  whoami, add(a, b), blob(size) (a large result),
  progress(steps, delay)        ctx.report_progress once per step, then returns the name,
  slow(steps, delay, close_at)  like progress, and with close_at >= 0 calls ctx.close_sse_stream()
                                after that step (SSE polling: the client must resume with
                                GET + Last-Event-ID; needs the resumable variant),
  slow_stats()                  'name:cancelled=N:completed=M' for `slow` on this replica,
  sample(prompt)                sampling/createMessage round trip (client's sampling callback),
  ask(question)                 elicitation/create round trip (client's elicitation callback),
  log(text)                     notifications/message (info) related to the call,
  touch(uri)                    notifications/resources/updated to every session of THIS replica
                                subscribed to `uri` (unrelated to the call: standalone GET stream).
Resource ``tether://counter`` with resources/subscribe + resources/unsubscribe.

Host/Origin checks: the SDK's DNS-rebinding protection stays ENABLED, with the allow lists set
explicitly to loopback names on any port (``127.0.0.1:*``, ``localhost:*``, ``[::1]:*``). A proxy
in front of the replica forwards the client's Host (``127.0.0.1:<proxy port>``), which these
patterns accept; a proxy that sent some other Host would get the SDK's 421 "Invalid Host header".
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import socket
import sys
import warnings
from urllib.parse import parse_qs

import anyio
import mcp_types as types
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import BaseModel

warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", message=".*deprecated.*")

LOOPBACK_SECURITY = TransportSecuritySettings(
    enable_dns_rebinding_protection=True,
    allowed_hosts=["127.0.0.1:*", "127.0.0.2:*", "127.0.0.3:*", "127.0.0.4:*", "127.0.0.5:*", "localhost:*", "[::1]:*"],
    allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
)

COUNTER_URI = "tether://counter"
VARIANTS = ("stateful", "json", "stateless", "resumable", "sse")


class InMemoryEventStore(EventStore):
    """The SDK ships only the EventStore interface (mcp.server.streamable_http.EventStore); this is
    the in-memory store of its `simple-streamablehttp` example: ids are global and increasing,
    replay sends every later event of the same stream. Priming events (message None) get an id
    but are never replayed."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._ids = itertools.count(1)
        self._events: list[tuple[str, str, types.JSONRPCMessage | None]] = []  # (event_id, stream_id, msg)

    async def store_event(self, stream_id: str, message: types.JSONRPCMessage | None) -> str:
        event_id = f"{self._name}-{next(self._ids)}"
        self._events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(self, last_event_id: str, send_callback: EventCallback) -> str | None:
        index = next((i for i, e in enumerate(self._events) if e[0] == last_event_id), None)
        if index is None:
            return None
        stream_id = self._events[index][1]
        for event_id, sid, message in self._events[index + 1 :]:
            if sid == stream_id and message is not None:
                await send_callback(EventMessage(message, event_id))
        return stream_id


class Answer(BaseModel):
    answer: str


def build_server(name: str) -> MCPServer:
    mcp = MCPServer(f"tether-interop-{name}", log_level="WARNING")
    subscribers: dict[str, list] = {}  # uri -> ServerSession objects of the subscribing sessions

    @mcp.tool()
    def whoami() -> str:
        """Return the name of the replica that served this call."""
        return name

    @mcp.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @mcp.tool()
    def blob(size: int) -> str:
        """Return `size` bytes of text (a large response through the proxy)."""
        return (name + ":" + "x" * size)[: max(size, len(name) + 1)]

    @mcp.tool()
    async def progress(ctx: Context, steps: int = 3, delay: float = 0.05) -> str:
        """Report progress `steps` times, then return the replica name."""
        for i in range(1, steps + 1):
            await ctx.report_progress(i, steps, f"step {i}")
            await anyio.sleep(delay)
        return name

    stats = {"cancelled": 0, "completed": 0}

    @mcp.tool()
    async def slow(ctx: Context, steps: int = 4, delay: float = 0.2, close_at: int = -1) -> str:
        """Progress per step; after step `close_at` close this call's SSE stream (client resumes)."""
        try:
            for i in range(1, steps + 1):
                await ctx.report_progress(i, steps, f"step {i}")
                if i == close_at:
                    await ctx.close_sse_stream()
                await anyio.sleep(delay)
        except anyio.get_cancelled_exc_class():
            stats["cancelled"] += 1
            raise
        stats["completed"] += 1
        return f"{name}:done"

    @mcp.tool()
    def slow_stats() -> str:
        """How many `slow` calls this replica saw cancelled / completed."""
        return f"{name}:cancelled={stats['cancelled']}:completed={stats['completed']}"

    @mcp.tool()
    async def sample(ctx: Context, prompt: str) -> str:
        """Ask the client's model (sampling/createMessage); return 'replica:reply'."""
        result = await ctx.session.create_message(
            [types.SamplingMessage(role="user", content=types.TextContent(type="text", text=prompt))],
            max_tokens=16,
            related_request_id=ctx.request_id,
        )
        text = result.content.text if isinstance(result.content, types.TextContent) else repr(result.content)
        return f"{name}:{text}"

    @mcp.tool()
    async def ask(ctx: Context, question: str) -> str:
        """Elicit an answer from the client (elicitation/create); return 'replica:action:answer'."""
        result = await ctx.elicit(question, Answer)
        data = result.data.answer if result.action == "accept" else ""
        return f"{name}:{result.action}:{data}"

    @mcp.tool()
    async def log(ctx: Context, text: str) -> str:
        """Send notifications/message (info) for this call."""
        await ctx.info(f"{name}:{text}", logger_name="tether-interop")
        return name

    @mcp.tool()
    async def touch(ctx: Context, uri: str = COUNTER_URI) -> str:
        """notifications/resources/updated to this replica's subscribers of `uri` (standalone stream)."""
        sent = 0
        for session in list(subscribers.get(uri, [])):
            try:
                await session.send_resource_updated(uri)
                sent += 1
            except Exception:  # noqa: BLE001 - a gone session just is not notified
                subscribers[uri].remove(session)
        await ctx.notify_resource_updated(uri)  # 2026-07-28 subscriptions/listen streams
        return f"{name}:{sent}"

    @mcp.resource(COUNTER_URI)
    def counter() -> str:
        """A resource clients may subscribe to."""
        return name

    async def on_subscribe(ctx, params: types.SubscribeRequestParams) -> types.EmptyResult:
        subscribers.setdefault(str(params.uri), []).append(ctx.session)
        return types.EmptyResult()

    async def on_unsubscribe(ctx, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
        subscribers.pop(str(params.uri), None)
        return types.EmptyResult()

    low = mcp._lowlevel_server  # noqa: SLF001 - MCPServer has no decorator for resources/subscribe
    low.add_request_handler("resources/subscribe", types.SubscribeRequestParams, on_subscribe)
    low.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams, on_unsubscribe)
    return mcp


def build_app(mcp: MCPServer, variant: str, name: str):
    common = dict(streamable_http_path="/mcp", transport_security=LOOPBACK_SECURITY)
    if variant == "stateful":
        # The server issues an Mcp-Session-Id and answers 404 "Session not found" for ids it does not hold.
        return mcp.streamable_http_app(stateless_http=False, json_response=False, **common)
    if variant == "json":
        return mcp.streamable_http_app(stateless_http=False, json_response=True, **common)
    if variant == "stateless":
        return mcp.streamable_http_app(stateless_http=True, json_response=False, **common)
    if variant == "resumable":
        return mcp.streamable_http_app(
            stateless_http=False, json_response=False, event_store=InMemoryEventStore(name), retry_interval=100, **common
        )
    if variant == "sse":
        return mcp.sse_app(sse_path="/sse", message_path="/messages/", transport_security=LOOPBACK_SECURITY)
    raise SystemExit(f"unknown variant {variant!r}")


class RequestLog:
    """ASGI middleware for ``--log-requests``: one stdout line per HTTP request, as it arrives."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            sid = headers.get(b"mcp-session-id", b"").decode("latin-1")
            if not sid:
                sid = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("session_id", [""])[0]
            sys.stdout.write(f"REQ {scope['method']} {scope['path']} sid={sid or '-'}\n")
            sys.stdout.flush()
        await self.app(scope, receive, send)


class VersionLog:
    """ASGI middleware for ``--log-versions``: ``VER <http_version> <method> <path>`` per HTTP request."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            sys.stdout.write(f"VER {scope.get('http_version', '?')} {scope['method']} {scope['path']}\n")
            sys.stdout.flush()
        await self.app(scope, receive, send)


async def serve_hypercorn(app, sock: socket.socket, tls: tuple[str, str] | None) -> None:
    """Hypercorn on the bound socket: h2 (ALPN) and HTTP/1.1 over TLS, h2c (prior knowledge) and
    HTTP/1.1 without. Its lifespan startup runs before the first connection is accepted."""
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"fd://{sock.fileno()}"]
    config.loglevel = "WARNING"
    config.graceful_timeout = 1
    if tls:
        config.certfile, config.keyfile = tls
    await hypercorn_serve(app, config)


async def serve(name: str, variant: str, host: str = "127.0.0.1", port: int = 0,
                tls: tuple[str, str] | None = None, log_requests: bool = False,
                server_kind: str = "uvicorn", log_versions: bool = False) -> None:
    app = build_app(build_server(name), variant, name)
    if log_requests:
        app = RequestLog(app)
    if log_versions:
        app = VersionLog(app)

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(256)
    sock.setblocking(False)
    port = sock.getsockname()[1]

    if server_kind == "hypercorn":
        # The socket listens already: connections wait in its backlog until Hypercorn accepts.
        sys.stdout.write(f"PORT {port}\n")
        sys.stdout.flush()
        await serve_hypercorn(app, sock, tls)
        return

    ssl = dict(ssl_certfile=tls[0], ssl_keyfile=tls[1]) if tls else {}
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=1,
                            **ssl)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()  # re-raise the startup failure
            raise SystemExit("uvicorn stopped before it started")
        await asyncio.sleep(0.01)
    sys.stdout.write(f"PORT {port}\n")
    sys.stdout.flush()
    await task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="replica name returned by the whoami tool")
    parser.add_argument("--variant", choices=VARIANTS, default=None)
    parser.add_argument("--transport", choices=["streamable", "sse"], default=None, help="old spelling")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.2.. for several hosts)")
    parser.add_argument("--port", type=int, default=0, help="port to bind (0: any free one)")
    parser.add_argument("--tls-cert", default=None, help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--tls-key", default=None, help="the key of --tls-cert (PEM)")
    parser.add_argument("--log-requests", action="store_true", help="print 'REQ <method> <path> sid=..' per request")
    parser.add_argument("--server", choices=["uvicorn", "hypercorn"], default="uvicorn",
                        help="the ASGI server (hypercorn: HTTP/2 too)")
    parser.add_argument("--log-versions", action="store_true", help="print 'VER <http version> <method> <path>' per request")
    args = parser.parse_args()
    variant = args.variant or {"streamable": "stateful", "sse": "sse", None: "stateful"}[args.transport]
    try:
        tls = (args.tls_cert, args.tls_key) if args.tls_cert else None
        asyncio.run(serve(args.name, variant, args.host, args.port, tls, args.log_requests, args.server,
                          args.log_versions))
    except KeyboardInterrupt:
        pass
    os._exit(0)


if __name__ == "__main__":
    main()
