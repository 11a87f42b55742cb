#!/usr/bin/env python3
"""Browser test of the dashboard's web console: headless Chromium, driven by Selenium,
against a whole local cluster started with `kodis up` on free ports (with an admin
token), plus one spare redis-server for a third group.

Checks, through the page only (no reload unless said): a wrong token shows the
API's error and the right one is kept; every group and server renders with its role;
keyboard use of a dialog; a promote from the page shows the new roles; a master's
redis-server killed shows kodis-ha's failover; a third group
and its server added from the page, then a rebalance started from the page (its
dry-run plan shown first) moves slots and its progress reaches the end; no console
error (a Content-Security-Policy violation is one). Writes screenshots of the main
views with --screenshots DIR.

Usage: test_console.py [--bin-dir target/debug] [--screenshots docs]
Prints one line per check and ends with `N passed, M failed`; exits non-zero on a
failure. Every process it starts is stopped on the way out, whatever happens.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request

import redis
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

TOKEN = "console-test-token"
KEYS = 20000  # written before the rebalance: enough to watch it move for a few seconds
procs = []  # (name, Popen), stopped in reverse order


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_run(n):
    """The first port of `n` consecutive free ports (kodis up numbers servers so)."""
    for _ in range(200):
        base = free_port()
        if base + n < 65000 and all(port_free(base + i) for i in range(n)):
            return base
    raise SystemExit(f"no {n} consecutive free ports")


def until(what, check, timeout=30.0, every=0.1):
    """Polls `check` until it returns something truthy; fails after `timeout`."""
    end = time.monotonic() + timeout
    last = None
    while True:
        try:
            v = check()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - reported on timeout
            last = e
        if time.monotonic() >= end:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}"
                                 + (f" (last error: {last!r})" if last else ""))
        time.sleep(every)


def api(base, method, path, body=None, token=TOKEN):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            text = r.read().decode()
            return r.status, (json.loads(text) if text else None)
    except urllib.error.HTTPError as e:
        text = e.read().decode()
        return e.code, (json.loads(text) if text else None)


def stop_all():
    for name, p in reversed(procs):
        if p.poll() is not None:
            continue
        try:
            # kodis up stops its children on SIGTERM (then SIGKILL after a deadline).
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        try:
            p.wait(timeout=40)
        except subprocess.TimeoutExpired:
            sys.stderr.write(f"{name} did not stop on SIGTERM; killing its process group\n")
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(timeout=10)


def start(name, argv, log, env=None):
    with open(log, "wb") as out:
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                             start_new_session=True)
    procs.append((name, p))
    return p


class Cluster:
    def __init__(self, bin_dir, tmp):
        self.base_port = free_run(5)
        self.dashboard_port = free_port()
        self.proxy_port = free_port()
        self.proxy_admin_port = free_port()
        self.ha_port = free_port()
        self.base = f"http://127.0.0.1:{self.dashboard_port}"
        self.tmp = tmp
        env = dict(os.environ, KODIS_ADMIN_TOKEN=TOKEN)
        env.pop("KODIS_DASHBOARD", None)
        self.log = os.path.join(tmp, "kodis-up.out")
        self.up = start("kodis up", [
            os.path.join(bin_dir, "kodis"), "up",
            "--base-port", str(self.base_port),
            "--dashboard-port", str(self.dashboard_port),
            "--proxy-port", str(self.proxy_port),
            "--proxy-admin-port", str(self.proxy_admin_port),
            "--ha-port", str(self.ha_port),
            "--data-dir", os.path.join(tmp, "up"),
        ], self.log, env=env)
        # A spare server for a third group, outside kodis up (the page adds it).
        self.spare_port = self.base_port + 4
        d = os.path.join(tmp, "spare")
        os.mkdir(d)
        start("spare redis-server", [
            "redis-server", "--port", str(self.spare_port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", d,
        ], os.path.join(d, "redis.out"))

    def ready(self):
        def ok():
            if self.up.poll() is not None:
                raise SystemExit("kodis up exited:\n" + self.tail())
            s, ov = api(self.base, "GET", "/api/v1/overview")
            return (s == 200 and len(ov["groups"]) == 2
                    and all(x["reachable"] for g in ov["groups"] for x in g["servers"])
                    and len(ov["proxies"]) == 1
                    and ov["proxies"][0]["acked_epoch"] == ov["epoch"]
                    and ov["unassigned_slots"] == 0)
        until("kodis up to be ready", ok, timeout=120, every=0.3)
        until("the spare redis-server",
              lambda: redis.Redis(port=self.spare_port, socket_timeout=1).ping())

    def overview(self):
        s, ov = api(self.base, "GET", "/api/v1/overview")
        assert s == 200, (s, ov)
        return ov

    def tail(self):
        with open(self.log, "rb") as f:
            return f.read()[-3000:].decode(errors="replace")


def browser(width=1280, height=1000):
    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              f"--window-size={width},{height}", "--force-device-scale-factor=1"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    path = shutil.which("chromium")
    if path:
        opts.binary_location = path
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    return webdriver.Chrome(service=Service(driver_path), options=opts)


class Firefox:
    """Firefox driven over WebDriver BiDi, which it speaks itself (no geckodriver, which
    Debian does not ship): a websocket (websocket-client, a dependency of Selenium)."""

    def __init__(self, binary, tmp):
        import websocket  # noqa: PLC0415 - only when Firefox is there
        port = free_port()
        profile = os.path.join(tmp, "firefox-profile")
        os.mkdir(profile)
        self.proc = start("firefox", [
            binary, "--headless", "--no-remote", "--profile", profile,
            f"--remote-debugging-port={port}", "about:blank",
        ], os.path.join(tmp, "firefox.out"))
        self.ws = until("Firefox's WebDriver BiDi endpoint", lambda: websocket.create_connection(
            f"ws://127.0.0.1:{port}/session", timeout=30, suppress_origin=True),
            timeout=60, every=0.3)
        self.next_id = 0
        self.call("session.new", {"capabilities": {}})
        self.context = self.call("browsingContext.getTree", {})["contexts"][0]["context"]
        # Script errors and CSP violations, recorded by the page itself.
        self.call("script.addPreloadScript", {"functionDeclaration": """() => {
            window.__problems = [];
            addEventListener('securitypolicyviolation',
                (e) => window.__problems.push('CSP: ' + e.violatedDirective + ' ' + e.blockedURI));
            addEventListener('error', (e) => window.__problems.push('error: ' + e.message));
            addEventListener('unhandledrejection', (e) => window.__problems.push('rejection: ' + e.reason));
        }"""})

    def call(self, method, params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") != self.next_id:
                continue  # an event
            if msg.get("type") == "error":
                raise AssertionError(f"{method}: {msg.get('error')}: {msg.get('message')}")
            return msg["result"]

    def get(self, url):
        self.call("browsingContext.navigate", {"context": self.context, "url": url, "wait": "complete"})

    def js(self, expression):
        r = self.call("script.evaluate", {"expression": expression, "awaitPromise": True,
                                          "target": {"context": self.context}})
        if r.get("type") != "success":
            raise AssertionError(f"{expression}: {r}")
        return r["result"].get("value")

    def screenshot(self, path, width, height):
        import base64  # noqa: PLC0415
        self.call("browsingContext.setViewport", {"context": self.context,
                                                  "viewport": {"width": width, "height": height}})
        data = self.call("browsingContext.captureScreenshot", {"context": self.context})["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def quit(self):
        try:
            self.call("session.end", {})
        except Exception:  # noqa: BLE001 - stop_all kills it anyway
            pass


def check_firefox(c, tmp, shots):
    ff = Firefox(shutil.which("firefox-esr") or shutil.which("firefox"), tmp)
    try:
        ff.call("browsingContext.setViewport", {"context": ff.context,
                                                "viewport": {"width": 1280, "height": 1000}})
        ff.get(c.base + "/")
        until("the token dialog in Firefox", lambda: ff.js("document.getElementById('token').open"))
        ff.js(f"document.getElementById('token-input').value = {json.dumps(TOKEN)};"
              "document.getElementById('token-form').requestSubmit(); true")
        ov = c.overview()
        want = sorted((s["addr"], s["role"]) for g in ov["groups"] for s in g["servers"])

        def rendered():
            got = ff.js("JSON.stringify([...document.querySelectorAll('tr[data-addr]')]"
                        ".map((r) => [r.dataset.addr, r.querySelector('.role-name').textContent]))")
            return sorted(tuple(x) for x in json.loads(got)) == want
        until("every server with its role in Firefox", rendered, timeout=15)
        assert ff.js("document.getElementById('token').open") is False
        assert ff.js("document.querySelectorAll('#slot-map .slot-seg').length") >= len(ov["groups"])
        width = ff.js("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert width[0]["value"] <= width[1]["value"], f"sideways scroll in Firefox: {width}"
        # A dialog opens and closes.
        ff.js("document.getElementById('act-add-group').click(); true")
        assert ff.js("document.getElementById('confirm').open") is True
        ff.js("document.getElementById('confirm-cancel').click(); true")
        assert ff.js("document.getElementById('confirm').open") is False
        if shots:
            ff.screenshot(os.path.join(shots, "console-firefox.png"), 1280, 1000)
        problems = ff.js("JSON.stringify(window.__problems)")
        assert json.loads(problems) == [], problems
    finally:
        ff.quit()


# ---- page helpers ----------------------------------------------------------------

def q(d, css):
    return d.find_element(By.CSS_SELECTOR, css)


def qs(d, css):
    return d.find_elements(By.CSS_SELECTOR, css)


def visible_text(d, css):
    els = qs(d, css)
    return els[0].text if els and els[0].is_displayed() else ""


def role_of(d, addr):
    rows = qs(d, f'tr[data-addr="{addr}"] .role-name')
    return rows[0].text if rows else None


def confirm_ok(d):
    until("the confirmation dialog", lambda: q(d, "#confirm").get_attribute("open") is not None)
    q(d, "#confirm-ok").click()


def dialog_closed(d, css="#confirm"):
    return q(d, css).get_attribute("open") is None


def console_errors(d):
    # The API's refusals (401 before the token, the 409 checked above) are logged as
    # failed loads: expected. Anything else (a script error, a CSP violation) is not.
    return [e for e in d.get_log("browser") if e.get("level") == "SEVERE"
            and not (e.get("source") == "network" and "/api/v1/" in e.get("message", ""))]


# ---- the checks ----------------------------------------------------------------

def check_wrong_token(d, c):
    d.get(c.base + "/")
    until("the token dialog", lambda: q(d, "#token").get_attribute("open") is not None)
    assert "admin token" in visible_text(d, "#banner"), visible_text(d, "#banner")
    q(d, "#token-input").send_keys("not-the-token" + Keys.ENTER)
    err = until("the API's error for a wrong token",
                lambda: visible_text(d, "#token-error"))
    assert "401" in err and "wrong admin token" in err, err
    assert q(d, "#token").get_attribute("open") is not None, "the dialog closed on a wrong token"
    box = q(d, "#token-input")
    box.clear()
    box.send_keys(TOKEN + Keys.ENTER)
    until("the token dialog to close", lambda: dialog_closed(d, "#token"))
    until("the groups", lambda: len(qs(d, "article[data-group]")) == 2)
    stored = d.execute_script("return sessionStorage.getItem('kodis.token')")
    assert stored == TOKEN, stored
    assert not q(d, "#banner").is_displayed(), q(d, "#banner").text


def check_renders_everything(d, c):
    ov = c.overview()

    def all_there():
        for g in ov["groups"]:
            card = qs(d, f'article[data-group="{g["id"]}"]')
            if not card or f'Group {g["id"]}' not in card[0].text:
                return False
            for s in g["servers"]:
                if role_of(d, s["addr"]) != s["role"]:
                    return False
                row = q(d, f'tr[data-addr="{s["addr"]}"]')
                if "up" not in row.find_element(By.CSS_SELECTOR, ".state").text:
                    return False
        return True
    until("every group and server with its role", all_there, timeout=10)
    legend = q(d, "#slot-legend").text
    for g in ov["groups"]:
        assert f'Group {g["id"]}: {g["slots"]:,} slots' in legend, legend
    segs = qs(d, "#slot-map .slot-seg")
    assert len(segs) == 2 and "G1" in segs[0].text and "G2" in segs[1].text, [s.text for s in segs]
    p = ov["proxies"][0]
    row = until("the proxy row", lambda: qs(d, f'tr[data-proxy="{p["id"]}"]'))[0]
    assert str(p["acked_epoch"]) in row.find_element(By.CSS_SELECTOR, ".epoch").text, row.text
    assert "current" in row.text, row.text
    until("memory figures", lambda: "MiB" in q(d, "article[data-group='1']").text
          or "KiB" in q(d, "article[data-group='1']").text)
    assert q(d, "#now-mem").text not in ("", "–")


def check_keyboard(d, c):
    body = q(d, "body")
    body.send_keys(Keys.TAB)  # the skip link
    first = d.switch_to.active_element
    assert first.get_attribute("class") == "skip", first.get_attribute("outerHTML")
    q(d, "#act-add-group").send_keys(Keys.ENTER)
    until("the add-group dialog", lambda: q(d, "#confirm").get_attribute("open") is not None)
    assert d.switch_to.active_element.get_attribute("id") == "f-group-id"
    d.switch_to.active_element.send_keys(Keys.ESCAPE)
    until("Escape to close the dialog", lambda: dialog_closed(d))


def check_promote(d, c):
    ov = c.overview()
    g = ov["groups"][0]
    old, new = g["servers"][0]["addr"], g["servers"][1]["addr"]
    d.execute_script("window.__kodisNoReload = 42")
    btn = until("the promote button", lambda: [b for b in qs(
        d, f'tr[data-addr="{new}"] button') if b.text == "Promote" and b.is_enabled()])[0]
    btn.click()
    assert new in q(d, "#confirm-title").text
    confirm_ok(d)
    until("the dialog to close after the promote", lambda: dialog_closed(d), timeout=30)
    until(f"{new} shown as master and {old} as replica",
          lambda: role_of(d, new) == "master" and role_of(d, old) == "replica", timeout=15)
    assert d.execute_script("return window.__kodisNoReload") == 42, "the page reloaded"
    assert "master" in q(d, "#status").text, q(d, "#status").text
    # The servers agree. (A known race fails here: kodis-ha re-points the new master
    # to the old one from a topology it read before the promote committed, leaving the
    # group with no master; ha.log says "did not follow master", and the page shows
    # "server says replica" on the master's row.)
    def agree():
        t = c.overview()["groups"][0]["servers"]
        return t[0]["addr"] == new and t[0]["reported_role"] == "master"
    try:
        until("the promoted server to report itself master", agree, timeout=10)
    except AssertionError:
        shown = q(d, f'tr[data-addr="{new}"]').text
        raise AssertionError(f"{new} is master in the topology but does not say so: "
                             f"{c.overview()['groups'][0]['servers']}; the page shows: {shown}")


def check_kill_master(d, c):
    """kill -9 of a master's redis-server: kodis-ha fails over, and the page shows
    the replica as master, then the old master back as a replica, without a reload."""
    ov = c.overview()
    g = ov["groups"][1]
    old, new = g["servers"][0]["addr"], g["servers"][1]["addr"]
    port = int(old.rsplit(":", 1)[1])
    pid = int(redis.Redis(port=port, socket_timeout=2).info("server")["process_id"])
    d.execute_script("window.__kodisNoReload = 43")
    os.kill(pid, signal.SIGKILL)
    until(f"{new} shown as master after kodis-ha's failover",
          lambda: role_of(d, new) == "master", timeout=60, every=0.2)
    until(f"{old} back as a replica, up",
          lambda: role_of(d, old) == "replica"
          and "up" in q(d, f'tr[data-addr="{old}"] .state').text.split(), timeout=60)
    assert d.execute_script("return window.__kodisNoReload") == 43, "the page reloaded"
    t = c.overview()["groups"][1]["servers"]
    assert t[0]["addr"] == new and t[0]["reported_role"] == "master", t
    until("the proxy at the current epoch on the page",
          lambda: all("current" in r.text for r in qs(d, "tr[data-proxy]")), timeout=20)


def check_refusal_shows_error(d, c):
    # Promoting is refused for a server the group does not have: the API's text shows.
    q(d, "#act-add-group").click()
    until("the add-group dialog", lambda: q(d, "#confirm").get_attribute("open") is not None)
    box = q(d, "#f-group-id")
    box.clear()
    box.send_keys("1")
    q(d, "#confirm-ok").click()
    err = until("the API's refusal", lambda: visible_text(d, "#confirm-error"))
    assert "409" in err and "1" in err, err
    q(d, "#confirm-cancel").click()
    until("the dialog to close", lambda: dialog_closed(d))


def check_rebalance(d, c, shots):
    # Keys to move, written through the proxy.
    r = redis.Redis(port=c.proxy_port, socket_timeout=5, protocol=2)

    def write():
        pipe = r.pipeline(transaction=False)
        for i in range(KEYS):
            pipe.set(f"console:{i}", "x" * 64)
        return pipe.execute()
    # Right after a failover a proxy may still answer READONLY until it has fetched
    # the new topology: retry for a while.
    until(f"{KEYS} keys written through the proxy", write, timeout=30, every=0.5)
    spare = f"127.0.0.1:{c.spare_port}"
    # A third group, from the page.
    q(d, "#act-add-group").click()
    until("the add-group dialog", lambda: q(d, "#confirm").get_attribute("open") is not None)
    assert q(d, "#f-group-id").get_attribute("value") == "3"
    confirm_ok(d)
    until("group 3's card", lambda: qs(d, "article[data-group='3']"), timeout=10)
    until("the dialog to close", lambda: dialog_closed(d))
    q(d, "article[data-group='3'] button[data-key='add-server:3']").click()
    until("the add-server dialog", lambda: q(d, "#confirm").get_attribute("open") is not None)
    q(d, "#f-server-addr").send_keys(spare)
    q(d, "#confirm-ok").click()
    until("the dialog to close", lambda: dialog_closed(d), timeout=20)
    until("the new server in group 3", lambda: role_of(d, spare) == "master", timeout=10)
    # The dry-run plan first.
    q(d, "#act-rebalance").click()
    summary = until("the plan", lambda: visible_text(d, "#plan-summary"), timeout=10)
    assert "slots move" in summary, summary
    moves = qs(d, "#plan-moves tbody tr")
    assert moves and all("group 3" in m.text for m in moves), [m.text for m in moves]
    assert not c.overview()["migrations"]["migrations"], "the dry run started migrations"
    if shots:
        d.save_screenshot(os.path.join(shots, "console-rebalance-plan.png"))
    q(d, "#confirm-ok").click()
    until("the dialog to close", lambda: dialog_closed(d), timeout=20)
    # While it runs: migrating ranges marked on the map, a row per migration.
    until("migrating ranges on the slot map",
          lambda: qs(d, "#slot-map .slot-seg.migrating") and qs(d, "#mig-table tbody tr"),
          timeout=20, every=0.1)
    assert "→G3" in q(d, "#slot-map .slot-seg.migrating").text
    if shots:
        shoot(d, os.path.join(shots, "console-migrating.png"), 1280)
        d.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

    def finished():
        bars = qs(d, "#mig-progress")
        if not bars:
            return False
        v, m = float(bars[0].get_attribute("value")), float(bars[0].get_attribute("max"))
        return m > 0 and v == m and "100%" in q(d, "#mig-progress-text").text
    until("the rebalance's progress to reach the end", finished, timeout=240, every=0.2)
    ov = c.overview()
    counts = {g["id"]: g["slots"] for g in ov["groups"]}
    assert counts[3] >= 5000 and max(counts.values()) - min(counts.values()) <= 1, counts
    assert not ov["migrations"]["migrations"], ov["migrations"]
    keys3 = redis.Redis(port=c.spare_port, socket_timeout=5).dbsize()
    assert keys3 > 0, "no key moved to group 3"
    until("group 3's slot count on the page",
          lambda: f"Group 3: {counts[3]:,} slots" in q(d, "#slot-legend").text, timeout=10)
    assert int(q(d, "#mig-keys").text.replace(",", "")) >= keys3
    assert r.get("console:7") == b"x" * 64


def shoot(d, path, width, mobile=False):
    """A screenshot of the whole page laid out `width` px wide."""
    d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": 900, "deviceScaleFactor": 1, "mobile": mobile})
    d.execute_script("window.dispatchEvent(new Event('resize'))")
    height = d.execute_script("return document.documentElement.scrollHeight")
    d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": min(height, 2600), "deviceScaleFactor": 1, "mobile": mobile})
    d.execute_script("window.dispatchEvent(new Event('resize'))")
    d.save_screenshot(path)


def screenshots(d, c, shots):
    until("a redraw", lambda: "updated" in q(d, "#freshness").text)
    shoot(d, os.path.join(shots, "console-1280.png"), 1280)
    d.execute_cdp_cmd("Emulation.setEmulatedMedia",
                      {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    shoot(d, os.path.join(shots, "console-dark.png"), 1280)
    d.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": 375, "height": 800, "deviceScaleFactor": 1, "mobile": True})
    d.execute_script("window.dispatchEvent(new Event('resize'))")
    width = d.execute_script("return document.documentElement.scrollWidth")
    assert width <= 375, f"the page is {width} px wide at 375 px"
    d.save_screenshot(os.path.join(shots, "console-375.png"))
    d.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", default="target/debug")
    ap.add_argument("--screenshots", default=None, help="directory for PNG screenshots")
    args = ap.parse_args()
    for tool in ("redis-server", "chromedriver"):
        if not shutil.which(tool) and not os.path.exists("/usr/bin/" + tool):
            raise SystemExit(f"{tool} is missing (scripts/install-deps.sh installs it)")
    tmp = tempfile.mkdtemp(prefix="kodis-console-")
    passed, failed = 0, 0
    d = None
    c = None
    try:
        c = Cluster(os.path.abspath(args.bin_dir), tmp)
        c.ready()
        d = browser()
        shots = os.path.abspath(args.screenshots) if args.screenshots else None
        if shots:
            os.makedirs(shots, exist_ok=True)
        checks = [
            ("a wrong token shows the API's error; the right one is kept",
             lambda: check_wrong_token(d, c)),
            ("every group and server renders with its role, slots and proxies",
             lambda: check_renders_everything(d, c)),
            ("dialogs work from the keyboard", lambda: check_keyboard(d, c)),
            ("a refused action shows the API's error", lambda: check_refusal_shows_error(d, c)),
            ("a promote from the page shows the new roles without a reload",
             lambda: check_promote(d, c)),
            ("kill -9 of a master: the page shows kodis-ha's failover without a reload",
             lambda: check_kill_master(d, c)),
            ("a third group, then a rebalance from the page (plan first) that finishes",
             lambda: check_rebalance(d, c, shots)),
            ("no error in the browser console (CSP violations included)",
             lambda: (lambda errs: None if not errs else (_ for _ in ()).throw(
                 AssertionError(errs)))(console_errors(d))),
        ]
        if shutil.which("firefox-esr") or shutil.which("firefox"):
            checks.append(("Firefox renders every server, opens a dialog, no script error "
                           "or CSP violation", lambda: check_firefox(c, tmp, shots)))
        else:
            print("skip  Firefox: not installed", flush=True)
        if shots:
            checks.append(("screenshots at 1280 px, dark, and 375 px (no sideways scroll)",
                           lambda: screenshots(d, c, shots)))
        for name, fn in checks:
            t0 = time.monotonic()
            try:
                fn()
                passed += 1
                print(f"ok    {name} ({time.monotonic() - t0:.1f} s)", flush=True)
            except Exception:  # noqa: BLE001 - every failure is reported and counted
                failed += 1
                print(f"FAIL  {name}", flush=True)
                traceback.print_exc()
                if d is not None:
                    path = os.path.join(tmp, f"failure-{passed + failed}.png")
                    d.save_screenshot(path)
                    print(f"      screenshot: {path}", flush=True)
    except BaseException:
        failed += 1
        traceback.print_exc()
        if c is not None:
            sys.stderr.write(c.tail())
    finally:
        if d is not None:
            d.quit()
        stop_all()
        if failed == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp} (logs of the cluster in {tmp}/up/logs)")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
