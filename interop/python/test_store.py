"""A session store (`[sessions] store = "redis://..."`), with the real Python SDK (mcp 2.3.0) as
client, real SDK replicas (replica.py) as servers and a real redis-server (conftest.RedisServer).

With a store, the client holds the SERVER'S OWN session id (`Mcp-Session-Id`, or the session_id
of the legacy endpoint URL), never a sealed `t2.` token: Tether keeps `id -> owner` in Redis
(`tether:s:<id>`, `tether:l:<id>`, a sealed entry with a sliding TTL) and two instances sharing
the Redis and the session key serve each other's sessions. An id the store does not know, or
whose owner is gone, is answered 404 `-32001` by Tether itself; with Redis unreachable, a request
that needs a lookup gets 503 `Retry-After: 1` `-32603`, never 404, and the same session is served
again once Redis is back (its append-only file, fsynced on every write, keeps the entries).

What reached a replica is read from its own request log (`replica.py --log-requests`), made
complete by a barrier request straight to it (test_trust.LoggedReplica); health checks are `tcp`,
so a replica's only HTTP requests are the clients'. Waiting is by polling a condition with a
deadline, never by sleeping.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.sse import sse_client

from conftest import REPLICA_NAMES, TETHER_LISTEN_RE, RedisServer, tether_bin
from test_operations import ADMIN_RE, Tether, wait_until
from test_trust import (PV, TIMEOUT, Bearer, LoggedReplica, assert_session_not_found, call, metric, raw_post,
                        snapshot, streamable_session, toml, whoami)

pytestmark = [pytest.mark.anyio, pytest.mark.filterwarnings("ignore")]

OPS = "tether_session_store_operations_total"
TTL = 3600  # sessions.ttl of these tests ("1h"), seconds


# ---------------------------------------------------------------- helpers


def logged_replicas(procs, variant: str) -> dict[str, LoggedReplica]:
    return {n: LoggedReplica(procs, n, variant) for n in REPLICA_NAMES}


class StoreTether(Tether):
    """test_operations.Tether (config file, admin API), with the session key and extra arguments."""

    def __init__(self, procs, d: Path, config: str, key: str, args: tuple[str, ...] = ()) -> None:
        self.config = d / "tether.toml"
        self.config.write_text(config)
        env = {**os.environ, "TETHER_LOG": "info,mcp_tether=debug", "TETHER_SESSION_KEY": key}
        self.proc = procs.start("tether", [tether_bin(), "--config", str(self.config), *args], env=env)
        self.port = int(self.proc.wait_for_stdout(TETHER_LISTEN_RE).group(1))
        self.admin = int(self.proc.wait_for_stdout(ADMIN_RE).group(1))
        self.url = f"http://127.0.0.1:{self.port}/mcp"


def store_tether(procs, tmp_path: Path, name: str, reps: dict[str, LoggedReplica], redis: RedisServer, key: str,
                 flag: bool = False) -> StoreTether:
    """A Tether in front of `reps` with the Redis store, from `[sessions] store` (or, `flag`: from
    `--session-store`, the config file naming no store)."""
    d = tmp_path / name
    d.mkdir()
    store = "" if flag else f'store = "{redis.url}"\n'
    config = toml([r.port for r in reps.values()], f'[sessions]\n{store}ttl = "1h"\n')
    return StoreTether(procs, d, config, key, ("--session-store", redis.url) if flag else ())


def on_port(url: str, port: int) -> str:
    return urlsplit(url)._replace(netloc=f"127.0.0.1:{port}").geturl()


def initialize(id_: int) -> dict:
    return {"jsonrpc": "2.0", "id": id_, "method": "initialize",
            "params": {"protocolVersion": PV, "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}}


def assert_store_unavailable(r: httpx2.Response, id_) -> None:
    assert r.status_code == 503, (r.status_code, r.text)
    assert r.headers.get("retry-after") == "1", dict(r.headers)
    assert r.json() == {"jsonrpc": "2.0", "error": {"code": -32603, "message": "Session store unavailable"},
                        "id": id_}, r.text


def assert_only(seen: dict[str, list], owner: str) -> list[tuple[str, str, str]]:
    """Every request of `seen` reached `owner`, none another replica; returns the owner's."""
    assert {n: v for n, v in seen.items() if n != owner and v} == {}, seen
    return seen[owner]


def grown(before: dict[str, list], after: dict[str, list]) -> dict[str, list]:
    return {n: after[n][len(before[n]):] for n in after if after[n][len(before[n]):]}


async def poll(what: str, check, timeout: float = 15.0):
    """Awaits `check()` until it returns a true value (returned), or fails the test."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await anyio.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}; last: {last!r}")


# ---------------------------------------------------------------- a. Streamable HTTP, two instances


async def test_streamable_client_holds_the_servers_id_on_two_instances(procs, tmp_path, redis_server, session_key):
    reps = logged_replicas(procs, "stateful")
    a = store_tether(procs, tmp_path, "a", reps, redis_server, session_key)
    b = store_tether(procs, tmp_path, "b", reps, redis_server, session_key)
    auth = Bearer()
    async with streamable_session(a.url, auth) as s:
        owner = await whoami(s)
        sid = auth.session_id
        assert sid and not sid.startswith("t2."), sid
        assert [await whoami(s) for _ in range(2)] == [owner] * 2

        auth.port = b.port  # the same SDK session, every request now to instance B
        assert [await whoami(s) for _ in range(3)] == [owner] * 3
        r = await raw_post(b.url, call(11), None, sid)
        assert r.status_code == 200 and owner in r.text, (r.status_code, r.text)
        assert r.headers.get("mcp-session-id") in (None, sid), dict(r.headers)

        mine = assert_only(snapshot(reps), owner)
        # The replica saw exactly the id the client holds (initialize: none yet), 7 POSTs and more.
        assert {x for _, _, x in mine} == {"-", sid}, mine
        assert sum(m == "POST" for m, _, x in mine if x == sid) >= 7, mine
        assert {urlsplit(u).port for _, u, _ in auth.sent} == {a.port, b.port}, auth.sent

        # A recorded it, B found it there.
        assert metric(a, OPS, op="put", outcome="ok") == 1
        assert metric(b, OPS, op="put", outcome="ok") == 0
        assert metric(b, OPS, op="get", outcome="hit") >= 4
        assert metric(b, OPS, op="get", outcome="miss") == 0

        # The entry: sealed (opaque, not the id), with the configured TTL, renewed by each lookup.
        key = f"tether:s:{sid}"
        entry = redis_server.command("GET", key)
        assert entry and entry.startswith("t2.") and sid not in entry, entry
        assert TTL - 60 < redis_server.command("TTL", key) <= TTL
        assert redis_server.command("EXPIRE", key, "100") == 1
        assert await whoami(s) == owner
        assert TTL - 60 < redis_server.command("TTL", key) <= TTL, "a lookup did not renew the TTL"


# ---------------------------------------------------------------- b. legacy HTTP+SSE


async def test_legacy_endpoint_carries_the_servers_id(procs, tmp_path, redis_server, session_key):
    reps = logged_replicas(procs, "sse")
    a = store_tether(procs, tmp_path, "a", reps, redis_server, session_key)
    b = store_tether(procs, tmp_path, "b", reps, redis_server, session_key)
    auth = Bearer()
    async with sse_client(f"http://127.0.0.1:{a.port}/sse", timeout=10.0, sse_read_timeout=60.0, auth=auth) \
            as (read, write), ClientSession(read, write, read_timeout_seconds=TIMEOUT) as s:
        await s.initialize()
        owner = await whoami(s)
        posts = {url for method, url, _ in auth.sent if method == "POST"}
        assert len(posts) == 1, posts
        endpoint = posts.pop()  # the endpoint URL the client got, as it used it
        assert urlsplit(endpoint).path == "/messages/", endpoint
        [sid] = parse_qs(urlsplit(endpoint).query)["session_id"]
        assert not sid.startswith("t2."), endpoint

        auth.port = b.port  # the SDK's POSTs now go to B; its SSE stream stays on A
        assert [await whoami(s) for _ in range(2)] == [owner] * 2
        note = {"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}
        r = await raw_post(on_port(endpoint, b.port), note, None)
        assert r.status_code == 202, (r.status_code, r.text)

        mine = assert_only(snapshot(reps), owner)
        assert mine[0] == ("GET", "/sse", "-"), mine
        assert set(mine[1:]) == {("POST", "/messages/", sid)} and len(mine) >= 7, mine
        assert await whoami(s) == owner  # the SDK session is undisturbed

    assert redis_server.command("GET", f"tether:l:{sid}").startswith("t2.")
    assert redis_server.command("EXISTS", f"tether:s:{sid}") == 0
    assert metric(a, OPS, op="put", outcome="ok") == 1
    assert metric(b, OPS, op="get", outcome="hit") >= 3


# ---------------------------------------------------------------- c. an id the store does not know


async def test_unknown_id_is_answered_by_tether(procs, tmp_path, redis_server, session_key):
    reps = logged_replicas(procs, "stateful")
    t = store_tether(procs, tmp_path, "t", reps, redis_server, session_key, flag=True)  # --session-store
    fake = str(uuid.uuid4())
    before = snapshot(reps)
    assert_session_not_found(await raw_post(t.url, call(21), None, fake), 21)
    assert_session_not_found(await raw_post(f"http://127.0.0.1:{t.port}/messages/?session_id={fake}",
                                            call(22), None), 22)
    async with httpx2.AsyncClient(timeout=TIMEOUT) as http:
        r = await http.delete(t.url, headers={"Mcp-Session-Id": fake, "MCP-Protocol-Version": PV})
    assert r.status_code == 404 and r.json()["error"]["code"] == -32001, (r.status_code, r.text)
    assert snapshot(reps) == before, "a request with an unknown id reached a replica"
    assert metric(t, OPS, op="get", outcome="miss") == 3
    assert redis_server.command("KEYS", "tether:*") == []

    # Positive control: this instance (store from the flag) records and routes a real session.
    auth = Bearer()
    async with streamable_session(t.url, auth) as s:
        owner = await whoami(s)
        assert not auth.session_id.startswith("t2.")
        assert redis_server.command("EXISTS", f"tether:s:{auth.session_id}") == 1
        assert_only(grown(before, snapshot(reps)), owner)


# ---------------------------------------------------------------- d. the owner gone


async def test_owner_killed_gives_404(procs, tmp_path, redis_server, session_key):
    reps = logged_replicas(procs, "stateful")
    t = store_tether(procs, tmp_path, "t", reps, redis_server, session_key)
    auth = Bearer()
    async with streamable_session(t.url, auth) as s:
        owner = await whoami(s)
        sid = auth.session_id
        assert not sid.startswith("t2.") and redis_server.command("EXISTS", f"tether:s:{sid}") == 1, sid
        r = await raw_post(t.url, call(30), None, sid)
        assert r.status_code == 200 and owner in r.text, (r.status_code, r.text)

        reps[owner].proc.stop()
        others = {n: r for n, r in reps.items() if n != owner}
        before = snapshot(others)
        r = await raw_post(t.url, call(31), None, sid)
        assert_session_not_found(r, 31)  # Tether's own 404, not a 502
        assert snapshot(others) == before, "the dead owner's session went to another replica"


# ---------------------------------------------------------------- e. Redis down, then back


async def test_redis_down_gives_503_then_the_same_session_is_served(procs, tmp_path, redis_server, session_key):
    reps = logged_replicas(procs, "stateful")
    t = store_tether(procs, tmp_path, "t", reps, redis_server, session_key)
    auth = Bearer()
    async with streamable_session(t.url, auth) as s:
        owner = await whoami(s)
        sid = auth.session_id
        assert redis_server.command("EXISTS", f"tether:s:{sid}") == 1

        redis_server.kill()
        before = snapshot(reps)
        for i in range(3):
            started = time.monotonic()
            assert_store_unavailable(await raw_post(t.url, call(40 + i), None, sid), 40 + i)
            assert time.monotonic() - started < 2, "the lookup was not bounded by store_timeout (500ms)"
        assert snapshot(reps) == before, "a request that needed a lookup was forwarded"
        assert metric(t, OPS, op="get", outcome="error") == 3

        # A new session: the server creates it, Tether cannot record it, answers 503, and
        # ends the server's session with a DELETE of its id (so it does not wait for a timeout).
        assert_store_unavailable(await raw_post(t.url, initialize(50), None), 50)
        wait_until("the DELETE for the unrecorded session",
                   lambda: sum(len(v) for v in grown(before, snapshot(reps)).values()) >= 2)
        new = grown(before, snapshot(reps))
        assert len(new) == 1, new
        [(made, ended)] = new.values()
        assert made == ("POST", "/mcp", "-"), new
        assert ended[:2] == ("DELETE", "/mcp") and ended[2] != "-", new
        assert metric(t, OPS, op="put", outcome="error") == 1

        redis_server.start()  # same port, same append-only file

        async def served():
            r = await raw_post(t.url, call(60), None, sid)
            assert r.status_code in (200, 503), (r.status_code, r.text)  # never 404
            return r if r.status_code == 200 else None

        r = await poll("the original session to be served again", served)
        assert owner in r.text, r.text
        assert await whoami(s) == owner
        assert metric(t, OPS, op="get", outcome="hit") >= 2


# ---------------------------------------------------------------- f. DELETE forgets the session


async def test_delete_removes_the_entry(procs, tmp_path, redis_server, session_key):
    reps = logged_replicas(procs, "stateful")
    t = store_tether(procs, tmp_path, "t", reps, redis_server, session_key)
    auth = Bearer()
    async with streamable_session(t.url, auth) as s:
        owner = await whoami(s)
        sid = auth.session_id
        key = f"tether:s:{sid}"
        assert redis_server.command("EXISTS", key) == 1
    # streamable_http_client(terminate_on_close=True) ended the session with a DELETE, via Tether.
    assert ("DELETE", t.url) in {(m, u) for m, u, _ in auth.sent}, auth.sent
    assert ("DELETE", "/mcp", sid) in assert_only(snapshot(reps), owner)
    wait_until(f"{key} to be removed", lambda: redis_server.command("EXISTS", key) == 0, timeout=5)
    assert metric(t, OPS, op="remove", outcome="ok") == 1

    before = snapshot(reps)
    assert_session_not_found(await raw_post(t.url, call(61), None, sid), 61)
    assert snapshot(reps) == before, "a request of the deleted session reached a replica"
    assert metric(t, OPS, op="get", outcome="miss") == 1
