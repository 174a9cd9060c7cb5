"""Failover by re-initialize (`failover = "reinitialize"`) with the real Python SDK client and servers.

The Python client takes a session id only from its `initialize` answer: after a failover it keeps
sending the old token. The Tether instance that moved the session remembers it, so those calls reach
the new session (counted `moved`) instead of beginning one per call. Without the opt-in, the client
gets the spec's 404, which it surfaces as an error (Tether's JSON-RPC error, "Session not found").
"""

from __future__ import annotations

import pytest
from mcp.shared.exceptions import MCPError

from conftest import REPLICA_NAMES
from test_operations import Tether
from test_trust import Bearer, LoggedReplica, metric, streamable_session, toml, whoami

pytestmark = [pytest.mark.anyio, pytest.mark.filterwarnings("ignore")]

FAILOVERS = "tether_session_failovers_total"


def three(procs) -> dict[str, LoggedReplica]:
    return {n: LoggedReplica(procs, n, "stateful") for n in REPLICA_NAMES}


async def add(s, a: int, b: int) -> str:
    r = await s.call_tool("add", {"a": a, "b": b})
    assert not r.is_error, r
    return r.content[0].text


async def test_a_session_goes_on_on_another_replica_when_its_owner_is_killed(procs, tmp_path):
    reps = three(procs)
    t = Tether(procs, tmp_path, toml([r.port for r in reps.values()], top='failover = "reinitialize"'))
    auth = Bearer("alice-token")
    async with streamable_session(t.url, auth) as s:
        owner = await whoami(s)
        assert await add(s, 2, 3) == "5"
        reps[owner].proc.stop()
        after = await whoami(s)
        assert after != owner and after in reps
        for k in range(3):
            assert await add(s, k, 40) == str(k + 40)
            assert await whoami(s) == after, "the moved session stays on its new replica"
        # The new replica got the client's own credentials with the replayed initialize.
        got = [r for r in reps[after].requests() if r[0] == "POST"]
        assert got, "the new replica saw the session's requests"
    assert metric(t, FAILOVERS, pool="default", outcome="reinitialized") == 1
    # The client kept its old token: every later call went through the moved-session map.
    assert metric(t, FAILOVERS, pool="default", outcome="moved") >= 6
    assert metric(t, "tether_sessions_orphaned_total") == 0


async def test_without_the_opt_in_the_client_sees_the_404(procs, tmp_path):
    reps = three(procs)
    t = Tether(procs, tmp_path, toml([r.port for r in reps.values()]))
    async with streamable_session(t.url, Bearer("alice-token")) as s:
        owner = await whoami(s)
        reps[owner].proc.stop()
        with pytest.raises(MCPError) as e:
            await whoami(s)
        # Tether's 404 carries a JSON-RPC error, which the client surfaces as it is.
        assert e.value.error.code == -32001 and "Session not found" in str(e.value)
    assert metric(t, FAILOVERS) == 0
    assert metric(t, "tether_sessions_orphaned_total") >= 1
