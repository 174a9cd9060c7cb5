#!/usr/bin/env python3
"""RSS growth per held legacy SSE stream through a proxy.

Opens N `GET /sse` streams at URL (the fast replicas answer each with an `endpoint` event and
hold it), waits until every stream has its first event, and prints the RSS growth of the
process tree PID (the proxy) per stream. Adapted from ../../shared/bench/sse_hold.py; the
backend is the fast replica instead of an embedded one.
Usage: sse_hold.py PID URL N     prints: streams=N base_kib=B after_kib=A kib_per_stream=K
"""
import asyncio, os, ssl, sys

# https:// URLs (bench/tls.sh): the proxies' self-signed certificate is not verified.
TLS = ssl.create_default_context()
TLS.check_hostname = False
TLS.verify_mode = ssl.CERT_NONE


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def tree_rss(pid):
    total = rss_kib(pid)
    try:
        for child in open(f"/proc/{pid}/task/{pid}/children").read().split():
            total += tree_rss(int(child))
    except FileNotFoundError:
        pass
    return total


async def client(host, port, path, tls):
    r, w = await asyncio.open_connection(host, port, ssl=TLS if tls else None)
    w.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n\r\n".encode())
    await w.drain()
    buf = b""
    while b"sessionId=" not in buf or b"\n\n" not in buf[buf.find(b"sessionId="):]:
        chunk = await r.read(4096)
        if not chunk:
            raise RuntimeError("stream closed early: %r" % buf[:200])
        buf += chunk
    return r, w


async def main():
    pid, url, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    tls = url.startswith("https://")
    hostport, _, path = url.split("//", 1)[1].partition("/")
    host, port = hostport.split(":")
    base = tree_rss(pid)
    conns = []
    for i in range(0, n, 500):
        conns += await asyncio.gather(*[client(host, int(port), "/" + path, tls) for _ in range(min(500, n - i))])
    await asyncio.sleep(1.0)
    after = tree_rss(pid)
    print(f"streams={len(conns)} base_kib={base} after_kib={after} kib_per_stream={(after - base) / max(1, len(conns)):.2f}")
    for r, w in conns:
        w.close()
    await asyncio.sleep(0.5)
    os._exit(0)


asyncio.run(main())
