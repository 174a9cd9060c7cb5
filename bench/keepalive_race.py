"""The keep-alive close race: a backend closes an idle connection just as the proxy reuses it.

Starts one real backend (uvicorn, or Node's http server) whose keep-alive timeout is KEEPALIVE
seconds, a proxy (a tether binary) in front of it, then sends N requests, each on a new client
connection, spaced by the backend's timeout plus a random jitter of +-JITTER ms, so each request
arrives about when the backend closes the proxy's idle upstream connection. Prints how many
requests got no 2xx answer.

Usage: python3 bench/keepalive_race.py TETHER_BIN uvicorn|node [N=300] [KEEPALIVE=1.0] [JITTER=20]
       (uvicorn from the interop venv: .venv/bin/python bench/keepalive_race.py ...)
Not part of CI: it takes N x KEEPALIVE seconds.
"""

import http.client
import os
import random
import socket
import subprocess
import sys
import tempfile
import time

NODE_SERVER = r"""
const http = require('http');
const srv = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    const body = '{"jsonrpc":"2.0","id":1,"result":{}}';
    res.writeHead(200, {'content-type': 'application/json', 'content-length': body.length});
    res.end(body);
  });
});
srv.keepAliveTimeout = Number(process.argv[2]) * 1000;
srv.listen(0, '127.0.0.1', () => console.log('PORT ' + srv.address().port));
"""

UVICORN_SERVER = r"""
import socket, sys, uvicorn
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    body = b'{"jsonrpc":"2.0","id":1,"result":{}}'
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(128)
print("PORT", s.getsockname()[1], flush=True)
cfg = uvicorn.Config(app, timeout_keep_alive=float(sys.argv[1]), log_level="warning")
uvicorn.Server(cfg).run(sockets=[s])
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_backend(kind, keepalive):
    with tempfile.NamedTemporaryFile("w", suffix=".js" if kind == "node" else ".py", delete=False) as f:
        f.write(NODE_SERVER if kind == "node" else UVICORN_SERVER)
    cmd = ["node", f.name, str(keepalive)] if kind == "node" else [sys.executable, f.name, str(keepalive)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().split()
    return proc, int(line[1])


def wait_port(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on {port}")


def main():
    tether, kind = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 300
    keepalive = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0
    jitter = float(sys.argv[5]) if len(sys.argv) > 5 else 20.0
    backend, bport = start_backend(kind, keepalive)
    pport = free_port()
    proxy = subprocess.Popen(
        [tether, "--listen", f"127.0.0.1:{pport}", "--backend", f"http://127.0.0.1:{bport}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "TETHER_LOG": "error"},
    )
    try:
        wait_port(pport)
        failed = []
        body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}'
        for i in range(n):
            if i:
                time.sleep(keepalive + random.uniform(-jitter, jitter) / 1000)
            c = http.client.HTTPConnection("127.0.0.1", pport, timeout=10)
            try:
                c.request("POST", "/mcp", body, {"content-type": "application/json", "connection": "close"})
                status = c.getresponse().status
            except OSError as e:
                status = str(e)
            finally:
                c.close()
            if status != 200:
                failed.append((i, status))
        print(f"{os.path.basename(tether)} {kind} keepalive={keepalive}s jitter=+-{jitter}ms: "
              f"{len(failed)} of {n} requests failed {failed[:10]}")
    finally:
        proxy.terminate()
        backend.terminate()


if __name__ == "__main__":
    main()
