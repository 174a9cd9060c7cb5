"""Sends N sticky tools/call POSTs through a proxy over C kept-alive connections (one session):
the fixed workload of bench/instructions.sh. Usage: sticky_client.py PORT N C"""
import socket, sys, json
port, n, conns = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
def req(sock, body, sid=None):
    h = f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2025-06-18\r\n"
    if sid: h += f"Mcp-Session-Id: {sid}\r\n"
    sock.sendall((h + f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
    data = b""
    while b"\r\n\r\n" not in data: data += sock.recv(65536)
    head, rest = data.split(b"\r\n\r\n", 1)
    hl = head.decode().lower().split("\r\n")
    cl = int([l.split(":")[1] for l in hl if l.startswith("content-length")][0])
    while len(rest) < cl: rest += sock.recv(65536)
    s = [l.split(":",1)[1].strip() for l in head.decode().split("\r\n") if l.lower().startswith("mcp-session-id")]
    return hl[0], (s[0] if s else None)
socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(conns)]
init = json.dumps({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"cg","version":"0"}}}).encode()
_, sid = req(socks[0], init)
call = b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello"}}}'
for i in range(n):
    st, _ = req(socks[i % conns], call, sid)
    assert " 200" in st, st
print("ok", n)
