"""The 2026-07-28 world through Tether, with real peers: the Python SDK's modern client
(`Client(mode="2026-07-28")` and `mode="auto"`) and servers (replica.py serves the modern,
session-free path next to its sessions), FastMCP with its SEP-2663 tasks extension
(task_replica.py: task state lives in the replica that created it), and raw HTTP where a test
must see the wire (validation errors, response headers, a connection closed mid-call).

Tether runs from a config file (pools and routes), as an operator runs it. State is read from
its admin API and metrics; waiting is by polling a state, never by sleeping a guessed time.
"""

from __future__ import annotations

import json
import socket
import time
from contextlib import AsyncExitStack

import anyio
import httpx2
import pytest

from conftest import HERE, PORT_RE, PYTHON
from test_operations import Tether, replica, wait_until
from test_sdk_scenarios import SdkSession, short_error

pytestmark = pytest.mark.anyio

TIMEOUT = 15.0
MODERN = "2026-07-28"
ACCEPT = "application/json, text/event-stream"


def backends_toml(ports) -> str:
    return ", ".join(f'"http://127.0.0.1:{p}"' for p in ports)


def plain_tether(procs, tmp_path, ports, extra: str = "", env: dict | None = None) -> Tether:
    return Tether(procs, tmp_path, f"""
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
backends = [{backends_toml(ports)}]
{extra}
""", env=env)


def modern_call(name: str, args: dict | None = None, id_: int = 1, version: str = MODERN) -> dict:
    return {"jsonrpc": "2.0", "id": id_, "method": "tools/call",
            "params": {"name": name, "arguments": args or {},
                       "_meta": {"io.modelcontextprotocol/protocolVersion": version,
                                 "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "0"},
                                 "io.modelcontextprotocol/clientCapabilities": {}}}}


def modern_headers(method: str = "tools/call", name: str | None = None, **extra) -> dict:
    h = {"Accept": ACCEPT, "Content-Type": "application/json",
         "MCP-Protocol-Version": MODERN, "Mcp-Method": method}
    if name is not None:
        h["Mcp-Name"] = name
    h.update(extra)
    return h


def result_text(resp: httpx2.Response) -> str:
    """The text of a tools/call result, from a JSON or an SSE answer."""
    body = resp.text
    if resp.headers.get("content-type", "").startswith("text/event-stream"):
        datas = [line[5:].strip() for line in body.splitlines() if line.startswith("data:")]
        body = [d for d in datas if '"result"' in d or '"error"' in d][-1]
    message = json.loads(body)
    assert "result" in message, message
    return message["result"]["content"][0]["text"]


def backend_requests(t: Tether, ports) -> float:
    """Requests Tether counted as answered by these backends (any status)."""
    _, text = t.get("/metrics")
    total = 0.0
    for line in text.splitlines():
        if line.startswith("tether_requests_total{") and any(f'backend="127.0.0.1:{p}"' in line for p in ports):
            total += float(line.rsplit(" ", 1)[1])
    return total


# ---------------------------------------------------------------- era per request


@pytest.mark.parametrize("mode", ["2026-07-28", "auto"])
async def test_modern_clients_are_spread_per_request_and_never_see_a_token(procs, tmp_path, replica_set, mode):
    ports = replica_set("stateful")
    t = plain_tether(procs, tmp_path, ports)
    async with SdkSession(t.url, mode, TIMEOUT) as s:
        names = [await s.tool("whoami") for _ in range(12)]
    assert set(names) == {"r1", "r2", "r3"}, names
    assert t.metric("tether_modern_requests_total") >= 12
    assert t.metric("tether_sessions_created_total") == 0
    # On the wire: no response carries a session token, and a client's Mcp-Session-Id is the
    # server's business (forwarded untouched, not a 404 from Tether).
    async with httpx2.AsyncClient(timeout=TIMEOUT) as http:
        for i in range(3):
            r = await http.post(t.url, json=modern_call("whoami", id_=i),
                                headers=modern_headers(name="whoami", **{"Mcp-Session-Id": "not-a-token"}))
            assert r.status_code == 200, r.text
            assert result_text(r) in {"r1", "r2", "r3"}
            assert "mcp-session-id" not in r.headers, r.headers
    assert t.metric("tether_invalid_tokens_total") == 0


async def test_all_eras_on_one_listener_at_once(procs, tmp_path, replica_set):
    """Legacy HTTP+SSE (its own pool, by path), Streamable sessions and modern clients, all at the
    same time on one Tether: sessions stay on their owner, modern calls spread."""
    main, legacy = replica_set("stateful"), replica_set("sse")
    t = Tether(procs, tmp_path, f"""
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
[pools.main]
backends = [{backends_toml(main)}]
[pools.legacy]
backends = [{backends_toml(legacy)}]
[[routes]]
path_prefix = "/sse"
pool = "legacy"
[[routes]]
pool = "main"
""")
    base = f"http://127.0.0.1:{t.port}"
    seen: dict[str, list[list[str]]] = {"sse": [], "legacy": [], MODERN: []}

    async def session(mode: str, url: str) -> None:
        async with SdkSession(url, mode, TIMEOUT) as s:
            seen[mode].append([await s.tool("whoami") for _ in range(6)])

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(session, "sse", f"{base}/sse")
            tg.start_soon(session, "legacy", f"{base}/mcp")
            tg.start_soon(session, MODERN, f"{base}/mcp")
    for mode in ("sse", "legacy"):
        assert len(seen[mode]) == 3, seen
        for names in seen[mode]:
            assert len(set(names)) == 1, (mode, names)  # sticky
    modern = {n for names in seen[MODERN] for n in names}
    assert len(modern) >= 2, seen[MODERN]  # per request, not per client
    assert t.metric('tether_sessions_created_total{backend="127.0.0.1:%d",transport="legacy"}' % legacy[0]) \
        + t.metric('tether_sessions_created_total{backend="127.0.0.1:%d",transport="legacy"}' % legacy[1]) \
        + t.metric('tether_sessions_created_total{backend="127.0.0.1:%d",transport="legacy"}' % legacy[2]) == 3


# ---------------------------------------------------------------- pools and routes


async def test_a_routed_tool_always_lands_in_its_pool(procs, tmp_path, replica_set):
    main = replica_set("stateful")
    big, _ = replica(procs, "big")
    t = Tether(procs, tmp_path, f"""
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
[pools.main]
backends = [{backends_toml(main)}]
[pools.reports]
backends = ["http://127.0.0.1:{big}"]
[[routes]]
method = "tools/call"
name = "who*"
pool = "reports"
[[routes]]
pool = "main"
""")
    async with SdkSession(t.url, MODERN, TIMEOUT) as s:
        routed = [await s.tool("whoami") for _ in range(9)]
        others = [await s.tool("slow_stats") for _ in range(9)]
    assert set(routed) == {"big"}, routed
    assert {o.split(":")[0] for o in others} == {"r1", "r2", "r3"}, others
    # A session begins by its route (initialize has no Mcp-Name: the fallback) and then follows
    # its owner whatever the tool: routes never move a session.
    async with SdkSession(t.url, "legacy", TIMEOUT) as s:
        owners = {await s.tool("whoami") for _ in range(4)}
    assert len(owners) == 1 and owners <= {"r1", "r2", "r3"}, owners
    status, body = t.get("/routes")
    routes = json.loads(body)["routes"]
    assert status == 200 and [r["pool"] for r in routes] == ["reports", "main"], body
    pools = {p["name"]: p for p in json.loads(t.get("/pools")[1])["pools"]}
    assert set(pools) == {"main", "reports"} and pools["reports"]["states"]["active"] == 1, pools
    assert t.metric('tether_route_requests_total{route="0",pool="reports"}') == 9


# ---------------------------------------------------------------- header validation


async def test_mismatched_headers_get_400_and_no_backend_is_contacted(procs, tmp_path, replica_set):
    ports = replica_set("stateful")
    t = plain_tether(procs, tmp_path, ports)
    before = backend_requests(t, ports)
    bad = [
        (modern_call("whoami"), modern_headers(name="add")),                      # name differs
        (modern_call("whoami"), modern_headers()),                                # Mcp-Name missing
        (modern_call("whoami"), modern_headers(method="tools/list", name="whoami")),
        (modern_call("whoami", version="2025-11-25"), modern_headers(name="whoami")),  # _meta version
        (modern_call("whoami"), modern_headers(name="=?base64?not base64!?=")),
    ]
    async with httpx2.AsyncClient(timeout=TIMEOUT) as http:
        for body, headers in bad:
            r = await http.post(t.url, json=body, headers=headers)
            assert r.status_code == 400, (headers, r.status_code, r.text)
            assert r.json()["error"]["code"] == -32020, r.text
            assert r.json()["id"] == 1
        assert backend_requests(t, ports) == before
        assert t.metric('tether_rejected_requests_total{reason="header_mismatch"}') == len(bad)
        # The same name, base64-encoded as the revision allows, matches and is forwarded.
        r = await http.post(t.url, json=modern_call("whoami"), headers=modern_headers(name="=?base64?d2hvYW1p?="))
        assert r.status_code == 200, r.text
        assert result_text(r) in {"r1", "r2", "r3"}
    assert backend_requests(t, ports) == before + 1


# ---------------------------------------------------------------- cancellation


def http_exchange(sock: socket.socket, body: dict, headers: dict) -> tuple[int, str]:
    """Sends one request on a kept-alive socket and reads its whole response (Content-Length or
    chunked)."""
    data = json.dumps(body).encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    sock.sendall(f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n{head}Content-Length: {len(data)}\r\n\r\n".encode()
                 + data)
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(65536)
    head_bytes, rest = buf.split(b"\r\n\r\n", 1)
    lines = head_bytes.decode().split("\r\n")
    status = int(lines[0].split()[1])
    fields = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    if "content-length" in fields:
        n = int(fields["content-length"])
        while len(rest) < n:
            rest += sock.recv(65536)
        return status, rest[:n].decode()
    while not rest.endswith(b"0\r\n\r\n"):
        rest += sock.recv(65536)
    return status, rest.decode()


async def test_closing_the_stream_cancels_the_call_on_the_server_at_once(procs, tmp_path):
    """A long tool call over a kept-alive connection; the client closes it: the real Python
    server's handler is cancelled within a second (the upstream connection is closed, not
    returned to Tether's pool)."""
    port, _ = replica(procs, "r1")
    t = plain_tether(procs, tmp_path, [port])
    async with SdkSession(t.url, MODERN, TIMEOUT) as s:
        assert await s.tool("slow_stats") == "r1:cancelled=0:completed=0"
        sock = socket.create_connection(("127.0.0.1", t.port), timeout=TIMEOUT)
        # One answered request first: the connection (to Tether, and Tether's to the replica)
        # is kept alive and reused for the long call.
        status, _ = http_exchange(sock, modern_call("whoami"), modern_headers(name="whoami"))
        assert status == 200
        long_call = modern_call("slow", {"steps": 100, "delay": 0.1}, id_=2)
        long_call["params"]["_meta"]["progressToken"] = "p1"
        data = json.dumps(long_call).encode()
        head = "".join(f"{k}: {v}\r\n" for k, v in modern_headers(name="slow").items())
        sock.sendall(f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n{head}Content-Length: {len(data)}\r\n\r\n"
                     .encode() + data)
        # The first progress event: the handler is running, its answer a stream.
        seen = b""
        while b"notifications/progress" not in seen:
            chunk = sock.recv(65536)
            assert chunk, seen
            seen += chunk
        assert b"text/event-stream" in seen, seen
        sock.close()
        closed = time.monotonic()
        while True:
            stats = await s.tool("slow_stats")
            if stats != "r1:cancelled=0:completed=0":
                break
            assert time.monotonic() - closed < 1.0, "the server did not see the cancellation within 1 s"
            await anyio.sleep(0.02)
        assert stats == "r1:cancelled=1:completed=0", stats


# ---------------------------------------------------------------- tasks (SEP-2663)


def task_replicas(procs) -> dict[str, tuple[int, object]]:
    started = {n: procs.start(f"task replica {n}", [PYTHON, str(HERE / "task_replica.py"), "--name", n])
               for n in ("r1", "r2", "r3")}
    return {n: (int(p.wait_for_stdout(PORT_RE).group(1)), p) for n, p in started.items()}


async def approve(message, response_type, params, context):
    return {"ok": True}


def text_of(result) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


async def test_every_task_is_polled_updated_and_cancelled_on_its_owner(procs, tmp_path, session_key):
    """9 background tasks through two Tether instances sharing a key (created through one, polled
    through the other), all complete on the replica that created them; one is cancelled, one
    answered with tasks/update; then an owner dies and its task gets the unknown-task error from
    Tether. Without affinity (the round-robin control) the same tasks are lost."""
    import fastmcp_tasks  # noqa: F401  (registers the client half of the extension)
    from fastmcp import Client
    from fastmcp_tasks import call_tool_task
    from fastmcp_tasks.client import _send_get
    from mcp.shared.exceptions import MCPError

    reps = task_replicas(procs)
    ports = [p for p, _ in reps.values()]
    toml = f"""
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
backends = [{backends_toml(ports)}]
[health]
check = "none"
"""
    env = {"TETHER_SESSION_KEY": session_key}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = Tether(procs, tmp_path / "a", toml, env=env)
    b = Tether(procs, tmp_path / "b", toml, env=env)
    async with Client(a.url, mode=MODERN, elicitation_handler=approve, timeout=30) as ca, \
            Client(b.url, mode=MODERN, elicitation_handler=approve, timeout=30) as cb:
        tasks = [await call_tool_task(ca, "slow_report", {"seconds": 0.3, "label": f"T{i}"}) for i in range(9)]
        assert all(t.task_id.startswith("t2.") for t in tasks), [t.task_id for t in tasks]
        for t in tasks:  # polled through the other Tether, with the same sealed id
            got = await _send_get(cb.session, t.task_id)
            assert got.task_id == t.task_id and got.status in ("working", "completed"), got
        owners = []
        for t in tasks:
            final = await t.wait(timeout=20)
            assert final.status == "completed", final
            text = text_of(await t.result())
            owners.append(text.split(":")[0])
            assert text.endswith("slept=0.3"), text
        assert set(owners) == {"r1", "r2", "r3"}, owners  # spread over the replicas
        assert a.metric("tether_tasks_created_total") == 9

        long = await call_tool_task(ca, "slow_report", {"seconds": 30, "label": "long"})
        await long.cancel()
        assert (await long.wait(timeout=10)).status == "cancelled"
        guarded = await call_tool_task(ca, "approve", {"label": "C"})
        await guarded.wait(state="input_required", timeout=10)
        assert text_of(await guarded.result()).endswith(":C:accept:ok=True")  # via tasks/update

        # The owner of tasks[0] dies: its next poll gets Tether's unknown-task error.
        dead = owners[0]
        reps[dead][1].stop()
        before = backend_requests(b, [p for n, (p, _) in reps.items() if n != dead])
        with pytest.raises(MCPError) as err:
            await _send_get(cb.session, tasks[0].task_id)
        assert err.value.error.code == -32602, err.value.error
        assert err.value.error.message == "Failed to retrieve task: Task not found", err.value.error
        assert backend_requests(b, [p for n, (p, _) in reps.items() if n != dead]) == before
        assert b.metric("tether_tasks_orphaned_total") == 1


async def test_without_affinity_tasks_are_lost(procs, start_rr_proxy):
    """The negative control: a round robin over the same replicas polls each task elsewhere."""
    import fastmcp_tasks  # noqa: F401
    from fastmcp import Client
    from fastmcp_tasks import call_tool_task

    reps = task_replicas(procs)
    rr = start_rr_proxy([p for p, _ in reps.values()])
    lost = 0
    async with Client(f"http://127.0.0.1:{rr}/mcp", mode=MODERN, timeout=30) as c:
        for i in range(3):
            try:
                t = await call_tool_task(c, "slow_report", {"seconds": 0.1, "label": f"T{i}"})
                final = await t.wait(timeout=10)
                lost += final.status != "completed"
            except Exception as exc:  # noqa: BLE001
                assert "not found" in short_error(exc) or "not found" in str(exc), short_error(exc)
                lost += 1
    assert lost >= 1
