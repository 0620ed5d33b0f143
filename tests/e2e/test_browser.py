"""The admin in a real browser (headless Chromium driven by Playwright) against a live server:
an operator logs in, activates the kill switch with a reason on the kill-switch page (through
its confirmation step), sees the banner turn red and the event in the events list; an admin
then deactivates it. A screenshot of the red banner goes to artifacts/ for a human to look at.

Needs Debian's `chromium` (`apt-get install -y chromium`; .ci/run installs it) and the
`playwright` package; Playwright's own browser download is never used."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.desk import PASSWORD, make_role_users
from tests.helpers import ROOT

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = ROOT / "artifacts"
RED = "rgb(186, 33, 33)"  # .tw-danger in tinywindow/templates/admin/base_site.html


@pytest.fixture
def chromium():
    """A function opening a page of headless Chromium (a context manager); skips without one.

    Playwright's sync API runs an event loop in this thread while it is open, and Django refuses
    database calls next to a running loop: the test does its database work before and after."""
    playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (requirements-dev)")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install -y chromium")

    @contextmanager
    def open_page() -> Iterator:
        with playwright_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.set_default_timeout(15_000)
                yield page
            finally:
                browser.close()

    return open_page


def _log_in(page, base: str, username: str) -> None:
    page.goto(f"{base}/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#tw-desk-banner")


def test_admin_when_operator_activates_and_admin_deactivates_then_banner_and_events_follow(
        live_server, chromium, django_user_model):
    from safety.models import KillSwitchEvent
    from safety.services.kill_switch import kill_switch_read_db

    make_role_users()
    base = live_server.url
    with chromium() as page:
        _drill(page, base)
    assert not kill_switch_read_db().active
    assert list(KillSwitchEvent.objects.order_by("id").values_list("action", "actor")) == [
        ("activate", "operator-user"), ("deactivate", "admin-user")]


def _drill(page, base: str) -> None:
    # An operator logs in: a quiet desk, banner not red.
    _log_in(page, base, "operator-user")
    banner = page.locator("#tw-desk-banner")
    assert banner.get_attribute("data-kill-switch") == "inactive"
    assert "Kill switch: inactive" in banner.inner_text()

    # The kill-switch page, from the banner's link: mode, reason, then a confirmation step.
    banner.get_by_role("link", name="Kill switch").click()
    page.check("input[name=activate-mode][value=HALT_ONLY]")
    page.fill("#id_activate-reason", "Browser drill: exchange outage")
    page.click("#tw-ks-activate input[type=submit]")
    page.wait_for_selector("#tw-ks-confirm")
    assert "Confirm activation" in page.content()
    assert page.locator("#tw-desk-banner").get_attribute("data-kill-switch") == "inactive"  # not before confirming
    page.click("#tw-ks-confirm")

    # The banner turns red, on this page and every other.
    page.wait_for_selector('#tw-desk-banner[data-kill-switch="active"]')
    banner = page.locator("#tw-desk-banner")
    assert banner.evaluate("el => getComputedStyle(el).backgroundColor") == RED
    assert "KILL SWITCH ACTIVE (HALT_ONLY)" in banner.inner_text()
    assert "Browser drill: exchange outage" in banner.inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    banner.screenshot(path=str(ARTIFACTS / "admin-kill-switch-banner.png"))
    page.screenshot(path=str(ARTIFACTS / "admin-kill-switch-page.png"), full_page=True)
    assert "Only an admin can deactivate" in page.content()

    # The event in the events list.
    page.goto(f"{base}/admin/safety/killswitchevent/")
    row = page.locator("#result_list tbody tr").first
    assert "Activate" in row.inner_text() and "Browser drill: exchange outage" in row.inner_text()
    assert "operator-user" in row.inner_text()
    assert page.locator("#tw-desk-banner").evaluate("el => getComputedStyle(el).backgroundColor") == RED

    # An admin deactivates it (with a confirmation step too); the banner is no longer red.
    page.click("#logout-form button")
    _log_in(page, base, "admin-user")
    page.goto(f"{base}/admin/safety/killswitchstate/")
    page.fill("#id_deactivate-reason", "Exchange back, drill over")
    page.click("#tw-ks-deactivate input[type=submit]")
    page.wait_for_selector("#tw-ks-confirm")
    page.click("#tw-ks-confirm")
    page.wait_for_selector('#tw-desk-banner[data-kill-switch="inactive"]')
    assert page.locator("#tw-desk-banner").evaluate("el => getComputedStyle(el).backgroundColor") != RED
    page.screenshot(path=str(ARTIFACTS / "admin-kill-switch-deactivated.png"), full_page=True)
