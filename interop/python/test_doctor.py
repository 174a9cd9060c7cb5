"""`tether doctor URL` against real deployments: real Python-SDK replicas (3 Streamable HTTP,
3 legacy HTTP+SSE) behind a round robin (the negative control), a real HAProxy 2.6 sticky on
`Mcp-Session-Id`, and Tether. Each run is the built binary with `--json`; the tests assert on
its verdicts and exit status, which must tell these deployments apart:

- round robin: Streamable sessions "not sticky" (with how many failed), exit 1;
- HAProxy: Streamable sessions stick, legacy SSE does not (the id is inside the SSE body), exit 1;
- HAProxy with 1 s timeouts: an idle stream is cut, so the hold check fails;
- Tether: every check that applies passes, the hold included, exit 0.

HAProxy and Tether route `/sse` and `/messages` to the legacy replicas and the rest to the
Streamable ones, so one URL (`/mcp`) shows both transports, as a deployment serving every era does.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import trustme

from conftest import tether_bin
from test_operations import Tether

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
SESSIONS = 12


def doctor(url: str, *flags: str, hold: str = "2s", env: dict | None = None) -> tuple[int, dict[str, dict], str]:
    """Runs `tether doctor URL --json`; returns (exit status, checks by id, stderr)."""
    argv = [tether_bin(), "doctor", url, "--json", "--hold", hold, "--sessions", str(SESSIONS),
            "--timeout", "5s", *flags]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=50, env={**os.environ, **(env or {})})
    assert out.returncode in (0, 1), f"exit {out.returncode}\n{out.stdout}\n{out.stderr}"
    report = json.loads(out.stdout)
    assert report["exit"] == out.returncode, report
    checks = {c["id"]: c for c in report["checks"]}
    print(f"doctor {url}: exit {out.returncode}")  # shown when a test fails (or with -s)
    for c in report["checks"]:
        print(f"  {c['id']:28} {c['verdict']:5} {c['saw']}")
    return out.returncode, checks, out.stderr


def verdicts(checks: dict[str, dict]) -> dict[str, str]:
    return {k: c["verdict"] for k, c in checks.items()}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def servers(ports) -> str:
    return "\n".join(f"    server s{i} 127.0.0.1:{p}" for i, p in enumerate(ports))


def start_haproxy(procs, tmp_path: Path, main, legacy, timeout: str = "1h") -> int:
    """A real HAProxy, sticky as operators set it up (stick table learned from the response's
    Mcp-Session-Id, matched on the request's), round robin within each backend."""
    if not Path(HAPROXY).exists():
        pytest.fail(f"haproxy not found at {HAPROXY} (scripts/test installs it)")
    port = free_port()
    stick = """    balance roundrobin
    stick-table type string len 128 size 10k expire 30m
    stick store-response res.hdr(mcp-session-id)
    stick match req.hdr(mcp-session-id)"""
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(f"""global
    maxconn 2000
defaults
    mode http
    timeout connect 2s
    timeout client {timeout}
    timeout server {timeout}
    timeout tunnel {timeout}
frontend fe
    bind 127.0.0.1:{port}
    use_backend be_sse if {{ path_beg /sse }} || {{ path_beg /messages }}
    default_backend be_mcp
backend be_mcp
{stick}
{servers(main)}
backend be_sse
{stick}
{servers(legacy)}
""")
    proc = procs.start("haproxy", [HAPROXY, "-db", "-f", str(cfg)])
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return port
        except OSError:
            if proc.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"haproxy not listening on {port}:\n{proc.tail()}")
            time.sleep(0.02)


def test_round_robin_is_not_sticky(start_rr_proxy, replica_set):
    port = start_rr_proxy(replica_set("stateful"))
    code, checks, _ = doctor(f"http://127.0.0.1:{port}/mcp")
    assert code == 1
    sticky = checks["stickiness.streamable"]
    assert sticky["verdict"] == "fail", sticky
    assert 0 < sticky["data"]["failed"] <= SESSIONS, sticky
    assert sticky["data"]["sessions"] == SESSIONS
    assert "404" in sticky["data"]["failures"], sticky
    assert "not sticky" in sticky["saw"]
    # What any replica answers alone is still seen as it is.
    assert checks["era.streamable"]["verdict"] == "pass"
    assert checks["era.modern"]["verdict"] == "pass"
    assert checks["unknown_session.streamable"]["verdict"] == "pass"
    assert checks["era.legacy"]["verdict"] == "n/a"


def test_haproxy_sticks_streamable_sessions_but_not_legacy_sse(procs, tmp_path, replica_set):
    port = start_haproxy(procs, tmp_path, replica_set("stateful"), replica_set("sse"))
    code, checks, stderr = doctor(f"http://127.0.0.1:{port}/mcp")
    assert code == 1, verdicts(checks)
    assert checks["stickiness.streamable"]["verdict"] == "pass", checks["stickiness.streamable"]
    assert checks["stickiness.streamable"]["data"]["failed"] == 0
    assert checks["era.legacy"]["verdict"] == "pass", checks["era.legacy"]
    legacy = checks["stickiness.legacy"]
    assert legacy["verdict"] == "fail", legacy
    assert legacy["data"]["failed"] > 0, legacy
    # The streams themselves survive the hold (HAProxy's timeouts here are long).
    assert checks["sse.hold"]["verdict"] == "pass", checks["sse.hold"]
    assert checks["sse.hold"]["data"]["legacy SSE stream"] == "survived"
    assert checks["sse.hold"]["data"]["Streamable GET stream"] == "survived"
    # Nothing but the report on stdout; the progress went to stderr.
    assert "tether doctor:" in stderr


def test_a_path_that_cuts_idle_streams_fails_the_hold(procs, tmp_path, replica_set):
    port = start_haproxy(procs, tmp_path, replica_set("stateful"), replica_set("sse"), timeout="1s")
    code, checks, _ = doctor(f"http://127.0.0.1:{port}/mcp", hold="3s")
    assert code == 1
    hold = checks["sse.hold"]
    assert hold["verdict"] == "fail", hold
    assert "cut after" in hold["saw"], hold
    for stream in ("legacy SSE stream", "Streamable GET stream"):
        assert hold["data"][stream].startswith("cut after"), hold


def test_tether_passes_every_check(procs, tmp_path, replica_set):
    main = ", ".join(f'"http://127.0.0.1:{p}"' for p in replica_set("stateful"))
    legacy = ", ".join(f'"http://127.0.0.1:{p}"' for p in replica_set("sse"))
    t = Tether(procs, tmp_path, f"""
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
[pools.main]
backends = [{main}]
[pools.legacy]
backends = [{legacy}]
[[routes]]
path_prefix = "/sse"
pool = "legacy"
[[routes]]
pool = "main"
""")
    code, checks, _ = doctor(t.url, hold="3s")
    failing = {k: c for k, c in checks.items() if c["verdict"] not in ("pass", "n/a")}
    assert not failing, failing
    assert code == 0
    for must in ("era.modern", "era.streamable", "era.legacy", "stickiness.streamable", "stickiness.legacy",
                 "unknown_session.streamable", "unknown_session.legacy", "sse.first_event", "sse.hold",
                 "origin", "protocol_version"):
        assert checks[must]["verdict"] == "pass", checks[must]
    assert checks["sse.hold"]["data"]["legacy SSE stream"] == "survived"
    assert checks["sse.hold"]["data"]["Streamable GET stream"] == "survived"


def test_https_is_verified_against_the_system_roots(procs, tmp_path, replica_set):
    """Over https:// doctor trusts what the system trusts (SSL_CERT_FILE here, as a user's machine
    trusts a real CA): Tether terminating TLS passes; a certificate from a CA it does not trust is
    refused at the handshake, exit 2."""
    ca, other = trustme.CA(), trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "server.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    other.cert_pem.write_to_path(str(tmp_path / "other.pem"))
    backends = ", ".join(f'"http://127.0.0.1:{p}"' for p in replica_set("stateful"))
    t = Tether(procs, tmp_path, f"""
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
backends = [{backends}]
[tls]
cert = "{tmp_path / 'server.pem'}"
key = "{tmp_path / 'server.key'}"
""")
    url = f"https://127.0.0.1:{t.port}/mcp"
    code, checks, _ = doctor(url, hold="1s", env={"SSL_CERT_FILE": str(tmp_path / "ca.pem")})
    assert code == 0, verdicts(checks)
    assert checks["stickiness.streamable"]["verdict"] == "pass"
    assert checks["sse.hold"]["verdict"] == "pass"
    out = subprocess.run([tether_bin(), "doctor", url, "--timeout", "5s"], capture_output=True, text=True,
                         timeout=30, env={**os.environ, "SSL_CERT_FILE": str(tmp_path / "other.pem")})
    assert out.returncode == 2, out
    assert "TLS" in out.stderr and out.stdout == "", out


def test_an_unreachable_url_or_a_bad_flag_exits_2():
    port = free_port()  # nothing listens there
    out = subprocess.run([tether_bin(), "doctor", f"http://127.0.0.1:{port}/mcp", "--timeout", "2s"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2, out
    assert out.stdout == ""
    assert "cannot connect" in out.stderr, out.stderr
    out = subprocess.run([tether_bin(), "doctor", "http://127.0.0.1:1/mcp", "--header", "no colon"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2, out


@pytest.mark.parametrize("variant", ["stateless", "stateful", "resumable"])
def test_a_bare_streamable_server_passes(replica_set, variant):
    """One SDK replica, no proxy: a correct server exits 0. The stateless one answers a GET at its
    URL with its own SSE stream (the spec allows it), which carries no `endpoint` event: that is not
    a legacy endpoint held back by a buffer, so the legacy checks do not apply."""
    port = replica_set(variant)[0]
    code, checks, _ = doctor(f"http://127.0.0.1:{port}/mcp")
    assert code == 0, verdicts(checks)
    assert checks["era.streamable"]["verdict"] == "pass", checks["era.streamable"]
    for legacy in ("era.legacy", "stickiness.legacy", "unknown_session.legacy"):
        assert checks[legacy]["verdict"] == "n/a", checks[legacy]
    assert checks["sse.first_event"]["verdict"] in ("pass", "warn", "n/a"), checks["sse.first_event"]
    if variant == "stateless":
        assert "own GET stream" in checks["era.legacy"]["saw"], checks["era.legacy"]
        assert checks["stickiness.streamable"]["verdict"] == "n/a"
    else:
        assert checks["stickiness.streamable"]["verdict"] == "pass", checks["stickiness.streamable"]
