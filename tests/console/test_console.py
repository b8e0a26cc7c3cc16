"""The console in a real headless browser, on a real platform.

A person's path through it: the page asks for a token (the API's 401 is shown),
they log in, upload a function through the form (the API's 422 for a bad field
is shown first), invoke it from its page, and see its execution, result and
logs, from a real container, with its charts drawn. They publish it as version 1,
switch batching on in its configuration (version 2) and upload new code (3), point
the alias ``live`` at version 1, which then cannot be deleted (the API's 409 is
shown), and invoke it through ``live``: version 1's code runs and the execution
says so. They publish version 3 and send a quarter of ``live``'s runs there, delete
the alias and then version 1, change the memory, switch batching off and delete the
function. Then a dead letter is replayed, the hosts page answers, and a batch's
execution lists its events.

With ``LAMBDA_OS_CONSOLE_SCREENSHOT=path`` the function's page is saved there as a
PNG; the README's ``swagger/console.png`` was made so.
"""

from __future__ import annotations

import base64
import os
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

WAIT_S = 20
# A cold start pulls nothing (the image is local) but starts a container.
RUN_WAIT_S = 120
CODE = (
    "def handler(event, context):\n"
    '    print("console says hello to", event["name"])\n'
    '    return {"greeting": "hello " + event["name"]}\n'
)

FAILING = b"def handler(event, context):\n    raise RuntimeError('always')\n"
NEW_CODE = (
    "def handler(event, context):\n"
    '    print("the new code says hello to", event["name"])\n'
    '    return {"greeting": "hi " + event["name"]}\n'
)
COUNTING = b"def handler(event, context):\n    return {'events': len(event)}\n"


def wait_text(driver, element_id: str, text: str, timeout_s: float = WAIT_S):
    """The element once it is shown and holds ``text``; on a time-out, what it held."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def shown(d):
        elements = d.find_elements(By.ID, element_id)
        return elements[0] if elements and text in elements[0].text else False

    try:
        return WebDriverWait(driver, timeout_s).until(shown)
    except TimeoutException:
        found = driver.find_elements(By.ID, element_id)
        errors = driver.find_elements(By.ID, "error")
        pytest.fail(
            f"#{element_id} never held {text!r}; it held "
            f"{found[0].text if found else '(no such element)'!r}; "
            f"the error box says {errors[0].text if errors else ''!r}"
        )


def fill(form, name: str, value: str) -> None:
    from selenium.webdriver.common.by import By

    element = form.find_element(By.NAME, name)
    element.clear()
    element.send_keys(value)


def choose(form, name: str, value: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(form.find_element(By.NAME, name)).select_by_value(value)


def described(element, term: str) -> str:
    """The text a definition list in ``element`` gives for ``term``."""
    from selenium.webdriver.common.by import By

    return element.find_element(By.XPATH, f".//dt[text()='{term}']/following-sibling::dd[1]").text


def test_a_function_uploaded_through_the_form_runs_then_runs_its_published_version_by_alias(
    browser, platform, tmp_path
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(platform.base + "/console")
    assert "401" in wait_text(browser, "error", "Authentication required").text

    browser.find_element(By.CSS_SELECTOR, "#login summary").click()
    browser.find_element(By.ID, "login-name").send_keys("admin")
    browser.find_element(By.ID, "login-password").send_keys(platform.admin_password)
    browser.find_element(By.ID, "login-button").click()
    wait_text(browser, "notice", "Logged in as admin")
    assert browser.execute_script("return sessionStorage.getItem('lambda-os-token')")

    browser.find_element(By.LINK_TEXT, "New function").click()
    form = wait_text(browser, "new-function", "Code")
    name = f"console-{uuid.uuid4().hex[:8]}"
    fill(form, "name", name)
    fill(form, "memory_mb", "10")
    fill(form, "event_source", "console")
    fill(form, "event_type", "greeting")
    fill(form, "batch_window_s", "3")
    fill(form, "code-text", CODE)
    form.find_element(By.ID, "create").click()
    assert "422" in wait_text(browser, "error", "memory_mb").text

    fill(form, "memory_mb", "128")
    form.find_element(By.ID, "create").click()
    wait_text(browser, "notice", f"Created {name}")
    assert "#/functions/" in browser.current_url
    function_id = browser.current_url.rsplit("/", 1)[1]
    token = browser.execute_script("return sessionStorage.getItem('lambda-os-token')")
    stored = platform.get(f"/v1/functions/{function_id}", token)
    assert (stored["batch_size"], stored["batch_window_s"]) == (None, 3.0)
    assert "off: each event runs on its own" in described(browser, "batching")

    event = browser.find_element(By.ID, "event")
    event.clear()
    event.send_keys('{"name": "browser"}')
    browser.find_element(By.ID, "invoke").click()

    logs = wait_text(browser, "logs", "console says hello to browser", RUN_WAIT_S)
    assert "hello browser" in browser.find_element(By.ID, "result").text
    assert "succeeded" in browser.find_element(By.ID, "execution").text
    rows = wait_text(browser, "executions", "succeeded").find_elements(By.CSS_SELECTOR, "tbody tr")
    assert len(rows) == 1
    charts = wait_text(browser, "metrics", "Executions per day")
    assert len(charts.find_elements(By.CSS_SELECTOR, "figure.chart svg rect")) >= 5
    assert logs.text.strip() == "console says hello to browser"

    # Version 1 is this code and configuration.
    assert "None published yet" in wait_text(browser, "versions", "version").text
    browser.find_element(By.ID, "publish-description").send_keys("first release")
    browser.find_element(By.ID, "publish").click()
    wait_text(browser, "notice", "Published version 1")
    assert "first release" in wait_text(browser, "versions-table", stored["code_sha256"][:16]).text
    published = platform.get(f"/v1/functions/{function_id}/versions", token)["versions"]
    assert [(v["version"], v["description"]) for v in published] == [(1, "first release")]

    # Batching on: the configuration changes, so the function is version 2; new code makes 3.
    configuration = browser.find_element(By.ID, "configuration")
    fill(configuration, "batch_size", "5")
    fill(configuration, "batch_window_s", "2.5")
    configuration.find_element(By.ID, "save").click()
    wait_text(browser, "notice", "Saved batch_size, batch_window_s")
    assert "(version 2)" in browser.find_element(By.ID, "notice").text
    assert "up to 5 events a run, or what came 2.5 s after the first" in described(
        browser, "batching"
    )
    stored = platform.get(f"/v1/functions/{function_id}", token)
    assert (stored["batch_size"], stored["batch_window_s"], stored["version"]) == (5, 2.5, 2)
    package = tmp_path / "main.py"
    package.write_text(NEW_CODE)
    browser.find_element(By.ID, "new-code").send_keys(str(package))
    browser.find_element(By.XPATH, "//button[text()='Upload new code']").click()
    wait_text(browser, "notice", "is now version 3")

    # `live` runs version 1, which cannot be deleted while it does.
    aliases = browser.find_element(By.ID, "alias-form")
    fill(aliases, "alias", "live")
    choose(aliases, "version", "1")
    aliases.find_element(By.ID, "save-alias").click()
    wait_text(browser, "notice", "The alias live runs version 1")
    wait_text(browser, "aliases-table", "live")
    assert [(a["name"], a["version"]) for a in platform.get(
        f"/v1/functions/{function_id}/aliases", token
    )["aliases"]] == [("live", 1)]  # fmt: skip
    browser.find_element(By.CSS_SELECTOR, '#versions-table tr[data-version="1"] button').click()
    browser.switch_to.alert.accept()
    assert "409" in wait_text(browser, "error", "live").text
    assert "first release" in browser.find_element(By.ID, "versions-table").text

    Select(browser.find_element(By.ID, "invoke-alias")).select_by_value("live")
    event = browser.find_element(By.ID, "event")
    event.clear()
    event.send_keys('{"name": "an alias"}')
    browser.find_element(By.ID, "invoke").click()
    logs = wait_text(browser, "logs", "console says hello to an alias", RUN_WAIT_S)
    execution = browser.find_element(By.ID, "execution")
    assert (described(execution, "version"), described(execution, "alias")) == ("1", "live")
    assert "hello an alias" in browser.find_element(By.ID, "result").text
    wait_text(browser, "executions", "1 (live)")
    runs = platform.get(f"/v1/executions?function_id={function_id}", token)["executions"]
    assert {(r["function_version"], r["alias"]) for r in runs} == {(1, None), (1, "live")}

    # Version 3 published, `live` sends a quarter of its runs there.
    browser.find_element(By.ID, "publish").click()
    wait_text(browser, "notice", "Published version 3")
    browser.find_element(
        By.CSS_SELECTOR, '#aliases-table tr[data-alias="live"] .edit-alias'
    ).click()
    assert aliases.find_element(By.NAME, "alias").get_attribute("value") == "live"
    choose(aliases, "additional_version", "3")
    fill(aliases, "additional_weight", "0.25")
    aliases.find_element(By.ID, "save-alias").click()
    wait_text(browser, "notice", "The alias live runs version 1, 25% of runs to version 3")
    wait_text(browser, "aliases-table", "25% of runs to version 3")
    live = platform.get(f"/v1/functions/{function_id}/aliases/live", token)
    assert (live["version"], live["additional_version"], live["additional_weight"]) == (1, 3, 0.25)

    screenshot = os.environ.get("LAMBDA_OS_CONSOLE_SCREENSHOT")
    if screenshot:
        save_whole_page(browser, Path(screenshot))

    # Without its alias, version 1 can go.
    browser.find_element(
        By.CSS_SELECTOR, '#aliases-table tr[data-alias="live"] .delete-alias'
    ).click()
    browser.switch_to.alert.accept()
    wait_text(browser, "notice", "Deleted the alias live")
    browser.find_element(By.CSS_SELECTOR, '#versions-table tr[data-version="1"] button').click()
    browser.switch_to.alert.accept()
    wait_text(browser, "notice", "Deleted version 1")
    published = platform.get(f"/v1/functions/{function_id}/versions", token)["versions"]
    assert [v["version"] for v in published] == [3]
    assert "live" not in browser.find_element(By.ID, "invoke-alias").text

    configuration = browser.find_element(By.ID, "configuration")
    fill(configuration, "memory_mb", "256")
    configuration.find_element(By.NAME, "batch_size").clear()
    configuration.find_element(By.ID, "save").click()
    wait_text(browser, "notice", "Saved memory_mb, batch_size")
    assert "256 MB" in browser.find_element(By.TAG_NAME, "dl").text
    assert platform.get(f"/v1/functions/{function_id}", token)["batch_size"] is None
    browser.find_element(By.ID, "delete").click()
    browser.switch_to.alert.accept()
    wait_text(browser, "notice", f"Deleted {name}")
    assert name not in browser.find_element(By.ID, "functions").text


def save_whole_page(driver, path: Path) -> None:
    """A PNG of the whole page: the window made as tall as the page first."""
    viewport = driver.execute_script("return window.innerHeight")
    page = driver.execute_script("return document.documentElement.scrollHeight")
    size = driver.get_window_size()
    driver.set_window_size(size["width"], size["height"] + max(page - viewport, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(path))


def test_dead_letters_are_replayed_or_the_refusal_is_shown_and_hosts_answer(browser, platform):
    from selenium.webdriver.common.by import By

    token = platform.login()
    platform.publish(b"this is not an event")
    failing = platform.post(
        "/v1/functions",
        token,
        {
            "name": f"fails-{uuid.uuid4().hex[:8]}",
            "event_source": "console",
            "event_type": "failure",
            "max_retries": 0,
            "code_filename": "main.py",
            "code_base64": base64.b64encode(FAILING).decode(),
        },
    )
    platform.post(f"/v1/functions/{failing['id']}/invocations?mode=async", token, {"n": 1})
    deadline = time.monotonic() + RUN_WAIT_S
    while len(platform.get("/v1/deadletters", token)["deadletters"]) < 2:
        assert time.monotonic() < deadline, "the listener did not store both dead letters"
        time.sleep(0.3)
    browser.get(platform.base + "/console")
    browser.execute_script("sessionStorage.setItem('lambda-os-token', arguments[0])", token)

    browser.get(platform.base + "/console#/deadletters")
    letters = wait_text(browser, "deadletters", "retries exhausted")
    rows = {
        row.find_elements(By.TAG_NAME, "td")[1].text: row
        for row in letters.find_elements(By.CSS_SELECTOR, "tbody tr")
    }
    rows["malformed"].find_element(By.CSS_SELECTOR, "button.replay").click()
    assert "422" in wait_text(browser, "error", "is not an event").text
    rows["retries exhausted"].find_element(By.CSS_SELECTOR, "button.replay").click()
    wait_text(browser, "notice", "is back on the events queue")
    assert rows["retries exhausted"].find_elements(By.TAG_NAME, "td")[6].text != "–"

    browser.find_element(By.LINK_TEXT, "Hosts").click()
    wait_text(browser, "hosts", "heartbeat")
    assert not browser.find_element(By.ID, "error").is_displayed()


def test_a_batchs_execution_lists_the_ids_of_its_events(browser, platform):
    from selenium.webdriver.common.by import By

    token = platform.login()
    event_type = f"batch-{uuid.uuid4().hex[:8]}"
    batching = platform.post(
        "/v1/functions",
        token,
        {
            "name": f"batches-{uuid.uuid4().hex[:8]}",
            "event_source": "console",
            "event_type": event_type,
            "batch_size": 2,
            "batch_window_s": 60,
            "code_filename": "main.py",
            "code_base64": base64.b64encode(COUNTING).decode(),
        },
    )
    sent = [{"event_source": "console", "event_type": event_type, "data": {"n": n}} for n in (1, 2)]
    ids = platform.post("/v1/events", token, sent)["ids"]
    deadline = time.monotonic() + RUN_WAIT_S
    while True:
        runs = platform.get(f"/v1/executions?function_id={batching['id']}", token)["executions"]
        if runs and runs[0]["status"] == "succeeded":
            break
        assert time.monotonic() < deadline, f"the batch did not run: {runs}"
        time.sleep(0.3)
    browser.get(platform.base + "/console")
    browser.execute_script("sessionStorage.setItem('lambda-os-token', arguments[0])", token)

    browser.get(platform.base + f"/console#/executions/{runs[0]['id']}")
    listed = wait_text(browser, "batch-events", ids[0])

    assert len(runs) == 1
    assert sorted(listed.text.split()) == sorted(ids)
    assert "batch of 2" in browser.find_element(By.ID, "execution").text
    assert '"events": 2' in browser.find_element(By.ID, "result").text
