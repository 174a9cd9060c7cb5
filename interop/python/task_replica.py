"""One real MCP server replica with SEP-2663 background tasks (FastMCP + fastmcp-tasks).

fastmcp==4.1.4 and fastmcp-tasks==4.1.4 are pinned in requirements.txt (scripts/interop
installs them into the interop venv, next to mcp==2.3.0).

Usage:
    python task_replica.py --name r1 [--host 127.0.0.1] [--port 0]

Serves the 2026-07-28 (stateless, no Mcp-Session-Id) Streamable HTTP transport at /mcp, with the
tasks extension (``io.modelcontextprotocol/tasks``) registered on an in-process ``memory://``
Docket backend: every task's state lives only in THIS process, so a ``tasks/get`` /
``tasks/update`` / ``tasks/cancel`` that reaches another replica answers -32602 "Task <id> not
found". (A client that does not declare the extension on its request gets ordinary results.)

Like replica.py: binds ``--host`` on ``--port`` (0: an ephemeral port) itself, hands the
listening socket to uvicorn, and prints exactly ``PORT <n>`` on stdout (flushed) once uvicorn
has started (and so once the Docket worker is running: it starts in the app lifespan).

Tools (each result embeds the replica name):
  whoami                        the replica name (never a task)
  slow_report(seconds, label)   task=True: a background task when the client opted in to the
                                extension, else a plain call; sleeps `seconds`, then returns
                                '<name>:<label>:slept=<seconds>'
  approve(label)                task=True guard tool: first leg returns an InputRequiredResult
                                (key "approval", elicitation/create form {ok: boolean}), so the
                                task sits in input_required until tasks/update answers it; then
                                returns '<name>:<label>:<action>:ok=<ok>'
  task_stats()                  '<name>:started=N:completed=M:cancelled=K' for slow_report
                                (cancelled counts asyncio cancellation of the task body)

Host/Origin: FastMCP's own guard is on (the SDK's is always off under FastMCP), allowing
loopback Hosts (127.0.0.*, localhost, ::1) on any port, as replica.py does.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import warnings

warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", message=".*deprecated.*")
os.environ.setdefault("FASTMCP_LOG_LEVEL", "WARNING")

import mcp_types as types  # noqa: E402
import uvicorn  # noqa: E402
from fastmcp import Context, FastMCP  # noqa: E402
from fastmcp_tasks import TasksExtension  # noqa: E402

LOOPBACK_HOSTS = ["127.0.0.*", "localhost", "::1"]
LOOPBACK_ORIGINS = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]


def build_server(name: str) -> FastMCP:
    mcp = FastMCP(f"tether-task-{name}")
    mcp.add_extension(TasksExtension(url="memory://", name=f"tether-{name}"))
    stats = {"started": 0, "completed": 0, "cancelled": 0}

    @mcp.tool()
    def whoami() -> str:
        """Return the name of the replica that served this call."""
        return name

    @mcp.tool(task=True)
    async def slow_report(seconds: float = 1.0, label: str = "report") -> str:
        """Sleep `seconds` (a background task when the client supports tasks), then report."""
        stats["started"] += 1
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            stats["cancelled"] += 1
            raise
        stats["completed"] += 1
        return f"{name}:{label}:slept={seconds}"

    @mcp.tool(task=True)
    async def approve(ctx: Context, label: str = "deploy") -> str | types.InputRequiredResult:
        """Guard tool: asks the client (elicitation) for approval, then reports the answer.

        As a task this parks in `input_required` (inputRequests {"approval": elicitation/create})
        until the client answers with tasks/update; foreground it is an MRTR round trip."""
        answers = ctx.input_responses
        if not answers or "approval" not in answers:
            return types.InputRequiredResult(
                input_requests={
                    "approval": types.ElicitRequest(
                        params=types.ElicitRequestFormParams(
                            message=f"{name}: approve {label}?",
                            requested_schema={
                                "type": "object",
                                "properties": {"ok": {"type": "boolean"}},
                                "required": ["ok"],
                            },
                        )
                    )
                }
            )
        answer = answers["approval"]
        action = getattr(answer, "action", None)
        content = getattr(answer, "content", None) or {}
        return f"{name}:{label}:{action}:ok={content.get('ok')}"

    @mcp.tool()
    def task_stats() -> str:
        """How many slow_report bodies this replica started / completed / saw cancelled."""
        return f"{name}:started={stats['started']}:completed={stats['completed']}:cancelled={stats['cancelled']}"

    return mcp


async def serve(name: str, host: str = "127.0.0.1", port: int = 0) -> None:
    app = build_server(name).http_app(
        path="/mcp",
        stateless_http=True,
        json_response=False,
        host_origin_protection=True,
        allowed_hosts=LOOPBACK_HOSTS,
        allowed_origins=LOOPBACK_ORIGINS,
    )

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
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
    parser.add_argument("--name", required=True, help="replica name returned by whoami / in task results")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.2.. for several hosts)")
    parser.add_argument("--port", type=int, default=0, help="port to bind (0: any free one)")
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.name, args.host, args.port))
    except KeyboardInterrupt:
        pass
    os._exit(0)


if __name__ == "__main__":
    main()
