#!/usr/bin/env python3
"""Per-event latency of SSE events through a proxy.

Opens S streams at URL (`/sse?tick_ms=T` on the fast replica: every T ms an event whose data is
the replica's clock in ns when it was written) and, for D seconds, takes arrival time minus that
stamp for every event. The client's own cost is in every figure alike, so the difference between
a proxy and `direct` is what the proxy adds.
Usage: sse_latency.py URL [streams] [tick_ms] [seconds]    prints: events=N p50_us=.. p99_us=..
"""
import asyncio, sys, time


async def stream(host, port, path, samples, stop):
    r, w = await asyncio.open_connection(host, port)
    w.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n\r\n".encode())
    await w.drain()
    buf = b""
    while time.monotonic() < stop:
        try:
            chunk = await asyncio.wait_for(r.read(65536), timeout=max(0.01, stop - time.monotonic()))
        except asyncio.TimeoutError:
            break
        now = time.time_ns()
        if not chunk:
            break
        buf += chunk
        while True:
            at = buf.find(b"event: tick\ndata: ")
            if at < 0:
                break
            end = buf.find(b"\n", at + 18)
            if end < 0:
                break
            samples.append((now - int(buf[at + 18:end])) / 1000.0)
            buf = buf[end:]
    w.close()


async def main():
    url = sys.argv[1]
    s = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    tick = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    secs = float(sys.argv[4]) if len(sys.argv) > 4 else 5
    hostport, _, path = url.split("//", 1)[1].partition("/")
    host, port = hostport.split(":")
    samples = []
    stop = time.monotonic() + secs
    await asyncio.gather(*[stream(host, int(port), f"/{path}?tick_ms={tick}", samples, stop) for _ in range(s)])
    samples = sorted(samples[s:])  # drop the first S samples (warm-up)
    if not samples:
        print("events=0 p50_us=- p99_us=-")
        return
    pick = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))]
    print(f"events={len(samples)} p50_us={pick(0.5):.1f} p99_us={pick(0.99):.1f}")


asyncio.run(main())
