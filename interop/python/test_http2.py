"""HTTP/2 through Tether with real peers: one `httpx2.AsyncClient(http2=True)` (the HTTP client
the Python SDK takes) carries a Streamable session with a sampling round trip and progress, a
2026-07-28 call, and a legacy HTTP+SSE session (its held stream and its POSTs), all over one h2
connection to Tether terminating TLS, in front of real SDK replicas (the legacy ones in their own
pool, chosen by path). Then a reset stream (RST_STREAM, sent with the `h2` library itself: httpx2
drops a stream it stops reading without resetting it) cancels its call on the real SDK server at
once, and the connection goes on.
"""

from __future__ import annotations

import json
import socket
import ssl
import time

import anyio
import h2.config
import h2.connection
import h2.errors
import h2.events
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from conftest import REPLICA_NAMES
from test_modern import MODERN, modern_call, modern_headers, result_text
from test_operations import replica
from test_sdk_scenarios import elicit_cb, sampling_cb
from test_tls import pki, tls_tether  # noqa: F401 - the module-scoped CA fixture

pytestmark = pytest.mark.anyio

TIMEOUT = 15.0


class Shared:
    """The open client, for sse_client's `async with factory(...)` (which would open and close its own)."""

    def __init__(self, client: httpx2.AsyncClient) -> None:
        self.client = client

    async def __aenter__(self) -> httpx2.AsyncClient:
        return self.client

    async def __aexit__(self, *exc) -> bool:
        return False


def h2_client(pki) -> httpx2.AsyncClient:  # noqa: F811
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    return httpx2.AsyncClient(http2=True, verify=ctx, timeout=httpx2.Timeout(30.0, read=60.0))


async def test_every_era_over_one_h2_connection(procs, tmp_path, pki, streamable_replicas, sse_replicas):  # noqa: F811
    legacy = ", ".join(f'"http://127.0.0.1:{p}"' for p in sse_replicas)
    # One Tether for every era: the legacy servers in their own pool, chosen by path.
    t = tls_tether(procs, tmp_path, pki, [f"http://127.0.0.1:{p}" for p in streamable_replicas], f"""
[pools.legacy]
backends = [{legacy}]
[[routes]]
path_prefix = "/sse"
pool = "legacy"
[[routes]]
pool = "default"
""")
    base = f"https://127.0.0.1:{t.port}"
    client = h2_client(pki)
    async with client:
        # A Streamable session: whoami sticks, a sampling round trip, progress notifications.
        async with streamable_http_client(f"{base}/mcp", http_client=client) as (read, write):
            async with ClientSession(read, write, sampling_callback=sampling_cb, elicitation_callback=elicit_cb,
                                     read_timeout_seconds=TIMEOUT) as s:
                await s.initialize()
                names = {(await s.call_tool("whoami", {})).content[0].text for _ in range(4)}
                assert len(names) == 1 and names <= set(REPLICA_NAMES), names
                sampled = await s.call_tool("sample", {"prompt": "over h2"})
                assert not sampled.is_error, sampled
                seen = []

                async def on_progress(p, total, message):
                    seen.append(p)

                done = await s.call_tool("progress", {"steps": 3, "delay": 0.05}, progress_callback=on_progress)
                assert not done.is_error and len(seen) == 3, (done, seen)
        # A 2026-07-28 call on the same connection.
        r = await client.post(f"{base}/mcp", json=modern_call("whoami"), headers=modern_headers(name="whoami"))
        assert r.http_version == "HTTP/2" and r.status_code == 200, (r.http_version, r.text)
        assert result_text(r) in REPLICA_NAMES

        # A legacy session: its held stream and its POSTs, on the same connection.
        async with sse_client(f"{base}/sse", timeout=10.0, sse_read_timeout=60.0,
                              httpx_client_factory=lambda **_: Shared(client)) as (read, write):
            async with ClientSession(read, write, read_timeout_seconds=TIMEOUT) as s:
                await s.initialize()
                names = {(await s.call_tool("whoami", {})).content[0].text for _ in range(3)}
                assert len(names) == 1, names
    assert t.metric("tether_http2_connections_total") == 1
    assert t.metric("tether_http2_streams_total") >= 12
    assert t.metric("tether_tls_handshakes_total") == 1


def h2_socket(pki, port: int):
    """A raw HTTP/2 connection (the `h2` library, what httpx2 uses) over TLS: httpx2 forgets a
    stream it stops reading without resetting it, so a test that needs RST_STREAM speaks h2 itself."""
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    ctx.set_alpn_protocols(["h2"])
    sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT),
                           server_hostname="127.0.0.1")
    assert sock.selected_alpn_protocol() == "h2"
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    return sock, conn


async def test_a_reset_stream_cancels_the_call_on_the_sdk_server(procs, tmp_path, pki):  # noqa: F811
    """A long 2026-07-28 tool call over h2; the client resets its stream (RST_STREAM, CANCEL)
    after the first progress event: the real server's handler is cancelled at once (Tether ends
    the upstream request), and the connection goes on serving."""
    port, _ = replica(procs, "r1")
    t = tls_tether(procs, tmp_path, pki, [f"http://127.0.0.1:{port}"])
    async with h2_client(pki) as client:
        async def stats() -> str:
            r = await client.post(t.url, json=modern_call("slow_stats"), headers=modern_headers(name="slow_stats"))
            return result_text(r)

        assert await stats() == "r1:cancelled=0:completed=0"
        sock, conn = h2_socket(pki, t.port)
        long_call = modern_call("slow", {"steps": 100, "delay": 0.1}, id_=2)
        long_call["params"]["_meta"]["progressToken"] = "p1"
        body = json.dumps(long_call).encode()
        headers = [(":method", "POST"), (":scheme", "https"), (":authority", f"127.0.0.1:{t.port}"),
                   (":path", "/mcp"), ("content-length", str(len(body)))]
        headers += [(k.lower(), v) for k, v in modern_headers(name="slow").items()]
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, headers)
        conn.send_data(sid, body, end_stream=True)
        sock.sendall(conn.data_to_send())
        seen = b""
        while b"notifications/progress" not in seen:
            data = sock.recv(65536)
            assert data, seen
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    seen += event.data
                    conn.acknowledge_received_data(len(event.data), event.stream_id)
            sock.sendall(conn.data_to_send())
        conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
        sock.sendall(conn.data_to_send())
        reset = time.monotonic()
        while (now := await stats()) == "r1:cancelled=0:completed=0":
            assert time.monotonic() - reset < 2.0, "the server did not see the cancellation"
            await anyio.sleep(0.02)
        assert now == "r1:cancelled=1:completed=0", now
        # The same connection serves the next stream.
        sid = conn.get_next_available_stream_id()
        body = json.dumps(modern_call("whoami")).encode()
        headers = headers[:4] + [("content-length", str(len(body)))] + \
            [(k.lower(), v) for k, v in modern_headers(name="whoami").items()]
        conn.send_headers(sid, headers)
        conn.send_data(sid, body, end_stream=True)
        sock.sendall(conn.data_to_send())
        status = None
        while status is None:
            for event in conn.receive_data(sock.recv(65536)):
                if isinstance(event, h2.events.ResponseReceived) and event.stream_id == sid:
                    status = dict(event.headers)[b":status"]
        assert status == b"200", status
        sock.close()
    assert t.metric("tether_http2_resets_total") == 1
