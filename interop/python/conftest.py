"""Fixtures for the Python-SDK interop tests: real SDK replicas, Tether, and a round-robin control.

Every process is started in its own session (process group) and killed as a group at teardown,
whatever the test outcome. stdout and stderr of every process are drained by threads into memory
so no pipe ever fills up; the tail of each log is printed when a test fails.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
DEFAULT_TETHER_BIN = str(Path(__file__).resolve().parents[2] / "target" / "debug" / "tether")
REPLICA_NAMES = ("r1", "r2", "r3")
STARTUP_TIMEOUT = 20.0

TETHER_LISTEN_RE = re.compile(r"tether: proxy listening on 127\.0\.0\.1:(\d+)")
PORT_RE = re.compile(r"^PORT (\d+)$")


class ManagedProcess:
    """A child process in its own process group, with stdout/stderr drained by threads."""

    def __init__(self, label: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.label = label
        self.argv = argv
        self.lines: deque[str] = deque(maxlen=2000)
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env=env,
            cwd=str(HERE),
        )
        self._threads = [
            threading.Thread(target=self._drain, args=(self.proc.stdout, "out"), daemon=True),
            threading.Thread(target=self._drain, args=(self.proc.stderr, "err"), daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _drain(self, pipe, tag: str) -> None:
        for raw in iter(pipe.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            with self._cond:
                self.lines.append(f"[{tag}] {line}")
                self._cond.notify_all()
        pipe.close()
        with self._cond:
            self._cond.notify_all()

    def wait_for_stdout(self, pattern: re.Pattern[str], timeout: float = STARTUP_TIMEOUT) -> re.Match[str]:
        """Wait until a stdout line matches `pattern` (searched) and return the match."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in list(self.lines):
                    if line.startswith("[out] "):
                        m = pattern.search(line[len("[out] ") :])
                        if m:
                            return m
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.label} exited with {self.proc.returncode} before ready:\n{self.tail()}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{self.label} not ready after {timeout}s:\n{self.tail()}")
                self._cond.wait(min(remaining, 0.2))

    def drained(self) -> None:
        """Once the process has exited: waits until every line it wrote is in `lines`."""
        for t in self._threads:
            t.join(timeout=5)

    def tail(self, n: int = 60) -> str:
        with self._cond:
            return "\n".join(list(self.lines)[-n:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                pass
        # Whatever happened, take the whole group down (children included).
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for t in self._threads:
            t.join(timeout=2)


class ProcessRegistry:
    def __init__(self) -> None:
        self.procs: list[ManagedProcess] = []

    def start(self, label: str, argv: list[str], env: dict[str, str] | None = None) -> ManagedProcess:
        p = ManagedProcess(label, argv, env)
        self.procs.append(p)
        return p

    def dump(self) -> str:
        return "\n".join(f"----- {p.label}: {' '.join(p.argv)}\n{p.tail()}" for p in self.procs)

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        self.procs.clear()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def anyio_backend():
    return "asyncio"


def _start_replicas(registry: ProcessRegistry, variant: str) -> list[int]:
    procs = [
        registry.start(
            f"replica {name} ({variant})",
            [PYTHON, str(HERE / "replica.py"), "--name", name, "--variant", variant],
        )
        for name in REPLICA_NAMES
    ]
    return [int(p.wait_for_stdout(PORT_RE).group(1)) for p in procs]


@pytest.fixture(scope="session")
def _replica_registry():
    registry = ProcessRegistry()
    yield registry
    registry.stop_all()


@pytest.fixture(scope="session")
def replica_set(_replica_registry):
    """replica_set(variant) -> ports of 3 SDK replicas r1..r3 of that variant (started once per run).

    Variants (replica.py): stateful, json, stateless, resumable (Streamable HTTP at /mcp), sse (legacy).
    """
    cache: dict[str, list[int]] = {}

    def get(variant: str) -> list[int]:
        if variant not in cache:
            cache[variant] = _start_replicas(_replica_registry, variant)
        return cache[variant]

    return get


@pytest.fixture(scope="session")
def streamable_replicas(replica_set) -> list[int]:
    """Ports of 3 SDK replicas (Streamable HTTP, stateful, at /mcp), named r1..r3."""
    return replica_set("stateful")


@pytest.fixture(scope="session")
def sse_replicas(replica_set) -> list[int]:
    """Ports of 3 SDK replicas (legacy HTTP+SSE at /sse and /messages/), named r1..r3."""
    return replica_set("sse")


@pytest.fixture
def own_replicas(procs):
    """own_replicas(variant) -> {name: (port, ManagedProcess)}: replicas for this test only (to kill)."""

    def start(variant: str) -> dict[str, tuple[int, ManagedProcess]]:
        started = {
            name: procs.start(f"own replica {name} ({variant})",
                              [PYTHON, str(HERE / "replica.py"), "--name", name, "--variant", variant])
            for name in REPLICA_NAMES
        }
        return {name: (int(p.wait_for_stdout(PORT_RE).group(1)), p) for name, p in started.items()}

    return start


@pytest.fixture
def procs(request, _replica_registry):
    """Per-test process registry; prints every log tail (replicas too) if the test failed."""
    registry = ProcessRegistry()
    yield registry
    failed = any(getattr(request.node, f"rep_{w}", None) is not None and getattr(request.node, f"rep_{w}").failed
                 for w in ("setup", "call"))
    if failed:
        print("\n===== process logs (test failed) =====")
        print(registry.dump())
        print(_replica_registry.dump())
    registry.stop_all()


def tether_bin() -> str:
    explicit = os.environ.get("TETHER_BIN")
    path = explicit or DEFAULT_TETHER_BIN
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        # Never skip: a suite that passes without Tether proves nothing.
        pytest.fail(f"Tether binary not found at {path} (cargo build --bin tether, or set TETHER_BIN)")
    return path


@pytest.fixture
def start_tether(procs):
    """start_tether(ports, key=None) -> listening port of a Tether in front of the given backends.

    Instances started with the same `key` (base64, 32 bytes) share sessions. TETHER_LOG=debug is
    set, so a failing test prints Tether's view of every request.
    """

    def start(ports: list[int], key: str | None = None) -> int:
        argv = [tether_bin(), "--listen", "127.0.0.1:0"]
        for p in ports:
            argv += ["--backend", f"http://127.0.0.1:{p}"]
        env = dict(os.environ)
        env.setdefault("TETHER_LOG", "debug")
        if key is not None:
            env["TETHER_SESSION_KEY"] = key
        proc = procs.start("tether", argv, env=env)
        return int(proc.wait_for_stdout(TETHER_LISTEN_RE).group(1))

    return start


@pytest.fixture
def session_key() -> str:
    """A fresh key from `tether keygen`."""
    out = subprocess.run([tether_bin(), "keygen"], capture_output=True, text=True, timeout=20, check=True)
    return out.stdout.strip().splitlines()[-1].strip()


@pytest.fixture
def start_rr_proxy(procs):
    """start_rr_proxy(ports) -> listening port of the round-robin (no affinity) control proxy."""

    def start(ports: list[int]) -> int:
        argv = [PYTHON, str(HERE / "rr_proxy.py"), "--verbose"]
        for p in ports:
            argv += ["--backend", f"http://127.0.0.1:{p}"]
        proc = procs.start("rr_proxy", argv)
        return int(proc.wait_for_stdout(PORT_RE).group(1))

    return start


# ---------------------------------------------------------------- the scenario table


@dataclass
class Row:
    scenario: str
    variant: str
    direct: str = "-"
    tether: str = "-"
    rr: str = "-"
    mismatch: bool = False
    known_bug: str | None = None


RESULTS: list[Row] = []


def record(scenario: str, variant: str, *, direct: str = "-", tether: str = "-", rr: str = "-",
           mismatch: bool = False, known_bug: str | None = None) -> Row:
    """Add a row to the table printed at the end of the run (see pytest_terminal_summary)."""
    row = Row(scenario, variant, direct, tether, rr, mismatch, known_bug)
    RESULTS.append(row)
    return row


def _table(rows: list[Row]) -> list[str]:
    head = ("scenario", "transport/variant", "direct", "tether", "round-robin")
    cut = lambda t, n=64: t if len(t) <= n else t[: n - 3] + "..."  # noqa: E731 - details: test stdout (-s)
    cells = [head] + [(r.scenario, r.variant, cut(r.direct), cut(r.tether + (" (MISMATCH)" if r.mismatch else "")),
                       cut(r.rr, 48)) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(5)]
    fmt = lambda c: "| " + " | ".join(x.ljust(w) for x, w in zip(c, widths)) + " |"  # noqa: E731
    return [fmt(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [fmt(c) for c in cells[1:]]


def pytest_sessionfinish(session, exitstatus):
    unexplained = [r for r in RESULTS if r.mismatch and not r.known_bug]
    if unexplained and session.exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not RESULTS:
        return
    tr = terminalreporter
    tr.section("Tether vs direct vs round-robin (Python SDK, this run)")
    for line in _table(sorted(RESULTS, key=lambda r: (r.scenario, r.variant))):
        tr.write_line(line)
    mism = [r for r in RESULTS if r.mismatch]
    for r in mism:
        tr.write_line(f"MISMATCH {r.scenario} / {r.variant}: direct={r.direct!r} tether={r.tether!r}"
                      + (f"  [known Tether bug: {r.known_bug}]" if r.known_bug else ""))
    if not mism:
        tr.write_line("direct == tether for every comparable scenario")


# ---------------------------------------------------------------- Redis (test_store.py)

REDIS_SERVER = "/usr/bin/redis-server"


class RedisError(Exception):
    """An error reply (`-ERR ...`) from Redis."""


def _resp_reply(f):
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError(f"truncated RESP reply {line!r}")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        return None if n < 0 else f.read(n + 2)[:-2].decode()
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_resp_reply(f) for _ in range(n)]
    raise ConnectionError(f"unexpected RESP reply {line!r}")


class RedisServer:
    """A real redis-server on 127.0.0.1 (a free port), with an append-only file fsynced on every
    write in its own directory, so what it holds survives `kill()` + `start()` on the same port.
    `command(...)` speaks RESP on a fresh socket (no redis-cli needed)."""

    def __init__(self, procs: ProcessRegistry, directory: Path) -> None:
        self._procs = procs
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}"
        self.proc: ManagedProcess | None = None
        self.start()

    def start(self, timeout: float = STARTUP_TIMEOUT) -> None:
        self.proc = self._procs.start("redis-server", [
            REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--dir", str(self.dir), "--appendonly", "yes", "--appendfsync", "always"])
        deadline = time.monotonic() + timeout
        while True:  # PONG once it listens and has loaded its append-only file (-LOADING before)
            try:
                if self.command("PING") == "PONG":
                    return
            except (OSError, RedisError):
                pass
            if self.proc.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server not answering PING on {self.port}:\n{self.proc.tail()}")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL (a crash, no shutdown save), and wait until it is gone."""
        assert self.proc is not None
        os.killpg(self.proc.proc.pid, signal.SIGKILL)
        self.proc.proc.wait(timeout=10)

    def command(self, *args: str, timeout: float = 2.0):
        wire = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in args)
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(wire)
            with s.makefile("rb") as f:
                return _resp_reply(f)


@pytest.fixture
def redis_server(procs, tmp_path) -> RedisServer:
    """A fresh redis-server for this test (killed at teardown with the test's other processes)."""
    if not os.access(REDIS_SERVER, os.X_OK):
        if os.environ.get("TETHER_REQUIRE_REDIS"):
            pytest.fail(f"TETHER_REQUIRE_REDIS is set but {REDIS_SERVER} is not installed")
        pytest.skip(f"{REDIS_SERVER} not installed (Debian: apt-get install redis-server)")
    return RedisServer(procs, tmp_path / "redis")
