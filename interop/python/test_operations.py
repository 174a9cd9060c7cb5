"""Operations with real Python SDK replicas (mcp 2.3.0): discovery through a real DNS server
(dnsmasq), health checks against a frozen replica, a rolling restart, reload with held streams,
graceful shutdown. Tether runs from a config file, as an operator runs it; the admin API
(`GET /backends`, `/readyz`, `POST /reload`) is what the tests read its state from.

Waiting is by polling a state (the admin API, a process's exit), never by sleeping a guessed time.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import pytest

from conftest import HERE, PORT_RE, PYTHON, TETHER_LISTEN_RE, tether_bin
from test_sdk_scenarios import SdkSession, short_error

pytestmark = pytest.mark.anyio

ADMIN_RE = re.compile(r"tether: admin listening on 127\.0\.0\.1:(\d+)")
TIMEOUT = 15.0


def free_port(host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_dns_port(host: str = "127.0.0.1") -> int:
    """A port free over both UDP and TCP when chosen (dnsmasq listens on both)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
                return port


def wait_until(what: str, check, timeout: float = 15.0, every: float = 0.05):
    """Polls `check()` until it returns a true value (returned), or fails the test."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    pytest.fail(f"timed out waiting for {what}; last: {last!r}")


class Tether:
    """A Tether process started from a config file, with its admin API."""

    def __init__(self, procs, tmp_path: Path, toml: str, env: dict | None = None) -> None:
        self.config = tmp_path / "tether.toml"
        self.config.write_text(toml)
        e = dict(os.environ)
        e.setdefault("TETHER_LOG", "info,mcp_tether=debug")
        e.update(env or {})
        self.proc = procs.start("tether", [tether_bin(), "--config", str(self.config)], env=e)
        self.port = int(self.proc.wait_for_stdout(TETHER_LISTEN_RE).group(1))
        self.admin = int(self.proc.wait_for_stdout(ADMIN_RE).group(1))
        self.url = f"http://127.0.0.1:{self.port}/mcp"

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def post(self, path: str, token: str | None = None) -> tuple[int, str]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.admin}{path}", data=b"", method="POST")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def backends(self) -> dict[str, dict]:
        status, body = self.get("/backends")
        assert status == 200, body
        return {b["address"]: b for b in json.loads(body)["backends"]}

    def states(self) -> dict[str, str]:
        return {a: b["state"] for a, b in self.backends().items()}

    def metric(self, name: str) -> float:
        _, text = self.get("/metrics")
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and not line.startswith("#"):
                total += float(line.rsplit(" ", 1)[1])
        return total


class Dns:
    """dnsmasq answering for names in a hosts file; `set()` rewrites it and makes dnsmasq re-read.
    `srv`: SRV records given at start (`--srv-host=NAME,TARGET,PORT`)."""

    def __init__(self, procs, tmp_path: Path, srv: list[str] = ()) -> None:
        self.hosts = tmp_path / "hosts"
        self.hosts.write_text("")
        # dnsmasq binds the port over UDP and TCP. A port free for both when chosen can still be
        # taken by another process before dnsmasq binds it; then dnsmasq exits, and a new one is tried.
        for attempt in range(5):
            self.port = free_dns_port()
            self.proc = procs.start(f"dnsmasq (try {attempt + 1})", [
                "dnsmasq", "--keep-in-foreground", f"--port={self.port}", "--listen-address=127.0.0.1",
                "--bind-interfaces", "--no-resolv", "--no-hosts", f"--addn-hosts={self.hosts}",
                "--conf-file=/dev/null", "--pid-file=", "--user=root", "--group=root", "--log-facility=-",
                "--local-ttl=0", *[f"--srv-host={r}" for r in srv],
            ])
            state = wait_until("dnsmasq to answer or exit", lambda: (
                "started" if any("started" in line for line in self.proc.lines)
                else "exited" if self.proc.proc.poll() is not None else None))
            if state == "started":
                break
            self.proc.drained()
            if not any("Address already in use" in line for line in self.proc.lines):
                pytest.fail(f"dnsmasq exited at start:\n{self.proc.tail()}")
        else:
            pytest.fail("dnsmasq found no free port in 5 tries")
        self.reads = 0

    def set(self, name: str, ips: list[str]) -> None:
        self.write([(ip, name) for ip in ips])

    def write(self, records: list[tuple[str, str]]) -> None:
        """The hosts file becomes `records` (address, name), and dnsmasq has read it."""
        self.hosts.write_text("".join(f"{ip} {name}\n" for ip, name in records))
        self.reads += 1
        want = self.reads + 1  # the start-up read, then one per set()
        self.proc.proc.send_signal(signal.SIGHUP)
        wait_until("dnsmasq to re-read its hosts",
                   lambda: sum(f"read {self.hosts}" in line for line in self.proc.lines) >= want)


def replica(procs, name: str, host: str = "127.0.0.1", port: int = 0, variant: str = "stateful"):
    p = procs.start(f"replica {name}", [PYTHON, str(HERE / "replica.py"), "--name", name, "--variant", variant,
                                        "--host", host, "--port", str(port)])
    return int(p.wait_for_stdout(PORT_RE).group(1)), p


async def open_sessions(stack: AsyncExitStack, url: str, n: int) -> list[tuple[SdkSession, str]]:
    out = []
    for _ in range(n):
        s = await stack.enter_async_context(SdkSession(url, "legacy", TIMEOUT))
        out.append((s, await s.tool("whoami")))
    return out


# ---------------------------------------------------------------- discovery by DNS


async def test_dns_discovery_follows_the_name(procs, tmp_path):
    """A name resolving to two, then three, then two addresses (replicas on 127.0.0.2-4, one port):
    new sessions reach the added replica; a session on the removed one keeps working while it
    lives (draining), then gets the 404 once it is stopped."""
    port = free_port()
    reps = {f"127.0.0.{i}": replica(procs, f"r{i - 1}", f"127.0.0.{i}", port) for i in (2, 3, 4)}
    names = {f"127.0.0.{i}:{port}": f"r{i - 1}" for i in (2, 3, 4)}
    dns = Dns(procs, tmp_path)
    dns.set("mcp.test", ["127.0.0.2", "127.0.0.3"])
    t = Tether(procs, tmp_path, f"""
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
backends = ["dns://mcp.test:{port}"]
[discovery]
interval = "100ms"
resolver = "127.0.0.1:{dns.port}"
[health]
interval = "300ms"
""")
    two = {f"127.0.0.{i}:{port}": "active" for i in (2, 3)}
    wait_until("two active backends", lambda: t.states() == two)
    assert all(b["source"] == f"dns://mcp.test:{port}" for b in t.backends().values())

    async with AsyncExitStack() as stack:
        first = await open_sessions(stack, t.url, 4)
        assert {who for _, who in first} <= {"r1", "r2"}, first

        dns.set("mcp.test", ["127.0.0.2", "127.0.0.3", "127.0.0.4"])
        wait_until("three active backends",
                   lambda: list(t.states().values()).count("active") == 3 and len(t.states()) == 3)
        more = await open_sessions(stack, t.url, 6)
        assert "r3" in {who for _, who in more}, more

        on_r1 = [s for s, who in first + more if who == "r1"]
        assert on_r1, "no session on r1"
        dns.set("mcp.test", ["127.0.0.3", "127.0.0.4"])
        wait_until("r1 draining", lambda: t.states().get(f"127.0.0.2:{port}") == "draining")
        # Its sessions keep working while it lives; new sessions go elsewhere.
        for s in on_r1:
            assert await s.tool("whoami") == "r1"
        fresh = await open_sessions(stack, t.url, 6)
        assert "r1" not in {who for _, who in fresh}, fresh
        assert t.backends()[f"127.0.0.2:{port}"]["sessions_created"] >= 1

        reps["127.0.0.2"][1].stop()
        outcomes = []
        for s in on_r1:
            try:
                outcomes.append(await s.tool("whoami"))
            except Exception as e:  # noqa: BLE001 - the 404 is the expected outcome
                outcomes.append(short_error(e))
        assert all(o.startswith("MCPError -32001 Session not found") for o in outcomes), outcomes
        # Others never noticed.
        for s, who in first + more + fresh:
            if who != "r1":
                assert await s.tool("whoami") == who
    wait_until("the stopped replica removed", lambda: f"127.0.0.2:{port}" not in t.states())
    assert names[f"127.0.0.3:{port}"] == "r2"


async def test_srv_discovery_takes_targets_and_ports_from_the_records(procs, tmp_path):
    """srv://_mcp._tcp.mcp.test: two SRV records naming two hosts with different ports."""
    (p1, _), (p2, _) = replica(procs, "r1", "127.0.0.2"), replica(procs, "r2", "127.0.0.3")
    dns = Dns(procs, tmp_path, srv=[f"_mcp._tcp.mcp.test,a.mcp.test,{p1}", f"_mcp._tcp.mcp.test,b.mcp.test,{p2}"])
    dns.write([("127.0.0.2", "a.mcp.test"), ("127.0.0.3", "b.mcp.test")])
    t = Tether(procs, tmp_path, f"""
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
backends = ["srv://_mcp._tcp.mcp.test"]
[discovery]
interval = "100ms"
resolver = "127.0.0.1:{dns.port}"
""")
    want = {f"127.0.0.2:{p1}": "active", f"127.0.0.3:{p2}": "active"}
    wait_until("both SRV targets", lambda: t.states() == want)
    assert {b["source"] for b in t.backends().values()} == {"srv://_mcp._tcp.mcp.test"}
    async with AsyncExitStack() as stack:
        got = await open_sessions(stack, t.url, 4)
    assert {w for _, w in got} == {"r1", "r2"}, got


async def test_a_failed_lookup_keeps_the_last_known_backends(procs, tmp_path):
    port, _ = replica(procs, "r1")
    dns = Dns(procs, tmp_path)
    dns.set("svc.test", ["127.0.0.1"])
    t = Tether(procs, tmp_path, f"""
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
backends = ["dns://svc.test:{port}"]
[discovery]
interval = "100ms"
resolver = "127.0.0.1:{dns.port}"
""")
    wait_until("one backend", lambda: t.states() == {f"127.0.0.1:{port}": "active"})
    dns.set("other.test", ["127.0.0.1"])  # svc.test no longer resolves
    wait_until("a counted discovery error", lambda: t.metric("tether_discovery_errors_total") >= 2)
    assert t.states() == {f"127.0.0.1:{port}": "active"}
    async with SdkSession(t.url, "legacy", TIMEOUT) as s:
        assert await s.tool("whoami") == "r1"


# ---------------------------------------------------------------- health


async def test_a_frozen_replica_takes_no_new_sessions_until_it_recovers(procs, tmp_path):
    """SIGSTOP: the replica accepts connections (the kernel does) and never answers. Within
    interval * fall + timeout it is unhealthy and new sessions avoid it; after SIGCONT it is
    active again after `rise` probes."""
    reps = {n: replica(procs, n) for n in ("r1", "r2", "r3")}
    backends = ", ".join(f'"http://127.0.0.1:{p}"' for p, _ in reps.values())
    t = Tether(procs, tmp_path, f"""
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
backends = [{backends}]
[health]
interval = "200ms"
timeout = "200ms"
fall = 2
rise = 2
""")
    frozen = f"127.0.0.1:{reps['r2'][0]}"
    wait_until("all active", lambda: set(t.states().values()) == {"active"})
    os.kill(reps["r2"][1].proc.pid, signal.SIGSTOP)
    try:
        stopped_at = time.monotonic()
        wait_until("r2 unhealthy", lambda: t.states()[frozen] == "unhealthy", timeout=5)
        took = time.monotonic() - stopped_at
        # interval * fall + timeout = 0.6 s, plus one interval of phase and the polling.
        assert took < 1.5, took
        async with AsyncExitStack() as stack:
            got = await open_sessions(stack, t.url, 6)
        assert "r2" not in {w for _, w in got}, got
    finally:
        os.kill(reps["r2"][1].proc.pid, signal.SIGCONT)
    wait_until("r2 active again", lambda: t.states()[frozen] == "active", timeout=5)
    async with AsyncExitStack() as stack:
        got = await open_sessions(stack, t.url, 6)
    assert "r2" in {w for _, w in got}, got
    assert t.metric('tether_health_transitions_total{backend="' + frozen + '",state="unhealthy"}') == 1


async def test_a_wrong_probe_path_never_black_holes_the_pool(procs, tmp_path):
    port, _ = replica(procs, "r1")
    t = Tether(procs, tmp_path, f"""
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
backends = ["http://127.0.0.1:{port}"]
[health]
path = "/no-such-path"
interval = "100ms"
timeout = "300ms"
fall = 1
down_after = "1s"
""")
    wait_until("unhealthy", lambda: t.states() == {f"127.0.0.1:{port}": "unhealthy"})
    # Panic mode serves, so readiness holds (else every Tether replica would leave its Service).
    assert t.get("/readyz")[0] == 200
    async with SdkSession(t.url, "legacy", TIMEOUT) as s:
        assert await s.tool("whoami") == "r1"
        # Well past down_after: a backend that answers (wrongly) is never down,
        # so its sessions keep working.
        wait_until("down_after passed", lambda: t.metric(
            f'tether_health_checks_total{{backend="127.0.0.1:{port}",kind="failed"}}') >= 12)
        assert t.states() == {f"127.0.0.1:{port}": "unhealthy"}
        assert await s.tool("whoami") == "r1"
    assert t.metric("tether_panic_picks_total") >= 1


# ---------------------------------------------------------------- rolling restart


@pytest.mark.timeout(120)
async def test_rolling_restart_loses_no_call(procs, tmp_path):
    """3 replicas behind a watched backends file, 20 workers opening short sessions and calling
    tools without pause. Each replica is replaced in turn: a new one is added to the file, the old
    one removed (draining), stopped once Tether has removed it (no request for drain.idle).
    No call fails."""
    live = {n: replica(procs, n) for n in ("a1", "b1", "c1")}
    file = tmp_path / "backends.txt"

    def write() -> None:
        file.write_text("".join(f"http://127.0.0.1:{p}\n" for p, _ in live.values()))

    write()
    t = Tether(procs, tmp_path, f"""
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
[discovery]
file = "{file}"
interval = "100ms"
[drain]
idle = "1s"
[health]
interval = "500ms"
""")
    wait_until("three backends", lambda: len(t.states()) == 3)
    failures: list[str] = []
    calls = 0
    stop = anyio.Event()

    async def worker() -> None:
        nonlocal calls
        while not stop.is_set():
            try:
                async with SdkSession(t.url, "legacy", TIMEOUT) as s:
                    me = await s.tool("whoami")
                    for _ in range(3):
                        assert await s.tool("whoami") == me
                        calls += 1
            except Exception as e:  # noqa: BLE001 - every failure is reported
                failures.append(short_error(e))

    async def roll() -> None:
        for old, new in (("a1", "a2"), ("b1", "b2"), ("c1", "c2")):
            port, proc = await anyio.to_thread.run_sync(replica, procs, new)
            old_addr = f"127.0.0.1:{live[old][0]}"
            old_proc = live.pop(old)[1]
            live[new] = (port, proc)
            write()
            await anyio.to_thread.run_sync(lambda: wait_until(
                f"{old} removed", lambda: old_addr not in t.states(), timeout=30))
            old_proc.stop()
        stop.set()

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(worker)
        tg.start_soon(roll)
    assert not failures, failures[:5]
    assert calls > 100, calls
    assert set(t.states()) == {f"127.0.0.1:{p}" for p, _ in live.values()}


# ---------------------------------------------------------------- reload


async def open_legacy_streams(port: int, n: int):
    """n raw legacy SSE streams (GET /sse) through Tether, each read to its `endpoint` event."""
    async def one():
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(f"GET /sse HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n".encode())
        await w.drain()
        got = b""
        while b"event: endpoint" not in got or b"\n" not in got.split(b"data: ", 1)[-1]:
            chunk = await asyncio.wait_for(r.read(4096), TIMEOUT)
            assert chunk, got
            got += chunk
        assert got.startswith(b"HTTP/1.1 200"), got[:200]
        endpoint = got.split(b"data: ", 1)[1].split(b"\r\n")[0].split(b"\n")[0].decode()
        return r, w, endpoint

    streams = []
    for i in range(0, n, 100):
        streams += await asyncio.gather(*(one() for _ in range(min(100, n - i))))
    return streams


@pytest.mark.timeout(120)
async def test_reload_keeps_every_held_stream(procs, tmp_path):
    """1,000 legacy SSE streams held open; the file changes backends (one added, one removed) and
    limits, and is reloaded by SIGHUP and by POST /reload: no stream is lost (each still carries
    a message's answer), the new limit is in force, and a bad file is rejected with the old
    config kept."""
    reps = {n: replica(procs, n, variant="sse") for n in ("r1", "r2", "r3")}

    def toml(names, extra="") -> str:
        backends = ", ".join(f'"http://127.0.0.1:{reps[n][0]}"' for n in names)
        return f"""
listen = "127.0.0.1:0"
admin = {{ listen = "127.0.0.1:0", token = "s3cret" }}
backends = [{backends}]
[health]
check = "tcp"
{extra}
"""

    t = Tether(procs, tmp_path, toml(["r1", "r2"]))
    streams = await open_legacy_streams(t.port, 1000)
    assert sum(b["streams"] for b in t.backends().values()) == 1000

    t.config.write_text(toml(["r1", "r2", "r3"], "[limits]\nmax_request_body = 1000\n"))
    t.proc.proc.send_signal(signal.SIGHUP)
    wait_until("r3 added", lambda: len(t.states()) == 3)
    assert t.post("/reload")[0] == 401
    t.config.write_text(toml(["r1", "r3"], "[limits]\nmax_request_body = 1000\n"))
    status, body = t.post("/reload", token="s3cret")
    assert status == 200, body
    r2 = f"127.0.0.1:{reps['r2'][0]}"
    wait_until("r2 draining", lambda: t.states().get(r2) == "draining")

    # Every stream still works: a message posted for it is answered on it.
    async def check(stream, i):
        r, w, endpoint = stream
        msg = json.dumps({"jsonrpc": "2.0", "id": i, "method": "ping"}).encode()
        pr, pw = await asyncio.open_connection("127.0.0.1", t.port)
        pw.write(f"POST {endpoint} HTTP/1.1\r\nHost: 127.0.0.1:{t.port}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(msg)}\r\nConnection: close\r\n\r\n".encode() + msg)
        await pw.drain()
        answer = await asyncio.wait_for(pr.read(), TIMEOUT)
        pw.close()
        assert answer.startswith(b"HTTP/1.1 202"), answer[:200]
        got = b""
        while f'"id":{i}'.encode() not in got:
            chunk = await asyncio.wait_for(r.read(4096), TIMEOUT)
            assert chunk, f"stream {i} closed"
            got += chunk

    for i in range(0, 1000, 100):
        await asyncio.gather(*(check(streams[j], j) for j in range(i, i + 100)))
    assert sum(b["streams"] for b in t.backends().values()) == 1000

    # The new limit is in force for new requests.
    big = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"x": "y" * 2000}}).encode()
    r, w = await asyncio.open_connection("127.0.0.1", t.port)
    w.write(f"POST /messages/?session_id=x HTTP/1.1\r\nHost: 127.0.0.1:{t.port}\r\n".encode() + b"Content-Type: application/json\r\n"
            + f"Content-Length: {len(big)}\r\nConnection: close\r\n\r\n".encode() + big)
    await w.drain()
    assert (await asyncio.wait_for(r.read(), TIMEOUT)).startswith(b"HTTP/1.1 413")

    # A bad file: rejected, one line naming the key, the old config stays.
    t.config.write_text(toml(["r1"], "[limits]\nmax_request_bodyy = 5\n"))
    status, body = t.post("/reload", token="s3cret")
    assert status == 400 and "max_request_bodyy" in body, body
    assert t.metric('tether_reloads_total{outcome="rejected"}') == 1
    assert len(t.states()) == 3
    for r, w, _ in streams:
        w.close()


# ---------------------------------------------------------------- graceful shutdown


async def test_sigterm_lets_the_call_finish_then_exits_zero(procs, tmp_path):
    port, _ = replica(procs, "r1")
    t = Tether(procs, tmp_path, f"""
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
backends = ["http://127.0.0.1:{port}"]
shutdown_grace = "20s"
""")
    assert t.get("/readyz")[0] == 200

    def refused() -> bool:
        try:
            socket.create_connection(("127.0.0.1", t.port), timeout=2).close()
            return False
        except OSError:
            return True

    result: dict = {}
    backend = f"127.0.0.1:{port}"

    async def client_side():
        # The session ends after the shutdown began: its DELETE then finds the listener
        # closed, which the SDK reports on the way out. Only the call's result matters here.
        try:
            async with SdkSession(t.url, "legacy", TIMEOUT) as s:
                # The client lists the tools on its first call (for their schemas): done
                # before the shutdown, so the slow call needs no new request after it.
                assert await s.tool("whoami") == "r1"
                result["base"] = t.backends()[backend]["outstanding"]
                result["slow"] = await s.tool("slow", {"steps": 3, "delay": 1.0})
        except Exception as e:  # noqa: BLE001
            result.setdefault("exit", short_error(e))

    async with anyio.create_task_group() as tg:
        tg.start_soon(client_side)
        await anyio.to_thread.run_sync(lambda: wait_until(
            "the call in flight",
            lambda: "base" in result and t.backends()[backend]["outstanding"] > result["base"]))
        t.proc.proc.send_signal(signal.SIGTERM)
        status, body = await anyio.to_thread.run_sync(lambda: wait_until(
            "readiness to fail", lambda: (r := t.get("/readyz"))[0] == 503 and r))
        assert "shutting down" in body, (status, body)
        # The proxy listener closes: new connections are refused.
        await anyio.to_thread.run_sync(lambda: wait_until("the listener closed", refused))
        assert t.proc.proc.poll() is None, "exited with the call in flight"
    assert result.get("slow") == "r1:done", result
    assert t.proc.proc.wait(timeout=20) == 0
