"""A plain round-robin HTTP/1.1 reverse proxy: the negative control of the interop tests.

It has NO session affinity of any kind: every request goes to the next backend in turn. It
streams responses byte by byte as they arrive (SSE flows event by event, nothing is buffered),
keeps the client's Host header, and propagates a client disconnect by closing the upstream
connection. Each request uses its own upstream connection and the client connection is closed
after every response (``Connection: close``), which keeps the framing trivial: the response
body is everything the backend sends until it closes.

Usage:
    python rr_proxy.py --backend http://127.0.0.1:P1 --backend http://127.0.0.1:P2 ...

Binds 127.0.0.1 on an ephemeral port and prints exactly ``PORT <n>`` on stdout when ready.
Only the standard library is used (raw asyncio).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
from urllib.parse import urlsplit

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
}
MAX_HEAD = 64 * 1024


class Backend:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise SystemExit(f"backend must be an http:// URL: {url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.url = url


def parse_head(raw: bytes) -> tuple[str, list[tuple[str, str]]]:
    lines = raw.decode("latin-1").split("\r\n")
    start = lines[0]
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return start, headers


def header(headers: list[tuple[str, str]], name: str) -> str | None:
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


def build_head(start: str, headers: list[tuple[str, str]]) -> bytes:
    out = [start]
    out.extend(f"{k}: {v}" for k, v in headers if k.lower() not in HOP_BY_HOP)
    out.append("Connection: close")
    return ("\r\n".join(out) + "\r\n\r\n").encode("latin-1")


async def relay_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers) -> None:
    """Copy a request body framed by Content-Length or chunked encoding, as is."""
    te = (header(headers, "transfer-encoding") or "").lower()
    if "chunked" in te:
        while True:
            size_line = await reader.readuntil(b"\r\n")
            writer.write(size_line)
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                # trailers, then the final empty line
                while True:
                    line = await reader.readuntil(b"\r\n")
                    writer.write(line)
                    if line == b"\r\n":
                        break
                break
            writer.write(await reader.readexactly(size + 2))
            await writer.drain()
    else:
        length = int(header(headers, "content-length") or "0")
        while length > 0:
            chunk = await reader.read(min(length, 65536))
            if not chunk:
                raise ConnectionError("client closed during request body")
            writer.write(chunk)
            length -= len(chunk)
    await writer.drain()


class RoundRobinProxy:
    def __init__(self, backends: list[Backend], verbose: bool = False) -> None:
        self.cycle = itertools.cycle(backends)
        self.verbose = verbose
        self.counter = 0

    async def handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        bwriter: asyncio.StreamWriter | None = None
        try:
            try:
                raw = await creader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            start, headers = parse_head(raw[:-4])
            method, target, version = start.split(" ", 2)
            backend = next(self.cycle)
            self.counter += 1
            if self.verbose:
                print(f"rr_proxy: #{self.counter} {method} {target} -> {backend.url}", file=sys.stderr, flush=True)
            try:
                breader, bwriter = await asyncio.open_connection(backend.host, backend.port)
            except OSError:
                cwriter.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                await cwriter.drain()
                return
            bwriter.write(build_head(f"{method} {backend.prefix}{target} {version}", headers))
            await relay_body(creader, bwriter, headers)

            # Response head: rewrite the connection handling, keep everything else.
            rraw = await breader.readuntil(b"\r\n\r\n")
            rstart, rheaders = parse_head(rraw[:-4])
            cwriter.write(build_head(rstart, rheaders))
            await cwriter.drain()

            async def pump() -> None:
                while True:
                    chunk = await breader.read(65536)
                    if not chunk:
                        return
                    cwriter.write(chunk)
                    await cwriter.drain()

            async def client_gone() -> None:
                # The client sends nothing more on this connection; EOF means it went away.
                while await creader.read(65536):
                    pass

            pump_task = asyncio.create_task(pump())
            gone_task = asyncio.create_task(client_gone())
            done, pending = await asyncio.wait({pump_task, gone_task}, return_when=asyncio.FIRST_COMPLETED)
            for t in pending:
                t.cancel()
            for t in pending:
                try:
                    await t
                except (asyncio.CancelledError, Exception):
                    pass
            for t in done:
                if not t.cancelled():
                    t.exception()  # consume it: a reset connection just ends the exchange
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            for w in (bwriter, cwriter):
                if w is not None:
                    try:
                        w.close()
                    except Exception:
                        pass


async def run(backends: list[Backend], verbose: bool) -> None:
    proxy = RoundRobinProxy(backends, verbose)
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0, limit=MAX_HEAD, backlog=256)
    port = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"PORT {port}\n")
    sys.stdout.flush()
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description="round-robin HTTP reverse proxy without affinity")
    parser.add_argument("--backend", action="append", required=True, help="backend base URL (repeatable)")
    parser.add_argument("--verbose", action="store_true", help="log each routed request on stderr")
    args = parser.parse_args()
    try:
        asyncio.run(run([Backend(b) for b in args.backend], args.verbose))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
