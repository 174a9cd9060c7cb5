"""The status page on the admin listener (`/`) in a real headless browser: Debian's Chromium, driven
over the Chrome DevTools Protocol, in front of three real Python SDK replicas with real SDK sessions.

The page must show every backend with its state and session counts, follow a drain made through
the admin API without a reload, drain and undrain itself once given the admin token, and do all
that without a console error or a Content-Security-Policy violation. A screenshot is written for
every run (path printed; a copy at target/test-artifacts/status-page.png).

Waiting is by polling the DOM or the admin API with a deadline, never by sleeping a guessed time.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import time
import urllib.request
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import websockets

from test_operations import Tether, open_sessions

pytestmark = pytest.mark.anyio

TOKEN = "st4tus-page-t0ken"
DEVTOOLS_RE = re.compile(r"DevTools listening on (ws://127\.0\.0\.1:(\d+)/\S+)")
ARTIFACTS = Path(__file__).resolve().parents[2] / "target" / "test-artifacts"
TIMEOUT = 15.0

# Every row of the page's backend tables, as the operator sees it.
ROWS_JS = """JSON.stringify([...document.querySelectorAll('tr[data-backend]')].map(r => ({
  address: r.dataset.backend,
  state: r.querySelector('.state').textContent,
  created: Number(r.querySelector('.sessions-created').textContent),
  orphaned: Number(r.querySelector('.sessions-orphaned').textContent),
  action: r.querySelector('button') ? r.querySelector('button').dataset.action : null,
})))"""

# Recorded by the page's document itself, before any of its scripts run.
CSP_WATCH_JS = """window.__csp = [];
document.addEventListener('securitypolicyviolation',
  e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"""


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("TETHER_REQUIRE_CHROMIUM"):
            pytest.fail("TETHER_REQUIRE_CHROMIUM is set but chromium is not installed")
        pytest.skip("chromium not installed (Debian: apt-get install chromium)")
    return path


class Cdp:
    """A DevTools Protocol connection to one page: commands by id, events kept in order."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.next_id = 0
        self.pending: dict[int, asyncio.Future] = {}
        self.events: list[dict] = []
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            msg = json.loads(raw)
            if "id" in msg:
                fut = self.pending.pop(msg["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
            else:
                self.events.append(msg)

    async def call(self, method: str, **params):
        self.next_id += 1
        fut = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = fut
        await self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        msg = await asyncio.wait_for(fut, TIMEOUT)
        if "error" in msg:
            raise RuntimeError(f"{method}: {msg['error']}")
        return msg["result"]

    async def js(self, expression: str):
        r = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    async def until(self, what: str, check, timeout: float = TIMEOUT):
        """Polls `await check()` until it returns a true value (returned), or fails the test."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = await check()
            if last:
                return last
            await asyncio.sleep(0.1)
        pytest.fail(f"timed out waiting for {what}; last: {last!r}")

    async def rows(self) -> dict[str, dict]:
        return {r["address"]: r for r in json.loads(await self.js(ROWS_JS))}

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions, and log entries at error level (CSP violations among them)."""
        out = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert", "warning"):
                out.append(f"console.{p['type']}: {[a.get('value', a.get('description')) for a in p['args']]}")
            elif m == "Runtime.exceptionThrown":
                out.append(f"exception: {p['exceptionDetails']}")
            elif m == "Log.entryAdded" and p["entry"]["level"] in ("error", "warning"):
                out.append(f"log {p['entry']['source']}: {p['entry']['text']} ({p['entry'].get('url', '')})")
        return out

    async def close(self) -> None:
        self.reader.cancel()
        await self.ws.close()


async def open_browser(procs, tmp_path: Path, extra: tuple[str, ...] = ()) -> Cdp:
    """Starts headless Chromium (its process group is killed with the test's processes) and
    connects to its blank page. `extra`: more command-line switches."""
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    p = procs.start("chromium", [
        chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
        f"--user-data-dir={profile}", "--window-size=1280,1000", "--no-first-run",
        "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", *extra, "about:blank",
    ])
    deadline = time.monotonic() + TIMEOUT
    port = None
    while port is None:
        for line in list(p.lines):
            m = DEVTOOLS_RE.search(line) if line.startswith("[err] ") else None
            if m:
                port = int(m.group(2))
        if port is None:
            if p.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"chromium gave no DevTools address:\n{p.tail()}")
            await asyncio.sleep(0.05)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
        pages = [t for t in json.load(r) if t["type"] == "page"]
    assert pages, "chromium has no page"
    ws = await websockets.connect(pages[0]["webSocketDebuggerUrl"], max_size=64 * 1024 * 1024)
    cdp = Cdp(ws)
    for domain in ("Page", "Runtime", "Log"):
        await cdp.call(f"{domain}.enable")
    await cdp.call("Page.addScriptToEvaluateOnNewDocument", source=CSP_WATCH_JS)
    return cdp


async def screenshot(cdp: Cdp, tmp_path: Path) -> Path:
    shot = await cdp.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    path = tmp_path / "status-page.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, ARTIFACTS / "status-page.png")
    print(f"\nstatus page screenshot: {path} (copy: {ARTIFACTS / 'status-page.png'})")
    return path


async def test_the_status_page_shows_every_backend_and_drains_them(procs, tmp_path, streamable_replicas):
    chromium()  # first: a missing browser skips (or fails under CI) before anything starts
    backends = ", ".join(f'"http://127.0.0.1:{p}"' for p in streamable_replicas)
    t = Tether(procs, tmp_path, f"""
listen = "127.0.0.1:0"
admin = {{ listen = "127.0.0.1:0", token = "{TOKEN}" }}
backends = [{backends}]
""")
    addresses = [f"127.0.0.1:{p}" for p in streamable_replicas]
    admin = f"http://127.0.0.1:{t.admin}"

    async with AsyncExitStack() as stack:
        # Real SDK sessions, spread over the replicas.
        sessions = await open_sessions(stack, t.url, 6)
        assert len({who for _, who in sessions}) == 3, sessions
        api = t.backends()
        assert sorted(api) == sorted(addresses)
        assert sum(b["sessions_created"] for b in api.values()) == 6

        cdp = await open_browser(procs, tmp_path)
        try:
            await cdp.call("Page.navigate", url=f"{admin}/")
            # Every backend, active, with the session counts the API gives.
            want = {a: (api[a]["state"], api[a]["sessions_created"], api[a]["sessions_orphaned"]) for a in addresses}

            async def shown():
                rows = await cdp.rows()
                got = {a: (r["state"], r["created"], r["orphaned"]) for a, r in rows.items()}
                return got if got == want else None

            await cdp.until("every backend on the page, active, with its sessions", shown)
            assert all(s == "active" for s, _, _ in want.values())
            assert all(r["action"] is None for r in (await cdp.rows()).values()), "no buttons without the token"
            note = await cdp.js("document.getElementById('actions-note').textContent")
            assert "admin token" in note, note
            assert await cdp.js("document.querySelectorAll('.chart svg path.line').length") == 6

            # A drain through the API shows on the open page, without a reload.
            await cdp.js("window.__same_document = true")
            drained = addresses[0]
            status, body = t.post(f"/backends/{drained}/drain", TOKEN)
            assert status == 200, body
            await cdp.until(f"{drained} shown draining",
                            lambda: _state(cdp, drained, "draining"))
            assert await cdp.js("window.__same_document === true"), "the page was reloaded"

            # The token typed into the page: buttons appear; undrain the drained backend.
            await cdp.js(f"document.getElementById('token').value = {json.dumps(TOKEN)};"
                         "document.getElementById('token-use').click()")
            rows = await cdp.until("the undrain button",
                                   lambda: _with_action(cdp, drained, "undrain"))
            assert all(r["action"] == "drain" for a, r in rows.items() if a != drained), rows
            assert TOKEN not in await cdp.js("location.href"), "the token is never in a URL"
            assert await cdp.js("sessionStorage.getItem('tether-admin-token')") == TOKEN
            await cdp.js(f"document.querySelector('tr[data-backend=\"{drained}\"] button').click()")

            async def api_active():
                return t.backends()[drained]["state"] == "active"

            await cdp.until("GET /backends to say active", api_active)
            await cdp.until(f"{drained} shown active", lambda: _state(cdp, drained, "active"))
            result = await cdp.js("document.getElementById('action-result').textContent")
            assert "undrained" in result, result

            # And a drain from the page itself.
            other = addresses[1]
            await cdp.until("the drain button", lambda: _with_action(cdp, other, "drain"))
            await cdp.js(f"document.querySelector('tr[data-backend=\"{other}\"] button').click()")

            async def api_draining():
                return t.backends()[other]["state"] == "draining"

            await cdp.until("GET /backends to say draining", api_draining)
            await cdp.until(f"{other} shown draining", lambda: _state(cdp, other, "draining"))

            # The sessions kept working on their replicas all along.
            for s, who in sessions:
                assert await s.tool("whoami") == who

            await cdp.until("the page's next poll", lambda: _state(cdp, other, "draining"))
            assert await cdp.js("window.__csp") == [], "CSP violations"
            assert cdp.problems() == [], cdp.problems()
        finally:
            try:
                await screenshot(cdp, tmp_path)
            finally:
                await cdp.close()


async def test_a_name_rebound_to_the_admin_address_gets_no_page(procs, tmp_path, streamable_replicas):
    """DNS rebinding, played out in the browser: Chromium resolves `evil.example` (the attacker's
    name, its DNS rebound) and `tether-admin.test` (the name the operator listed in
    `admin.allowed_hosts`) to the admin listener's address. The first gets a 403 and neither the
    page nor `/status`; the second gets the page, as an IP address does."""
    chromium()
    backends = ", ".join(f'"http://127.0.0.1:{p}"' for p in streamable_replicas)
    t = Tether(procs, tmp_path, f"""
listen = "127.0.0.1:0"
admin = {{ listen = "127.0.0.1:0", token = "{TOKEN}", allowed_hosts = ["tether-admin.test"] }}
backends = [{backends}]
""")
    addresses = sorted(f"127.0.0.1:{p}" for p in streamable_replicas)
    rules = "MAP evil.example 127.0.0.1, MAP tether-admin.test 127.0.0.1"
    cdp = await open_browser(procs, tmp_path, (f"--host-resolver-rules={rules}",
                                               "--disable-features=HttpsUpgrades"))
    try:
        await cdp.call("Page.navigate", url=f"http://evil.example:{t.admin}/")

        async def refused():
            text = await cdp.js("document.readyState === 'complete' && document.body ? "
                                "document.body.innerText : ''")
            return text if "admin.allowed_hosts" in text else None

        text = await cdp.until("the rebound name's 403", refused)
        assert json.loads(text)["host"] == f"evil.example:{t.admin}", text
        assert await cdp.js("location.host") == f"evil.example:{t.admin}", "no redirect elsewhere"
        assert await cdp.js("document.getElementById('pools') === null"), "no status page"
        # The attacker's script, same origin in the browser's eyes, reads nothing either.
        got = await cdp.js("Promise.all(['/status', '/config', '/backends'].map(p => "
                           "fetch(p).then(async r => [r.status, await r.text()])))")
        for status, body in got:
            assert status == 403, (status, body)
            assert not any(a in body for a in addresses), body
        assert t.states() == {a: "active" for a in addresses}

        # The listed name: the page, with every backend.
        await cdp.call("Page.navigate", url=f"http://tether-admin.test:{t.admin}/")

        async def shown():
            rows = await cdp.rows()
            return rows if sorted(rows) == addresses else None

        await cdp.until("the page at the listed name, with every backend", shown)
        assert await cdp.js("location.host") == f"tether-admin.test:{t.admin}"
        assert await cdp.js("window.__csp") == [], "CSP violations"
    finally:
        await cdp.close()


async def _state(cdp: Cdp, address: str, state: str) -> bool:
    row = (await cdp.rows()).get(address)
    return row is not None and row["state"] == state


async def _with_action(cdp: Cdp, address: str, action: str):
    rows = await cdp.rows()
    row = rows.get(address)
    return rows if row is not None and row["action"] == action else None
