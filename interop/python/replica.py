"""One real MCP server replica built with the official Python SDK (PyPI `mcp` 2.x).

Usage:
    python replica.py --name r1 --transport streamable   # Streamable HTTP, stateful, at /mcp
    python replica.py --name r2 --transport sse          # legacy HTTP+SSE, GET /sse + POST /messages/

The replica binds 127.0.0.1 on an ephemeral port itself, hands the listening socket to uvicorn,
and prints exactly ``PORT <n>`` on stdout (flushed) once uvicorn has started.

Host/Origin checks: the SDK's DNS-rebinding protection stays ENABLED, with the allow lists set
explicitly to loopback names on any port (``127.0.0.1:*``, ``localhost:*``, ``[::1]:*``). A proxy
in front of the replica forwards the client's Host (``127.0.0.1:<proxy port>``), which these
patterns accept; a proxy that sent some other Host would get the SDK's 421 "Invalid Host header",
which is part of what this interop test checks.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings

LOOPBACK_SECURITY = TransportSecuritySettings(
    enable_dns_rebinding_protection=True,
    allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
    allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
)


def build_server(name: str) -> MCPServer:
    mcp = MCPServer(f"tether-interop-{name}", log_level="WARNING")

    @mcp.tool()
    def whoami() -> str:
        """Return the name of the replica that served this call."""
        return name

    @mcp.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    return mcp


def build_app(mcp: MCPServer, transport: str):
    if transport == "streamable":
        # Stateful (the default): the server issues an Mcp-Session-Id and answers 404
        # "Session not found" for ids it does not hold.
        return mcp.streamable_http_app(
            streamable_http_path="/mcp",
            stateless_http=False,
            json_response=False,
            transport_security=LOOPBACK_SECURITY,
        )
    if transport == "sse":
        return mcp.sse_app(
            sse_path="/sse",
            message_path="/messages/",
            transport_security=LOOPBACK_SECURITY,
        )
    raise SystemExit(f"unknown transport {transport!r}")


async def serve(name: str, transport: str) -> None:
    app = build_app(build_server(name), transport)

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(256)
    sock.setblocking(False)
    port = sock.getsockname()[1]

    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=1)
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
    parser.add_argument("--transport", choices=["streamable", "sse"], default="streamable")
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.name, args.transport))
    except KeyboardInterrupt:
        pass
    os._exit(0)


if __name__ == "__main__":
    main()
