"""Signs in to the gateway's admin listener through its form in a real headless Chromium.

Run by tests/tests/e2e/admin_auth.rs with ADMIN_URL (http://127.0.0.1:PORT), ADMIN_TOKEN and
CHROMIUM (the browser binary; playwright drives it, it downloads none). Exits non-zero with a
message on the first expectation that fails.
"""

import json
import os
import sys

from playwright.sync_api import sync_playwright

ADMIN = os.environ["ADMIN_URL"]
TOKEN = os.environ["ADMIN_TOKEN"]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def expect(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


def main():
    urls = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        ctx = browser.new_context()
        page = ctx.new_page()
        page.on("request", lambda r: urls.append(r.url))

        # no session yet: the admin API refuses
        resp = page.goto(f"{ADMIN}/config")
        expect(resp.status == 401, f"/config before signing in: {resp.status}")

        # a wrong token: the form again, 401, a message, no cookie
        resp = page.goto(f"{ADMIN}/login")
        expect(resp.status == 200, f"/login: {resp.status}")
        expect(TOKEN not in page.content(), "the login page holds the token")
        page.fill("input[name=token]", "not-the-admin-token-0000")
        with page.expect_navigation() as nav:
            page.click("button[type=submit]")
        expect(nav.value.status == 401, f"wrong token: {nav.value.status}")
        expect("not the admin token" in page.content(), "no message for a wrong token")
        expect(ctx.cookies() == [], f"a wrong token set a cookie: {ctx.cookies()}")

        # the right token: redirected to / with an HttpOnly, SameSite=Strict session cookie
        page.fill("input[name=token]", TOKEN)
        with page.expect_navigation():
            page.click("button[type=submit]")
        expect(page.url == f"{ADMIN}/", f"after signing in the page is {page.url}")
        cookies = [c for c in ctx.cookies() if c["name"] == "gateway_admin"]
        expect(len(cookies) == 1, f"session cookie: {ctx.cookies()}")
        c = cookies[0]
        expect(c["httpOnly"] is True, f"cookie not HttpOnly: {c}")
        expect(c["sameSite"] == "Strict", f"cookie not SameSite=Strict: {c}")
        expect(TOKEN not in c["value"], "the cookie holds the token")
        expect(page.evaluate("document.cookie") == "", "script can read the session cookie")

        # the cookie opens the admin API
        resp = page.goto(f"{ADMIN}/config")
        expect(resp.status == 200, f"/config signed in: {resp.status}")
        doc = json.loads(page.inner_text("body"))
        expect("version" in doc, f"/config document: {doc}")

        # signing out ends the session
        resp = ctx.request.post(f"{ADMIN}/logout", max_redirects=0)
        expect(resp.status == 303, f"/logout: {resp.status}")
        resp = page.goto(f"{ADMIN}/config")
        expect(resp.status == 401, f"/config after signing out: {resp.status}")
        browser.close()

    leaked = [u for u in urls if TOKEN in u]
    expect(not leaked, f"the token appeared in a URL: {leaked}")
    print("ok: signed in, cookie HttpOnly SameSite=Strict, /config opened, signed out")


if __name__ == "__main__":
    main()
