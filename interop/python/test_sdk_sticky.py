"""Session affinity with the official Python MCP SDK (PyPI `mcp` 2.3.0) as server and client.

Three real SDK replicas (`replica.py`, names r1..r3) run behind a proxy; 12 concurrent SDK
client sessions each call `whoami` several times. A proxy with session affinity lets every
call succeed and every session see exactly one replica; spread over sessions, at least two
replicas serve.

- Tether must pass, for Streamable HTTP (`Client(url, mode="legacy")`: the initialize
  handshake, Mcp-Session-Id) and for legacy HTTP+SSE (`sse_client` + `ClientSession`).
- The negative control, `rr_proxy.py` (plain round robin, no affinity), must make sessions
  fail the way the SDK really fails: Streamable HTTP -> MCPError "Session not found" (the
  server's 404 JSON-RPC body, code -32600); legacy SSE -> the message POST is answered
  404 "Could not find session", which the SDK's sse_client only logs ("Error in post_writer");
  the caller then sees a request timeout (-32001) or "Connection closed" (-32000).
- Controls that the harness itself is sound: the same clients straight at one replica, and
  through rr_proxy with a single backend (trivially sticky), succeed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import anyio
import httpx2
import pytest
from mcp import Client, ClientSession, MCPError
from mcp.client.sse import sse_client

from conftest import REPLICA_NAMES

pytestmark = pytest.mark.anyio

SESSIONS = 12
CALLS = 5
RUN_DEADLINE = 45.0  # whole concurrent run, seconds (pytest-timeout is 60 s per test)
OK_READ_TIMEOUT = 20.0  # per request, when success is expected
FAIL_READ_TIMEOUT = 4.0  # per request, when failure (a lost response) is expected


@dataclass
class Outcome:
    index: int
    names: list[str] = field(default_factory=list)
    error: BaseException | None = None

    def error_text(self) -> str:
        return describe(self.error) if self.error is not None else ""


def leaves(exc: BaseException) -> list[BaseException]:
    """Flatten exception groups and cause/context chains."""
    out: list[BaseException] = []
    stack = [exc]
    seen: set[int] = set()
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, BaseExceptionGroup):
            stack.extend(e.exceptions)
        else:
            out.append(e)
        for nxt in (e.__cause__, e.__context__):
            if nxt is not None:
                stack.append(nxt)
    return out


def describe(exc: BaseException) -> str:
    parts = []
    for e in leaves(exc):
        if isinstance(e, MCPError):
            parts.append(f"MCPError(code={e.code}, message={e.message!r})")
        else:
            parts.append(f"{type(e).__name__}: {e}")
    return " | ".join(parts)


def whoami_text(result) -> str:
    assert not result.is_error, f"whoami returned a tool error: {result}"
    assert result.content and result.content[0].type == "text", result
    return result.content[0].text


async def streamable_session(url: str, index: int, read_timeout: float) -> Outcome:
    out = Outcome(index)
    try:
        async with Client(url, mode="legacy", read_timeout_seconds=read_timeout) as client:
            for _ in range(CALLS):
                out.names.append(whoami_text(await client.call_tool("whoami", {})))
            added = await client.call_tool("add", {"a": index, "b": 1000})
            assert added.structured_content == {"result": index + 1000}, added
    except Exception as e:  # noqa: BLE001 - every failure is recorded and asserted on
        out.error = e
    return out


async def sse_session(url: str, index: int, read_timeout: float) -> Outcome:
    out = Outcome(index)
    try:
        async with sse_client(url, timeout=10.0, sse_read_timeout=60.0) as (read, write):
            async with ClientSession(read, write, read_timeout_seconds=read_timeout) as session:
                await session.initialize()
                for _ in range(CALLS):
                    out.names.append(whoami_text(await session.call_tool("whoami", {})))
                added = await session.call_tool("add", {"a": index, "b": 1000})
                assert added.structured_content == {"result": index + 1000}, added
    except Exception as e:  # noqa: BLE001
        out.error = e
    return out


async def run_sessions(session_fn, url: str, read_timeout: float, n: int = SESSIONS) -> list[Outcome]:
    outcomes: list[Outcome | None] = [None] * n
    with anyio.fail_after(RUN_DEADLINE):
        async with anyio.create_task_group() as tg:
            for i in range(n):

                async def one(i: int = i) -> None:
                    outcomes[i] = await session_fn(url, i, read_timeout)

                tg.start_soon(one)
    assert all(o is not None for o in outcomes)
    return outcomes  # type: ignore[return-value]


def report(outcomes: list[Outcome]) -> str:
    return "\n".join(
        f"  session {o.index:2d}: names={o.names} error={o.error_text() or None}" for o in outcomes
    )


def assert_sticky(outcomes: list[Outcome], expect_distinct: int) -> None:
    summary = report(outcomes)
    failed = [o for o in outcomes if o.error is not None]
    assert not failed, f"{len(failed)}/{len(outcomes)} sessions failed:\n{summary}"
    for o in outcomes:
        assert len(o.names) == CALLS, summary
        assert len(set(o.names)) == 1, f"session {o.index} was served by several replicas:\n{summary}"
        assert o.names[0] in REPLICA_NAMES, summary
    distinct = {o.names[0] for o in outcomes}
    assert len(distinct) >= expect_distinct, f"only {sorted(distinct)} served sessions:\n{summary}"


class SseClientLog(logging.Handler):
    """Collects what mcp.client.sse logs: its post_writer swallows POST errors into the log."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def post_status_errors(self) -> list[tuple[int, str, str]]:
        found = []
        for r in self.records:
            if r.exc_info and r.exc_info[1] is not None:
                for e in leaves(r.exc_info[1]):
                    if isinstance(e, httpx2.HTTPStatusError):
                        found.append((e.response.status_code, e.request.method, e.response.text))
        return found


@pytest.fixture
def sse_client_log():
    handler = SseClientLog()
    logger = logging.getLogger("mcp.client.sse")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


# ---------------------------------------------------------------- Tether


async def test_tether_streamable_http_sticky(streamable_replicas, start_tether):
    port = start_tether(streamable_replicas)
    outcomes = await run_sessions(streamable_session, f"http://127.0.0.1:{port}/mcp", OK_READ_TIMEOUT)
    print(f"tether outcomes:\n{report(outcomes)}")
    assert_sticky(outcomes, expect_distinct=2)


async def test_tether_legacy_sse_sticky(sse_replicas, start_tether):
    port = start_tether(sse_replicas)
    outcomes = await run_sessions(sse_session, f"http://127.0.0.1:{port}/sse", OK_READ_TIMEOUT)
    print(f"tether outcomes:\n{report(outcomes)}")
    assert_sticky(outcomes, expect_distinct=2)


# ---------------------------------------------------------------- negative control: round robin


async def test_control_rr_streamable_http_breaks_sessions(streamable_replicas, start_rr_proxy):
    port = start_rr_proxy(streamable_replicas)
    outcomes = await run_sessions(streamable_session, f"http://127.0.0.1:{port}/mcp", FAIL_READ_TIMEOUT)
    summary = report(outcomes)
    print(f"round-robin outcomes:\n{summary}")
    failed = [o for o in outcomes if o.error is not None]
    assert failed, f"round robin without affinity unexpectedly kept every session:\n{summary}"
    # The SDK server answers 404 {"jsonrpc":"2.0","id":null,"error":{"code":-32600,
    # "message":"Session not found"}}; the SDK client surfaces that body as MCPError.
    not_found = [
        e
        for o in failed
        for e in leaves(o.error)
        if isinstance(e, MCPError) and e.message == "Session not found" and e.code == -32600
    ]
    assert not_found, f"no session failed with 'Session not found':\n{summary}"


async def test_control_rr_legacy_sse_breaks_sessions(sse_replicas, start_rr_proxy, sse_client_log):
    port = start_rr_proxy(sse_replicas)
    outcomes = await run_sessions(sse_session, f"http://127.0.0.1:{port}/sse", FAIL_READ_TIMEOUT)
    summary = report(outcomes)
    print(f"round-robin outcomes:\n{summary}")
    failed = [o for o in outcomes if o.error is not None]
    assert failed, f"round robin without affinity unexpectedly kept every session:\n{summary}"
    # What the SDK really does: the replica that does not hold the GET stream answers the POST
    # with 404 "Could not find session"; sse_client's post_writer logs the HTTPStatusError
    # ("Error in post_writer") and stops. The caller never sees the 404: a request already
    # handed to the writer times out (-32001 "Request '...' timed out"), a later one finds the
    # write stream closed (-32000 "Connection closed").
    statuses = sse_client_log.post_status_errors()
    print(f"POST errors logged by mcp.client.sse: {statuses}")
    assert (404, "POST", "Could not find session") in statuses, f"POST errors seen: {statuses}\n{summary}"
    for o in failed:
        codes = {e.code for e in leaves(o.error) if isinstance(e, MCPError)}
        assert codes & {-32001, -32000}, f"session {o.index} failed in an unexpected way:\n{summary}"


# ---------------------------------------------------------------- harness sanity


async def test_sanity_direct_single_replica_streamable(streamable_replicas):
    outcomes = await run_sessions(
        streamable_session, f"http://127.0.0.1:{streamable_replicas[0]}/mcp", OK_READ_TIMEOUT
    )
    assert_sticky(outcomes, expect_distinct=1)


async def test_sanity_direct_single_replica_sse(sse_replicas):
    outcomes = await run_sessions(sse_session, f"http://127.0.0.1:{sse_replicas[0]}/sse", OK_READ_TIMEOUT)
    assert_sticky(outcomes, expect_distinct=1)


async def test_sanity_rr_single_backend_streamable(streamable_replicas, start_rr_proxy):
    """One backend is trivially sticky: proves rr_proxy itself forwards and streams correctly."""
    port = start_rr_proxy(streamable_replicas[:1])
    outcomes = await run_sessions(streamable_session, f"http://127.0.0.1:{port}/mcp", OK_READ_TIMEOUT)
    assert_sticky(outcomes, expect_distinct=1)


async def test_sanity_rr_single_backend_sse(sse_replicas, start_rr_proxy):
    port = start_rr_proxy(sse_replicas[:1])
    outcomes = await run_sessions(sse_session, f"http://127.0.0.1:{port}/sse", OK_READ_TIMEOUT)
    assert_sticky(outcomes, expect_distinct=1)
