"""The approval console in a real headless Chromium (Selenium + Debian's chromium-driver),
plus its CSRF and redirect rules checked over plain HTTP."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from approvals_fixtures import CONSOLE_TOKEN, Receiver, approvals_gateway, refund, status
from helpers import Gateway

pytestmark = pytest.mark.e2e
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    receiver = Receiver()
    try:
        with approvals_gateway(tmp_path_factory.mktemp("console"), receiver) as gateway:
            yield gateway
    finally:
        receiver.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    if not (shutil.which(CHROMIUM) and Path(CHROMEDRIVER).exists()):
        message = "chromium and chromium-driver are needed (scripts/install-test-deps.sh installs them)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


def test_approver_logs_in_sees_the_refund_and_approves_it(gw: Gateway, browser: Any):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    response = refund(gw, 120)
    assert response.status_code == 202, response.text
    approval_id = response.json()["approval_id"]
    base = f"http://{gw.config.service.http}"
    wait = WebDriverWait(browser, 10)

    # Not signed in: the console sends the approver to the login page, then back.
    browser.get(f"{base}/console/approvals")
    wait.until(ec.presence_of_element_located((By.ID, "login")))
    browser.find_element(By.ID, "name").send_keys("alice")
    browser.find_element(By.ID, "token").send_keys(CONSOLE_TOKEN)
    browser.find_element(By.ID, "login").click()
    try:
        wait.until(ec.presence_of_element_located((By.ID, "pending")))
    except Exception:
        raise AssertionError(browser.current_url + browser.page_source[:3000])
    assert browser.find_element(By.ID, "user").text == "alice"
    cookie = browser.get_cookie("aegis_console")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert CONSOLE_TOKEN not in cookie["value"]

    # The pending $120 refund is listed, with redacted arguments.
    row = browser.find_element(By.CSS_SELECTOR, f'tr.approval[data-id="{approval_id}"]')
    assert "payments.refund" in row.text and "support-bot" in row.text and '"amount": 120' in row.text
    row.find_element(By.LINK_TEXT, approval_id).click()
    wait.until(ec.presence_of_element_located((By.ID, "decide")))
    assert browser.find_element(By.ID, "state").text == "pending"
    assert '"amount": 120' in browser.find_element(By.ID, "args").text

    # Approve with a comment; the page shows the new state.
    browser.find_element(By.ID, "comment").send_keys("customer verified by phone")
    browser.find_element(By.ID, "approve").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "state"), "approved"))
    assert "Recorded: approved." in browser.find_element(By.ID, "notice").text
    facts = browser.find_element(By.ID, "facts").text
    assert "alice" in facts and "customer verified by phone" in facts

    # The agent now gets its token and the retry goes through.
    token = status(gw, approval_id)["override_token"]
    assert refund(gw, 120, override=token).status_code == 200


# --- the same rules over plain HTTP -------------------------------------------------------------


def _login(gw: Gateway, client: httpx.Client, token: str = CONSOLE_TOKEN, next_path: str = "") -> httpx.Response:
    page = client.get("/console/login", params={"next": next_path} if next_path else None)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf
    return client.post(
        "/console/login", data={"name": "alice", "token": token, "csrf": csrf.group(1), "next": next_path or ""}
    )


def test_console_login_redirects_only_to_console_paths(gw: Gateway):
    base = f"http://{gw.config.service.http}"
    for evil in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "/v1/operator/approvals"):
        with httpx.Client(base_url=base) as client:
            response = _login(gw, client, next_path=evil)
            assert response.status_code == 303
            assert response.headers["location"] == "/console/approvals"
    with httpx.Client(base_url=base) as client:
        assert _login(gw, client, token="wrong").status_code == 401
        assert "aegis_console" not in client.cookies


def test_console_decisions_need_the_session_csrf_token(gw: Gateway):
    approval_id = refund(gw, 125).json()["approval_id"]
    with httpx.Client(base_url=f"http://{gw.config.service.http}") as client:
        assert _login(gw, client).status_code == 303
        missing = client.post(f"/console/approvals/{approval_id}", data={"action": "approve"})
        assert missing.status_code == 403
        page = client.get(f"/console/approvals/{approval_id}")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf
        cross = client.post(
            f"/console/approvals/{approval_id}",
            data={"action": "approve", "csrf": csrf.group(1)},
            headers={"origin": "http://evil.example"},
        )
        assert cross.status_code == 403
        assert status(gw, approval_id)["state"] == "pending"
        ok = client.post(f"/console/approvals/{approval_id}", data={"action": "deny", "csrf": csrf.group(1)})
        assert ok.status_code == 303
    assert status(gw, approval_id)["state"] == "denied"
