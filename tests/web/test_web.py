"""The learner's, instructor's and operator's pages in a real browser, on a real lab.

Run by scripts/check-web.sh, which starts the platform and passes its URLs and tokens in the
environment (WEB_*). Playwright for Python drives Debian's Chromium (WEB_CHROMIUM). Each check
prints one line; the first failure stops the run with its reason and exit code 1.
"""

import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright

ENV = os.environ
SPAWN, ORCH, OBSERVER = ENV["WEB_SPAWN"], ENV["WEB_ORCHESTRATOR"], ENV["WEB_OBSERVER"]
LEARNER, INSTRUCTOR = ENV["WEB_LEARNER_TOKEN"], ENV["WEB_INSTRUCTOR_TOKEN"]
OTHER_INSTRUCTOR, OPERATOR = ENV["WEB_OTHER_INSTRUCTOR_TOKEN"], ENV["WEB_OPERATOR_TOKEN"]
OUT = Path(ENV["WEB_OUT"])
OUT.mkdir(parents=True, exist_ok=True)
SIZES = {"desktop": (1280, 800), "phone": (390, 844)}


def api(method, url, token, body=None):
    """A JSON request; (status, body)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", "Bearer " + token)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def step(name):
    print(f"check-web: {name}", flush=True)


def wait_until(what, fn, within=60.0, every=0.25):
    start = time.monotonic()
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() - start > within:
            raise AssertionError(f"{what}: not within {within:.0f}s")
        time.sleep(every)


def terminal_text(page: Page, scope: str) -> str:
    return page.locator(f"{scope} .xterm-rows").inner_text()


def wait_terminal(page: Page, scope: str, pattern: str, within=20.0):
    """Waits until the terminal in `scope` shows `pattern` (a regular expression)."""
    wait_until(f"terminal {scope} shows {pattern!r}",
               lambda: re.search(pattern, terminal_text(page, scope)), within)


def fits(page: Page, name: str, visible: list[str]):
    """No horizontal overflow, the key elements visible; a screenshot per size."""
    for size, (w, h) in SIZES.items():
        page.set_viewport_size({"width": w, "height": h})
        page.wait_for_timeout(400)
        overflow = page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{name} at {w}x{h}: {overflow}px of horizontal overflow"
        for sel in visible:
            loc = page.locator(sel).first
            loc.scroll_into_view_if_needed()
            expect(loc).to_be_visible()
            box = loc.bounding_box()
            assert box and box["x"] >= 0 and box["x"] + min(box["width"], w) <= w + 1, \
                f"{name} at {w}x{h}: {sel} is outside the viewport ({box})"
        page.screenshot(path=str(OUT / f"{name}-{size}.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 800})


def main():
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=ENV["WEB_CHROMIUM"], headless=ENV.get("WEB_HEADED") != "1",
            args=["--no-sandbox", "--disable-dev-shm-usage"])
        errors = []

        def new_page():
            # One context per person: their own session storage, as separate browsers would be.
            page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
            page.on("pageerror", lambda e: errors.append(f"{page.url}: {e}"))
            return page

        # -- the instructor watches the list; the learner spawns --------------------------------
        teacher = new_page()
        teacher.goto(f"{SPAWN}/instructor#token={INSTRUCTOR}")
        expect(teacher.locator("[data-testid=labs]")).to_be_visible()
        assert "#token" not in teacher.url, "the token leaves the address bar"

        step("spawn a lab; the instructor sees it within 2 s")
        status, spawned = api("POST", f"{SPAWN}/v1/spawn", LEARNER,
                              {"track": "netplus", "template": ENV["WEB_TEMPLATE"],
                               "request_id": f"web-{time.time_ns()}"})
        assert status == 201, (status, spawned)
        spawned_at = time.monotonic()
        lab = spawned["scenario_id"]
        row = teacher.locator(f"[data-testid=lab-row][data-scenario={lab}]")
        row.wait_for(timeout=5000)
        seen = time.monotonic() - spawned_at
        assert seen <= 2.0, f"the lab reached the instructor's list after {seen:.2f}s"
        step(f"  seen after {seen:.2f}s")
        wait_until("the lab runs", lambda: api("GET", f"{ORCH}/v1/scenarios/{lab}", LEARNER)[1]
                   .get("status") == "running", within=120)

        # -- the learner's page and terminal ----------------------------------------------------
        step("the learner opens the access URL; the terminal connects")
        learner = new_page()
        learner.goto(f"{spawned['access_url']}#token={LEARNER}")
        expect(learner.locator("[data-testid=status]")).to_have_text("running", timeout=15000)
        term = "[data-testid=terminal][data-container=learner_vm]"
        expect(learner.locator("[data-testid=term-state]")).to_contain_text("connected", timeout=15000)
        learner.locator(term).click()
        wait_terminal(learner, term, r"[#$]")

        step("the instructor drops in read-only; the learner is told")
        row.locator("[data-testid=watch]").click()
        drop = "#dropin-terms [data-testid=terminal][data-container=learner_vm]"
        expect(teacher.locator("[data-testid=dropin-state]")).to_contain_text("connected", timeout=15000)
        expect(learner.locator("[data-testid=watch-banner]")).to_contain_text("web-instructor", timeout=10000)

        step("the learner types `ip route add …`; the instructor sees it")
        learner.locator(term).click()
        learner.keyboard.type("ip route add 10.20.0.0/24 via 10.10.0.1")
        learner.keyboard.press("Enter")
        learner.keyboard.type("ip route show")
        learner.keyboard.press("Enter")
        wait_terminal(learner, term, r"10\.20\.0\.0/24 via 10\.10\.0\.1")
        wait_terminal(teacher, drop, r"ip route add 10\.20\.0\.0/24 via 10\.10\.0\.1")

        step("the instructor's keys do not reach the learner's console (read-only)")
        teacher.locator(drop).click()
        teacher.keyboard.type("echo watcher-typed")
        teacher.keyboard.press("Enter")
        learner.keyboard.type("echo learner-marker")
        learner.keyboard.press("Enter")
        wait_terminal(learner, term, r"learner-marker\s")
        assert "watcher-typed" not in terminal_text(learner, term)

        step("Tab completes a path")
        learner.keyboard.type("ls /etc/fo")
        learner.keyboard.press("Tab")
        wait_terminal(learner, term, r"ls /etc/forge/")
        learner.keyboard.press("Enter")
        wait_terminal(learner, term, r"init")

        step("Ctrl-C stops a running ping")
        learner.keyboard.type("ping 10.10.0.1")
        learner.keyboard.press("Enter")
        wait_terminal(learner, term, r"bytes from 10\.10\.0\.1")
        learner.keyboard.press("Control+C")
        wait_terminal(learner, term, r"packets transmitted")
        learner.keyboard.type("echo after-ctrl-c")
        learner.keyboard.press("Enter")
        wait_terminal(learner, term, r"after-ctrl-c\s")

        step("the drop-in is in the audit log, in the instructor's view too")
        def dropin_audited():
            _, events = api("GET", f"{OBSERVER}/v1/audit/recent?event_type=scenario.terminal&resource_id={lab}", INSTRUCTOR)
            return [e for e in events or [] if e["actor"] == "web-instructor"
                    and e["details"].get("dropin") and e["details"].get("mode") == "ro"]
        wait_until("scenario.terminal drop-in audited", dropin_audited, within=20)
        expect(teacher.locator(f"[data-testid=audit-row][data-scenario={lab}][data-dropin=true]").first) \
            .to_be_visible(timeout=15000)

        step("check: the objectives pass")
        learner.locator("[data-testid=check]").click()
        expect(learner.locator("[data-testid=result]")).to_contain_text("2 of 2 objectives met", timeout=30000)
        expect(learner.locator("[data-testid=objective][data-passed=true]")).to_have_count(2)
        # The instructor's list shows the progress.
        expect(row).to_contain_text("2/2", timeout=5000)

        step("both pages at 1280x800 and 390x844")
        fits(learner, "learner", ["[data-testid=status]", "[data-testid=timer]", "[data-testid=check]",
                                  "[data-testid=objectives]", term])
        fits(teacher, "instructor", ["[data-testid=labs]", "[data-testid=dropin]", drop])

        step("another tenant's instructor sees nothing of it")
        other = new_page()
        other.goto(f"{SPAWN}/instructor#token={OTHER_INSTRUCTOR}")
        expect(other.locator("[data-testid=labs-empty]")).to_be_visible(timeout=10000)
        expect(other.locator(f"[data-scenario={lab}]")).to_have_count(0)
        status, listed = api("GET", f"{ORCH}/v1/scenarios?status=active", OTHER_INSTRUCTOR)
        assert status == 200 and all(s["scenario_id"] != lab for s in listed["scenarios"]), listed
        status, _ = api("POST", f"{ENV['WEB_WORKER']}/v1/scenarios/{lab}/terminal/ticket", OTHER_INSTRUCTOR, {})
        assert status == 404, status

        step("a learner token does not open the instructor view")
        nosy = new_page()
        nosy.goto(f"{SPAWN}/instructor#token={LEARNER}")
        expect(nosy.locator("[data-testid=denied]")).to_contain_text("forge.instructor", timeout=10000)
        expect(nosy.locator("[data-testid=lab-row]")).to_have_count(0)
        assert api("GET", f"{ORCH}/v1/scenarios", LEARNER)[0] == 403

        step("submit with confirmation; the signed score is shown")
        learner.locator("[data-testid=submit]").click()
        expect(learner.locator("[data-testid=confirm]")).to_be_visible()
        learner.locator("[data-testid=confirm-yes]").click()
        expect(learner.locator("[data-testid=score-panel]")).to_be_visible(timeout=90000)
        expect(learner.locator("[data-testid=score-value]")).to_have_text("1.00")
        expect(learner.locator("[data-testid=score-criterion]")).to_have_count(2)
        expect(learner.locator("[data-testid=verify-command]")).to_contain_text("forge bundle verify")
        fits(learner, "learner-scored", ["[data-testid=score-panel]", "[data-testid=score-value]",
                                         "[data-testid=verify-command]"])
        # The instructor's console closes with the lab; the score is in their list of ended labs.
        expect(teacher.locator(f"[data-testid=ended-row][data-scenario={lab}]")).to_contain_text(
            "1.00", timeout=20000)

        step("the operator page: hosts and a verifying audit chain")
        ops = new_page()
        ops.goto(f"{SPAWN}/operator#token={OPERATOR}")
        expect(ops.locator("[data-testid=host-row]").first).to_be_visible(timeout=10000)
        expect(ops.locator("[data-testid=audit-verified]")).to_have_attribute("data-verified", "true",
                                                                                timeout=15000)
        fits(ops, "operator", ["[data-testid=hosts]", "[data-testid=audit-status]"])

        assert not errors, f"script errors in the pages: {errors}"
        browser.close()


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"check-web: FAIL {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    except Exception as e:  # a Playwright timeout says which locator did not show up
        print(f"check-web: FAIL {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    print("check-web: all checks passed", flush=True)
