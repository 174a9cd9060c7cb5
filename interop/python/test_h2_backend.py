"""HTTP/2 to backends, with real peers: Python SDK replicas served by Hypercorn (HTTP/2: h2 by ALPN
over TLS with a trustme CA, h2c with prior knowledge on plain TCP) are Tether's `protocol = "h2"`
backends. The real SDK client runs Streamable sessions (tools/call, a progress-notification
stream) and legacy SSE sessions through Tether over HTTP/1.1; every request the replicas saw came
over HTTP/2 (the ASGI scope's `http_version`, printed by `replica.py --log-versions`).

Negative control: a uvicorn replica (HTTP/1.1 only) configured `h2` over TLS does not choose h2
by ALPN: a 502 with a JSON-RPC body, `tether_upstream_errors_total{kind="tls"}`, nothing reaches it.
"""

from __future__ import annotations

import json
import re

import httpx2
import pytest

from conftest import HERE, PORT_RE, PYTHON
from test_operations import Tether, wait_until
from test_sdk_scenarios import SdkSession
from test_tls import pki  # noqa: F401  (the test CA and certificate, a fixture)
from test_sdk_sticky import OK_READ_TIMEOUT, assert_sticky, report, run_sessions, sse_session, streamable_session

pytestmark = pytest.mark.anyio

TIMEOUT = 15.0
VER_RE = re.compile(r"^\[out\] VER (\S+) (\S+) (\S+)$")


class H2Replicas:
    """Hypercorn replicas r1 (h2 over TLS), r2 (h2 over TLS), r3 (h2c) of one variant."""

    def __init__(self, procs, pki, variant: str) -> None:
        tls = ["--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key")]
        self.procs, self.backends = [], []
        for name, secure in (("r1", True), ("r2", True), ("r3", False)):
            argv = [PYTHON, str(HERE / "replica.py"), "--name", name, "--variant", variant,
                    "--server", "hypercorn", "--log-versions"] + (tls if secure else [])
            p = procs.start(f"hypercorn replica {name} ({variant})", argv)
            port = int(p.wait_for_stdout(PORT_RE).group(1))
            scheme = "https" if secure else "http"
            self.procs.append(p)
            self.backends.append({"url": f"{scheme}://127.0.0.1:{port}", "protocol": "h2"})

    def versions(self) -> list[tuple[str, str, str]]:
        """(http_version, method, path) of every request the replicas saw."""
        return [m.groups() for p in self.procs for line in list(p.lines) if (m := VER_RE.match(line))]


def toml_list(entries: list[dict]) -> str:
    return ", ".join("{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in e.items()) + " }" for e in entries)


def h2_tether(procs, tmp_path, pki, backends: list[dict]) -> Tether:
    return Tether(procs, tmp_path, f"""
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
backends = [{toml_list(backends)}]
[tls]
backend_ca = "{pki / 'ca.pem'}"
[health]
interval = "200ms"
""")


def assert_all_http2(replicas: H2Replicas, at_least: int) -> None:
    seen = replicas.versions()
    assert len(seen) >= at_least, seen
    other = [s for s in seen if s[0] != "2"]
    assert not other, f"requests that did not come over HTTP/2: {other[:10]}"


async def test_streamable_sessions_over_h2_backends(procs, tmp_path, pki):
    """12 concurrent Streamable sessions through Tether to h2 (TLS) and h2c replicas: every call
    succeeds, each session stays on its replica, the sessions spread; a progress stream arrives
    whole; the health checks pass over HTTP/2; every request the replicas saw was HTTP/2."""
    replicas = H2Replicas(procs, pki, "stateful")
    t = h2_tether(procs, tmp_path, pki, replicas.backends)
    wait_until("a passing MCP probe of every h2 backend", lambda: all(
        b["health"] == "healthy" and b["protocol"] == "h2" for b in t.backends().values())
        and all(t.metric('tether_health_checks_total{backend="%s",kind="ok"}'
                         % b["url"].split("://")[1]) >= 1 for b in replicas.backends))
    outcomes = await run_sessions(streamable_session, t.url, OK_READ_TIMEOUT)
    print(f"streamable over h2 backends:\n{report(outcomes)}")
    assert_sticky(outcomes, expect_distinct=2)

    async with SdkSession(t.url, "legacy", TIMEOUT) as s:
        name = await s.tool("whoami")
        done = await s.tool("progress", {"steps": 3, "delay": 0.05}, progress=True)
        assert name in done, (name, done)
        assert [p[0] for p in s.seen.progress] == [1, 2, 3], s.seen.progress
    assert_all_http2(replicas, at_least=12 * 4)
    assert t.metric("tether_upstream_errors_total") == 0


async def test_legacy_sse_sessions_over_h2_backends(procs, tmp_path, pki):
    """Legacy HTTP+SSE sessions (a held GET stream and its POSTs) through h2 backends."""
    replicas = H2Replicas(procs, pki, "sse")
    t = h2_tether(procs, tmp_path, pki, replicas.backends)
    url = f"http://127.0.0.1:{t.port}/sse"
    outcomes = await run_sessions(sse_session, url, OK_READ_TIMEOUT, n=6)
    print(f"legacy sse over h2 backends:\n{report(outcomes)}")
    assert_sticky(outcomes, expect_distinct=2)
    assert_all_http2(replicas, at_least=6 * 3)
    assert any(m == "GET" and p == "/sse" for _, m, p in replicas.versions())


async def test_a_server_without_h2_is_refused(procs, tmp_path, pki):
    """Negative control: uvicorn speaks HTTP/1.1 only; configured h2 over TLS it does not choose h2
    by ALPN, so Tether refuses it: 502, a JSON-RPC body, the tls error counted, no request seen."""
    p = procs.start("uvicorn replica (HTTP/1.1 only)", [
        PYTHON, str(HERE / "replica.py"), "--name", "r1", "--variant", "stateful", "--log-versions",
        "--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key")])
    port = int(p.wait_for_stdout(PORT_RE).group(1))
    t = Tether(procs, tmp_path, f"""
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
backends = [{{ url = "https://127.0.0.1:{port}", protocol = "h2" }}]
[tls]
backend_ca = "{pki / 'ca.pem'}"
[health]
check = "none"
""")
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "raw", "version": "0"}}}
    r = httpx2.post(t.url, json=init, timeout=10, headers={"Accept": "application/json, text/event-stream"})
    assert r.status_code == 502, r.text
    assert r.json()["error"]["message"] == "Upstream unavailable", r.text
    assert t.metric('tether_upstream_errors_total{backend="127.0.0.1:%d",kind="tls"}' % port) == 1
    wait_until("the refusal logged", lambda: "ALPN" in t.proc.tail(200))
    assert not [l for l in p.lines if VER_RE.match(l)], "nothing reached the HTTP/1.1-only replica"
