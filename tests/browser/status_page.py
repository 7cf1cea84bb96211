"""Drives the gateway's status page (`/` on the admin listener) in a real headless Chromium.

Run by tests/tests/e2e/status_page.rs with ADMIN_URL and GATEWAY_URL (http://127.0.0.1:PORT),
CHROMIUM (the browser binary; playwright drives it, it downloads none) and MODE:

- MODE=open (no admin token): the page loads with no console error and no failed request; the
  channel figures move from 0 once orders are sent; the first order, refused by the ERP, is
  listed as a dead letter; a screenshot under load is written to SCREENSHOT; pressing
  "Send again" replays it and the page shows it delivered and no dead letter left. Prints the
  replayed delivery id as `replayed: <id>`.
- MODE=token (ADMIN_TOKEN set): signing in through the form lands on the page, which shows the
  figures; after signing out the page says so and links to the sign-in form.

Exits non-zero with a message on the first expectation that fails.
"""

import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request

from playwright.sync_api import sync_playwright

ADMIN = os.environ["ADMIN_URL"]
GATEWAY = os.environ.get("GATEWAY_URL", "")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
MODE = os.environ.get("MODE", "open")
SCREENSHOT = os.environ.get("SCREENSHOT", "")
# Playwright's waits, in ms: generous, since a loaded CI machine is slow; they bound a wait
# for something the page must show, they are not what is asserted.
WAIT = 30_000


def expect(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


def post_order(channel, n):
    """POSTs one order to the gateway; returns the status."""
    req = urllib.request.Request(
        f"{GATEWAY}/channels/{channel}/orders",
        data=json.dumps({"ref": f"{channel}-{n}", "lines": [{"sku": "A-1", "qty": 1}]}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


class Watch:
    """Collects what the browser reports: console errors, page errors, failed requests and
    error answers (the allowed ones are filtered by the caller)."""

    def __init__(self, page):
        self.problems = []
        page.on(
            "console",
            lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"),
        )
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on(
            "requestfailed",
            lambda r: self.problems.append(f"request failed: {r.method} {r.url} {r.failure}"),
        )
        page.on(
            "response",
            lambda r: r.status >= 400 and self.problems.append(f"answer {r.status}: {r.url}"),
        )


def cell(page, table, key, value, cls):
    return page.locator(f"#{table} tbody tr[data-{key}='{value}'] .{cls}")


def number(locator):
    text = locator.inner_text().replace(",", "")
    try:
        return float(text)
    except ValueError:
        expect(False, f"not a number: {text!r}")


def wait_polls(page, more_than):
    """Waits until the page has rendered more than `more_than` polls; returns the count."""
    polls = lambda: int(page.locator("body").get_attribute("data-polls") or 0)  # noqa: E731
    wait_until(page, lambda: polls() > more_than, f"more than {more_than} polls")
    return polls()


def wait_until(page, cond, what):
    """Polls `cond` (reading the page through locators) until it holds. Page functions are
    not used: the page's CSP forbids eval, which Playwright's wait_for_function needs."""
    deadline = time.monotonic() + WAIT / 1000
    while not cond():
        expect(time.monotonic() < deadline, f"timed out waiting for {what}")
        page.wait_for_timeout(100)


def open_mode(p):
    browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
    page = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
    watch = Watch(page)
    resp = page.goto(f"{ADMIN}/")
    expect(resp.status == 200, f"/: {resp.status}")
    expect(page.title() == "Gateway status", f"title: {page.title()}")
    wait_polls(page, 0)

    # before any traffic: the channel is listed with nothing counted
    total = cell(page, "channels", "channel", "amazon", "total")
    expect(number(total) == 0, f"amazon before traffic: {total.inner_text()}")
    expect(page.locator("#no-dead").is_visible(), "no dead letter before traffic")
    # the upstream and the config version are shown
    expect(
        cell(page, "upstreams", "upstream", "erp", "health").inner_text() == "Up",
        "the ERP endpoint is not shown healthy",
    )
    expect(len(page.inner_text("#cfg-version")) == 12, "no config version")
    # landmarks and headers for assistive technology
    expect(page.locator("main").count() == 1, "no main landmark")
    expect(page.locator("[aria-live=polite]").count() >= 1, "no live region")
    expect(
        page.locator("thead th:not([scope=col])").count() == 0, "a column header without scope"
    )

    # the first order is refused by the ERP (422): a dead letter
    expect(post_order("amazon", 0) == 202, "the first order was not accepted")
    dead_row = page.locator("#dead tbody tr")
    dead_row.first.wait_for(timeout=WAIT)
    expect(dead_row.count() == 1, f"{dead_row.count()} dead letters listed")
    dead_id = dead_row.first.get_attribute("data-delivery")
    expect("422" in dead_row.first.inner_text(), f"no reason: {dead_row.first.inner_text()}")
    queue_dead = cell(page, "queues", "queue", "q", "dead")
    wait_until(page, lambda: queue_dead.inner_text() == "1", "one dead letter in queue q")

    # traffic: the numbers move from 0, and a rate appears
    stop = threading.Event()

    def load():
        n = 1
        while not stop.is_set():
            for ch in ("amazon", "amazon", "shopify", "walmart", "ebay"):
                post_order(ch, n)
                n += 1
            time.sleep(0.05)

    sender = threading.Thread(target=load, daemon=True)
    sender.start()
    try:
        # the count moves past the dead letter's one order, and then again on a later poll:
        # the page updates in place
        before = number(total)
        wait_until(page, lambda: number(total) > before, "the amazon count to grow")
        n = number(total)
        wait_until(page, lambda: number(total) > n, "the amazon count to grow again")
        later = number(total)
        expect(later > n > before, f"amazon count: {before}, {n}, {later}")
        rate = number(cell(page, "channels", "channel", "amazon", "rate"))
        expect(rate > 0, f"amazon messages per second: {rate}")
        p99 = cell(page, "channels", "channel", "amazon", "p99").inner_text()
        print(f"amazon: {later} messages, p99 {p99!r}")
        if SCREENSHOT:
            os.makedirs(os.path.dirname(SCREENSHOT), exist_ok=True)
            page.screenshot(path=SCREENSHOT, full_page=True)
    finally:
        stop.set()
        sender.join()

    # replay from the page (the ERP's scripted refusal is used up: it accepts now)
    button = page.get_by_role("button", name=f"Send delivery {dead_id} to the ERP again")
    button.click()
    state = page.locator(f"#replayed tbody tr[data-delivery='{dead_id}'] .state")
    state.wait_for(timeout=WAIT)
    wait_until(
        page, lambda: state.get_attribute("data-state") == "delivered", "the replay delivered"
    )
    expect(state.inner_text() == "Delivered", f"replayed state: {state.inner_text()}")
    page.locator("#no-dead").wait_for(state="visible", timeout=WAIT)
    wait_until(page, lambda: queue_dead.inner_text() == "0", "no dead letter in queue q")
    expect(dead_row.count() == 0, "the dead letter is still listed")
    expect(not watch.problems, f"browser problems: {watch.problems}")
    browser.close()
    print(f"replayed: {dead_id}")
    print("ok: status page loaded, updated, listed and replayed the dead letter")


def token_mode(p):
    token = os.environ["ADMIN_TOKEN"]
    browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
    ctx = browser.new_context()
    page = ctx.new_page()
    watch = Watch(page)
    # opening the page without a session leads to the sign-in form
    page.goto(f"{ADMIN}/")
    expect(page.url == f"{ADMIN}/login", f"/ without a session ends at {page.url}")
    page.fill("input[name=token]", token)
    with page.expect_navigation():
        page.click("button[type=submit]")
    expect(page.url == f"{ADMIN}/", f"after signing in the page is {page.url}")
    expect(page.title() == "Gateway status", f"title: {page.title()}")
    polls = wait_polls(page, 0)
    expect(page.locator("#signin").is_hidden(), "signed in, yet the page asks to sign in")
    expect(
        cell(page, "upstreams", "upstream", "erp", "health").count() == 1,
        "signed in, the upstream is not shown",
    )
    expect(not watch.problems, f"browser problems while signed in: {watch.problems}")

    # signing out elsewhere: the next poll is refused and the page links to the sign-in form
    resp = ctx.request.post(f"{ADMIN}/logout", max_redirects=0)
    expect(resp.status == 303, f"/logout: {resp.status}")
    page.locator("#signin").wait_for(state="visible", timeout=WAIT)
    link = page.get_by_role("link", name="Sign in")
    expect(link.get_attribute("href") == "/login", "no sign-in link")
    unexpected = [
        w for w in watch.problems if "/status.json" not in w and "401" not in w
    ]
    expect(not unexpected, f"browser problems: {unexpected}")
    expect(int(page.evaluate("document.body.dataset.polls")) >= polls, "polls went backwards")
    # reopening the page with the ended session leads to the sign-in form again
    page.goto(f"{ADMIN}/")
    expect(page.url == f"{ADMIN}/login", f"/ after signing out ends at {page.url}")
    browser.close()
    print("ok: signed in to the status page, and after signing out it links to the sign-in form")


def main():
    with sync_playwright() as p:
        if MODE == "token":
            token_mode(p)
        else:
            open_mode(p)


if __name__ == "__main__":
    main()
