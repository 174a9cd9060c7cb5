"""HTTPS at both ends of Tether, with real peers: the Python SDK's clients (Streamable sessions,
legacy SSE, the 2026-07-28 client) reach Tether over TLS, trusting a test CA the way a user's
machine trusts a real one (`SSL_CERT_FILE`); and real SDK replicas served over TLS by uvicorn
are Tether's `https://` backends, verified against that CA (`tls.backend_ca`), or refused when
Tether is not told to trust it.

The CA and certificates come from `trustme`; Tether runs from a config file, as an operator runs it.
"""

from __future__ import annotations

import json

import httpx2
import pytest
import trustme

from conftest import HERE, PORT_RE, PYTHON, REPLICA_NAMES
from test_operations import Tether, wait_until
from test_sdk_scenarios import SdkSession
from test_sdk_sticky import OK_READ_TIMEOUT, assert_sticky, report, run_sessions, sse_session, streamable_session

pytestmark = pytest.mark.anyio

TIMEOUT = 15.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A test CA (ca.pem) and a certificate for 127.0.0.1 and localhost (server.pem, server.key)."""
    d = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    leaf.cert_chain_pems[0].write_to_path(str(d / "server.pem"))
    for extra in leaf.cert_chain_pems[1:]:
        extra.write_to_path(str(d / "server.pem"), append=True)
    leaf.private_key_pem.write_to_path(str(d / "server.key"))
    return d


@pytest.fixture
def trusting(pki, monkeypatch):
    """The clients in this process trust the test CA (httpx2 reads SSL_CERT_FILE)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(pki / "ca.pem"))
    return pki


def tls_tether(procs, tmp_path, pki, backends: list[str], tls_extra: str = "") -> Tether:
    t = Tether(procs, tmp_path, f"""
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
backends = [{", ".join(json.dumps(b) for b in backends)}]
[tls]
cert = "{pki / 'server.pem'}"
key = "{pki / 'server.key'}"
{tls_extra}
""")
    t.url = f"https://127.0.0.1:{t.port}/mcp"
    return t


async def test_sdk_sessions_over_https(procs, tmp_path, trusting, streamable_replicas, sse_replicas):
    """Streamable sessions and legacy SSE sessions, 12 concurrent each, over HTTPS: every call
    succeeds, each session stays on one replica, and the sessions spread."""
    for replicas, session_fn, path in ((streamable_replicas, streamable_session, "/mcp"),
                                       (sse_replicas, sse_session, "/sse")):
        t = tls_tether(procs, tmp_path, trusting, [f"http://127.0.0.1:{p}" for p in replicas])
        outcomes = await run_sessions(session_fn, f"https://127.0.0.1:{t.port}{path}", OK_READ_TIMEOUT)
        print(f"{path} over https:\n{report(outcomes)}")
        assert_sticky(outcomes, expect_distinct=2)
        assert t.metric('tether_tls_handshakes_total{version="1.3"}') >= 12


async def test_modern_client_over_https(procs, tmp_path, trusting, streamable_replicas):
    """The SDK's 2026-07-28 client (no session) over HTTPS; and a plain-HTTP request to the TLS
    port is refused at the handshake, counted."""
    t = tls_tether(procs, tmp_path, trusting, [f"http://127.0.0.1:{p}" for p in streamable_replicas])
    async with SdkSession(t.url, "2026-07-28", TIMEOUT) as s:
        assert await s.tool("whoami") in REPLICA_NAMES
    with pytest.raises(httpx2.HTTPError):
        httpx2.post(f"http://127.0.0.1:{t.port}/mcp", json={}, timeout=5)
    wait_until("the plain request counted", lambda: t.metric(
        'tether_tls_handshake_failures_total{reason="not_tls"}') == 1)


def tls_replicas(procs, pki, variant: str = "stateful") -> list[int]:
    started = [procs.start(f"tls replica {name}", [PYTHON, str(HERE / "replica.py"), "--name", name,
                                                    "--variant", variant, "--tls-cert", str(pki / "server.pem"),
                                                    "--tls-key", str(pki / "server.key")])
               for name in REPLICA_NAMES]
    return [int(p.wait_for_stdout(PORT_RE).group(1)) for p in started]


async def test_https_backends_verified_against_the_ca(procs, tmp_path, pki):
    """Three SDK replicas served over TLS by uvicorn: with the CA in tls.backend_ca, sessions work
    and stick (the health checks pass over TLS too); without it, the backend's certificate is
    untrusted: a clear 502 with a JSON-RPC body, a log line, a metric, and no request reaches it."""
    ports = tls_replicas(procs, pki)
    backends = [f"https://127.0.0.1:{p}" for p in ports]
    t = Tether(procs, tmp_path, f"""
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
backends = [{", ".join(json.dumps(b) for b in backends)}]
[tls]
backend_ca = "{pki / 'ca.pem'}"
[health]
interval = "200ms"
""")
    wait_until("a passing MCP probe of every https backend", lambda: all(
        t.metric('tether_health_checks_total{backend="127.0.0.1:%d",kind="ok"}' % p) >= 1 for p in ports))
    _, text = t.get("/metrics")
    failed = [l for l in text.splitlines() if l.startswith("tether_health_checks_total{") and 'kind="ok"' not in l]
    assert not failed, failed
    assert all(b["health"] == "healthy" for b in t.backends().values())
    outcomes = await run_sessions(streamable_session, t.url, OK_READ_TIMEOUT)
    print(f"https backends:\n{report(outcomes)}")
    assert_sticky(outcomes, expect_distinct=2)

    untrusting = tmp_path / "untrusting"
    untrusting.mkdir()
    u = Tether(procs, untrusting, f"""
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
backends = [{json.dumps(backends[0])}]
[health]
check = "none"
""")
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "raw", "version": "0"}}}
    r = httpx2.post(u.url, json=init, timeout=10,
                    headers={"Accept": "application/json, text/event-stream"})
    assert r.status_code == 502, r.text
    assert r.json()["error"]["message"] == "Upstream unavailable", r.text
    assert u.metric('tether_upstream_errors_total{backend="127.0.0.1:%d",kind="tls"}' % ports[0]) == 1
    wait_until("the refusal logged", lambda: "certificate" in u.proc.tail(200) and "upstream call failed"
               in u.proc.tail(200))
