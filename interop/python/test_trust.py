"""Session binding and session-key rotation, with the real Python SDK (mcp 2.3.0) as client and
real SDK replicas (replica.py) as servers.

Binding (`[sessions] bind = "jwt:sub"`): Tether seals the `sub` claim of the caller's bearer JWT
(never verified: the test JWTs are unsigned) into the session token. A refreshed JWT of the same
subject keeps the session; a request of the session with another subject's JWT, or with none, is
answered 404 `-32001 Session not found` by Tether itself. That no backend saw such a request is
read from the replicas' own request logs (`replica.py --log-requests`: one `REQ ...` stdout line per
request), made complete by a barrier request sent straight to each replica; a request that is
forwarded then shows up there (the positive control in each test). Health checks are `tcp`, so
the only HTTP requests a replica gets are the ones Tether forwards for the clients.

Rotation: two Tether instances read one key file (first key seals, every listed key opens), and
go through the rollout K1 -> K1,K2 -> K2,K1 -> K2 with a reload of each (SIGHUP for one, POST
/reload for the other) applied as `/config`'s `session_key_ids` shows, never after a sleep.

Waiting is by polling a condition with a deadline (`wait_until`), never by sleeping.
"""

from __future__ import annotations

import base64
import json
import re
import signal
import subprocess
import time
import uuid
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import httpx2
import pytest
from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from conftest import HERE, PORT_RE, PYTHON, REPLICA_NAMES, tether_bin
from test_operations import Tether, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.filterwarnings("ignore")]

TIMEOUT = 15.0
PV = "2025-11-25"
ACCEPT = "application/json, text/event-stream"
REQ_RE = re.compile(r"^\[out\] REQ (\S+) (\S+) sid=(\S+)$")
SAMPLE_RE = re.compile(r"^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$")
BINDING = "tether_session_binding_rejections_total"
OPENS = "tether_token_opens_total"


# ---------------------------------------------------------------- helpers


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(sub: str, iat: int | None = None) -> str:
    """An unsigned-looking JWT (header.payload.signature, base64url) for `sub`, with its own jti."""
    iat = int(time.time()) if iat is None else iat
    claims = {"iss": "https://idp.test", "sub": sub, "aud": "tether", "iat": iat, "exp": iat + 600,
              "jti": uuid.uuid4().hex}
    header = {"alg": "RS256", "typ": "JWT", "kid": "test"}
    return ".".join([b64url(json.dumps(header).encode()), b64url(json.dumps(claims).encode()),
                     b64url(b"not-a-real-signature")])


class Bearer(httpx2.Auth):
    """httpx2 auth for an SDK client: `Authorization: Bearer <token>` (swap `token` mid-session),
    optionally every request steered to another port (`port`: another Tether instance), and a
    record of what was sent and of the `Mcp-Session-Id` Tether issued."""

    def __init__(self, token: str | None = None) -> None:
        self.token = token
        self.port: int | None = None
        self.sent: list[tuple[str, str, str | None]] = []  # (method, url, token)
        self.session_id: str | None = None

    def auth_flow(self, request):
        if self.port is not None:
            request.url = request.url.copy_with(port=self.port)
            request.headers["Host"] = f"127.0.0.1:{self.port}"
        if self.token:
            request.headers["Authorization"] = f"Bearer {self.token}"
        self.sent.append((request.method, str(request.url), self.token))
        response = yield request
        self.session_id = response.headers.get("mcp-session-id") or self.session_id


class LoggedReplica:
    """A replica of this test, started with --log-requests."""

    def __init__(self, procs, name: str, variant: str) -> None:
        self.name = name
        self.proc = procs.start(f"replica {name} ({variant})", [PYTHON, str(HERE / "replica.py"), "--name", name,
                                                               "--variant", variant, "--log-requests"])
        self.port = int(self.proc.wait_for_stdout(PORT_RE).group(1))
        self._barriers = 0

    def requests(self) -> list[tuple[str, str, str]]:
        """Every (method, path, sid) this replica received so far, barriers excluded: complete up to
        the moment of the call (a barrier request, straight to the replica, orders its stdout)."""
        self._barriers += 1
        mark = f"/__barrier__/{self._barriers}"
        httpx2.get(f"http://127.0.0.1:{self.port}{mark}", timeout=TIMEOUT)
        wait_until(f"{self.name}'s barrier", lambda: any(f" {mark} " in line for line in list(self.proc.lines)))
        seen = [m.groups() for line in list(self.proc.lines) if (m := REQ_RE.match(line))]
        return [r for r in seen if not r[1].startswith("/__barrier__/")]


def metric(t: Tether, name: str, **labels: str) -> float:
    """Sum of the samples of `name` on t's /metrics whose labels include `labels` (0 if absent)."""
    status, text = t.get("/metrics")
    assert status == 200, text
    total = 0.0
    for line in text.splitlines():
        m = SAMPLE_RE.match(line)
        if m and m.group(1) == name:
            got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
            if all(got.get(k) == v for k, v in labels.items()):
                total += float(m.group(3))
    return total


def session_key_ids(t: Tether) -> list[str] | None:
    status, body = t.get("/config")
    assert status == 200, body
    return json.loads(body).get("session_key_ids")


def toml(ports: list[int], extra: str = "", top: str = "") -> str:
    backends = ", ".join(f'"http://127.0.0.1:{p}"' for p in ports)
    return f"""
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
backends = [{backends}]
{top}
[health]
check = "tcp"
{extra}
"""


@asynccontextmanager
async def streamable_session(url: str, auth: Bearer):
    """A real SDK client session (streamable_http_client + ClientSession), initialized."""
    async with httpx2.AsyncClient(auth=auth, timeout=httpx2.Timeout(30.0, read=60.0)) as http, \
            streamable_http_client(url, http_client=http) as (read, write), \
            ClientSession(read, write, read_timeout_seconds=TIMEOUT) as s:
        await s.initialize()
        yield s


async def whoami(s: ClientSession) -> str:
    r = await s.call_tool("whoami", {})
    assert not r.is_error, r
    return r.content[0].text


async def raw_post(url: str, message: dict, token: str | None, sid: str | None = None) -> httpx2.Response:
    """One POST outside the SDK: JSON-RPC `message`, Mcp-Session-Id `sid`, bearer `token` (or none)."""
    headers = {"Accept": ACCEPT, "Content-Type": "application/json", "MCP-Protocol-Version": PV}
    if sid:
        headers["Mcp-Session-Id"] = sid
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with httpx2.AsyncClient(timeout=TIMEOUT) as http:
        return await http.post(url, json=message, headers=headers)


def call(id_: int, tool: str = "whoami") -> dict:
    return {"jsonrpc": "2.0", "id": id_, "method": "tools/call", "params": {"name": tool, "arguments": {}}}


def assert_session_not_found(r: httpx2.Response, id_) -> None:
    assert r.status_code == 404, (r.status_code, r.text)
    assert r.json() == {"jsonrpc": "2.0", "error": {"code": -32001, "message": "Session not found"}, "id": id_}, r.text


def binding_tether(procs, tmp_path: Path, variant: str) -> tuple[Tether, dict[str, LoggedReplica]]:
    reps = {n: LoggedReplica(procs, n, variant) for n in REPLICA_NAMES}
    t = Tether(procs, tmp_path, toml([r.port for r in reps.values()], '[sessions]\nbind = "jwt:sub"\n'))
    return t, reps


def snapshot(reps: dict[str, LoggedReplica]) -> dict[str, list]:
    return {n: r.requests() for n, r in reps.items()}


# ---------------------------------------------------------------- binding: Streamable HTTP


async def test_streamable_session_is_bound_to_the_jwt_subject(procs, tmp_path):
    t, reps = binding_tether(procs, tmp_path, "stateful")
    alice = Bearer(jwt("alice"))
    async with streamable_session(t.url, alice) as s:
        owner = await whoami(s)
        assert owner in reps, owner
        sid = alice.session_id
        assert sid, "Tether issued no Mcp-Session-Id"

        # A refreshed JWT: same subject, another iat/exp/jti. The session goes on, on its replica.
        first = alice.token
        alice.token = jwt("alice", iat=int(time.time()) + 60)
        assert alice.token != first
        sent_before = len(alice.sent)
        assert [await whoami(s) for _ in range(3)] == [owner] * 3
        assert {tok for _, _, tok in alice.sent[sent_before:]} == {alice.token}, "the refreshed JWT was not sent"
        assert alice.session_id == sid

        # The session's token with bob's JWT, then with no Authorization: Tether answers, no backend.
        before = snapshot(reps)
        assert_session_not_found(await raw_post(t.url, call(101), jwt("bob"), sid), 101)
        assert_session_not_found(await raw_post(t.url, call(102), None, sid), 102)
        assert snapshot(reps) == before, "a rejected request reached a replica"
        assert metric(t, BINDING, reason="mismatch") == 1
        assert metric(t, BINDING, reason="missing") == 1

        # Positive control: the same raw request with alice's JWT is forwarded, and the log shows it.
        r = await raw_post(t.url, call(103), alice.token, sid)
        assert r.status_code == 200 and owner in r.text, (r.status_code, r.text)
        after = snapshot(reps)
        new = after[owner][len(before[owner]):]
        assert len(new) == 1 and new[0][:2] == ("POST", "/mcp"), new
        assert {n: len(v) for n, v in after.items() if n != owner} == \
            {n: len(v) for n, v in before.items() if n != owner}
        # The sealed token is not the replica's own session id (that one stays behind Tether).
        assert new[0][2] not in ("-", sid), new

        # The SDK session itself was not disturbed by the rejected requests.
        assert await whoami(s) == owner
    assert metric(t, BINDING, reason="mismatch") == 1
    assert metric(t, BINDING, reason="missing") == 1


# ---------------------------------------------------------------- binding: legacy HTTP+SSE


async def test_legacy_sse_session_is_bound_to_the_jwt_subject(procs, tmp_path):
    t, reps = binding_tether(procs, tmp_path, "sse")
    alice = Bearer(jwt("alice"))
    async with sse_client(f"http://127.0.0.1:{t.port}/sse", timeout=10.0, sse_read_timeout=60.0, auth=alice) \
            as (read, write), ClientSession(read, write, read_timeout_seconds=TIMEOUT) as s:
        await s.initialize()
        owner = await whoami(s)
        assert owner in reps, owner
        posts = {url for method, url, _ in alice.sent if method == "POST"}
        assert len(posts) == 1, posts
        endpoint = posts.pop()  # Tether's endpoint URL, with its sealed session token
        assert "/messages/" in endpoint and "session_id=" in endpoint, endpoint

        alice.token = jwt("alice", iat=int(time.time()) + 60)
        assert [await whoami(s) for _ in range(2)] == [owner] * 2

        before = snapshot(reps)
        assert_session_not_found(await raw_post(endpoint, call(201), jwt("bob")), 201)
        assert_session_not_found(await raw_post(endpoint, call(202), None), 202)
        assert snapshot(reps) == before, "a rejected request reached a replica"
        assert metric(t, BINDING, reason="mismatch") == 1
        assert metric(t, BINDING, reason="missing") == 1

        # Positive control: a notification (no answer on the SDK's stream) with alice's JWT.
        note = {"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}
        r = await raw_post(endpoint, note, alice.token)
        assert r.status_code == 202, (r.status_code, r.text)
        after = snapshot(reps)
        new = after[owner][len(before[owner]):]
        assert len(new) == 1 and new[0][:2] == ("POST", "/messages/"), new
        assert new[0][2] not in endpoint, (new, endpoint)  # the replica's own id is not what the client holds
        assert {n: len(v) for n, v in after.items() if n != owner} == \
            {n: len(v) for n, v in before.items() if n != owner}
        assert await whoami(s) == owner


# ---------------------------------------------------------------- key rotation


def keygen() -> str:
    out = subprocess.run([tether_bin(), "keygen"], capture_output=True, text=True, timeout=20, check=True)
    return out.stdout.strip().splitlines()[-1].strip()


async def test_key_rotation_across_two_instances(procs, tmp_path, streamable_replicas, monkeypatch):
    """K1 -> [K1, K2] -> [K2, K1] -> [K2], both instances reloaded at each step (A by SIGHUP, B by
    POST /reload). Sessions are SDK sessions steered between the instances by their Bearer auth."""
    monkeypatch.delenv("TETHER_SESSION_KEY", raising=False)  # it would win over session_key_file
    k1, k2 = keygen(), keygen()
    keyfile = tmp_path / "session.keys"
    keyfile.write_text(f"# the session keys, first seals\n{k1}\n")
    config = toml(streamable_replicas, top=f'session_key_file = "{keyfile}"')
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = Tether(procs, tmp_path / "a", config), Tether(procs, tmp_path / "b", config)

    [id1] = session_key_ids(a)
    assert re.fullmatch(r"[0-9a-f]{8}", id1), id1
    assert session_key_ids(b) == [id1]

    def rotate(lines: list[str], want) -> list[str]:
        keyfile.write_text("\n".join(["# rotated", "", *lines, ""]))
        a.proc.proc.send_signal(signal.SIGHUP)
        status, body = b.post("/reload")
        assert status == 200, body
        ids = wait_until("A's reload", lambda: (got := session_key_ids(a)) and want(got) and got)
        wait_until("B's reload", lambda: session_key_ids(b) == ids)
        return ids

    async def via(s: ClientSession, auth: Bearer, t: Tether, owner: str) -> None:
        auth.port = t.port
        assert await whoami(s) == owner

    async with AsyncExitStack() as stack:
        auth1 = Bearer()
        s1 = await stack.enter_async_context(streamable_session(a.url, auth1))
        w1 = await whoami(s1)
        await via(s1, auth1, b, w1)  # S1, begun on A, is opened by B
        assert metric(b, OPENS, key=id1) >= 1

        # Step 1: K2 added second. K1 still seals: a new session is opened with K1, never K2.
        ids = rotate([k1, k2], lambda got: len(got) == 2)
        assert ids[0] == id1 and ids[1] != id1 and re.fullmatch(r"[0-9a-f]{8}", ids[1]), ids
        id2 = ids[1]
        for t in (a, b):
            await via(s1, auth1, t, w1)
        auth_t = Bearer()
        st = await stack.enter_async_context(streamable_session(b.url, auth_t))
        wt = await whoami(st)
        k1_a, k2_a = metric(a, OPENS, key=id1), metric(a, OPENS, key=id2)
        await via(st, auth_t, a, wt)
        assert metric(a, OPENS, key=id1) > k1_a and metric(a, OPENS, key=id2) == k2_a

        # Step 2: K2 first. A new session S2 is sealed with K2; S1 (K1) still works on both.
        assert rotate([k2, k1], lambda got: got[0] != id1) == [id2, id1]
        auth2 = Bearer()
        s2 = await stack.enter_async_context(streamable_session(b.url, auth2))
        w2 = await whoami(s2)
        for t in (a, b):
            k1_t, k2_t = metric(t, OPENS, key=id1), metric(t, OPENS, key=id2)
            await via(s2, auth2, t, w2)
            assert metric(t, OPENS, key=id2) > k2_t and metric(t, OPENS, key=id1) == k1_t, t.url
            await via(s1, auth1, t, w1)
            assert metric(t, OPENS, key=id1) > k1_t, t.url

        # Step 3: K1 gone. S1's token is refused on both; S2 still works on both.
        assert rotate([k2], lambda got: len(got) == 1) == [id2]
        k1_seen = {t.url: metric(t, OPENS, key=id1) for t in (a, b)}
        for t in (a, b):
            assert_session_not_found(await raw_post(t.url, call(301), None, auth1.session_id), 301)
            k2_t = metric(t, OPENS, key=id2)
            await via(s2, auth2, t, w2)
            assert metric(t, OPENS, key=id2) > k2_t, t.url
        assert {t.url: metric(t, OPENS, key=id1) for t in (a, b)} == k1_seen
