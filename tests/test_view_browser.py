"""`kgclip view` in a real browser: Debian's Chromium through its chromium-driver and Selenium, against
the server on 127.0.0.1, on the demo with hostile texts planted. Screenshots go to pytest's tmp dir.

Skips only when Chromium or its driver is missing (scripts/setup.sh --dev installs both)."""

import shutil
import socket
import threading
import time

import pytest

from kgclip.view.app import create_app
from view_fixtures import ENTITY, KEY, PAYLOADS, hostile_copy

CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER), reason="Debian's chromium and chromium-driver are not installed"
)


@pytest.fixture(scope="module")
def server(demo_run, tmp_path_factory):
    import uvicorn

    workdir = hostile_copy(demo_run, tmp_path_factory.mktemp("view-browser") / "work")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(workdir), log_level="warning"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline, "the viewer did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000",
        "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-extensions", "--disable-default-apps",
        # every host name but loopback fails to resolve: the browser sends nothing off this machine
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def shot(driver, tmp_path, name):
    path = tmp_path / f"{name}.png"
    assert driver.save_screenshot(str(path))
    assert path.stat().st_size > 1000
    return path


def loaded_width(driver, image, timeout=15.0) -> int:
    """The image's natural width once the browser has loaded it (0 if it never does)."""
    deadline = time.monotonic() + timeout
    while True:
        width = driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image)
        if width or time.monotonic() > deadline:
            return int(width or 0)
        time.sleep(0.1)


def no_xss(driver):
    assert driver.execute_script("return window.__xss === undefined"), "a planted payload ran"


def test_walk_overview_tree_entity_picture_rejections(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server + "/")
    assert "187" in browser.find_element(By.ID, "numbers").text
    plots = browser.find_elements(By.CSS_SELECTOR, "figure img")
    assert plots and all(loaded_width(browser, p) > 0 for p in plots)
    shot(browser, tmp_path, "1-overview")

    browser.find_element(By.LINK_TEXT, "entity tree").click()
    assert "living thing" in browser.find_element(By.CSS_SELECTOR, "details.root summary").text
    shot(browser, tmp_path, "2-tree")
    browser.find_element(By.ID, "tree-q").send_keys("koala\n")
    # the search is a new page: wait for it rather than look on the tree page it replaces
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.LINK_TEXT, "koala"))[0].click()

    assert browser.current_url.endswith("/entity/wn%3An01882714")
    assert browser.find_element(By.ID, "name").text == "koala"
    description = browser.find_element(By.ID, "description").text
    assert "<script>window.__xss = 1</script>" in description and "onerror=" in description
    thumbs = browser.find_elements(By.CSS_SELECTOR, "#pictures img")
    assert thumbs
    browser.execute_script("arguments[0].scrollIntoView()", thumbs[0])
    assert loaded_width(browser, thumbs[0]) > 0
    shot(browser, tmp_path, "3-entity")
    no_xss(browser)

    thumbs[0].click()
    assert browser.current_url.endswith(f"/picture/{KEY}")
    picture = browser.find_element(By.ID, "picture")
    assert loaded_width(browser, picture) > 0
    alts = browser.find_element(By.ID, "alt-texts").text
    for payload in PAYLOADS:
        assert payload in alts  # shown as text
    assert not browser.find_elements(By.CSS_SELECTOR, "#alt-texts img, #alt-texts script, svg")
    assert not browser.find_elements(By.CSS_SELECTOR, "a[href^='javascript']")
    shot(browser, tmp_path, "4-picture")
    no_xss(browser)

    browser.find_element(By.LINK_TEXT, "rejections").click()
    browser.find_element(By.LINK_TEXT, "too_small").click()
    assert "walnut_shelled.png" in browser.find_element(By.ID, "items").text
    shot(browser, tmp_path, "5-rejections")
    no_xss(browser)

    browser.find_element(By.LINK_TEXT, "rejections").click()
    browser.find_element(By.LINK_TEXT, "eval_copy").click()
    browser.find_element(By.CSS_SELECTOR, "#items a[href^='/rejected/'] code").click()  # the URL's link
    assert loaded_width(browser, browser.find_element(By.ID, "dropped")) > 0
    assert "<script>window.__xss = 1</script>" in browser.find_element(By.ID, "detail").text
    shot(browser, tmp_path, "6-rejected-item")
    no_xss(browser)


def test_the_policy_blocks_a_payload_that_got_into_a_page(server, browser):
    # were escaping ever to fail, the Content-Security-Policy still stops inline handlers
    browser.get(server + f"/picture/{KEY}")
    planted = "<img src=x onerror='window.__xss = 8'>"
    browser.execute_script("document.body.insertAdjacentHTML('beforeend', arguments[0])", planted)
    time.sleep(0.5)
    no_xss(browser)


def test_search_page_shows_hostile_snippets_as_text(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(server + "/search?q=xss")
    assert browser.find_elements(By.CSS_SELECTOR, "#pictures a")
    shot(browser, tmp_path, "search")
    no_xss(browser)
    browser.get(server + f"/entity/{ENTITY}")
    no_xss(browser)


def test_the_check_would_see_a_payload_run(server, browser):
    # the same browser runs a script put in a page without the viewer's policy, so `no_xss` can fail
    browser.get("data:text/html,<p>control</p>")
    planted = "<img src=x onerror='window.__xss = 9'>"
    browser.execute_script("document.body.insertAdjacentHTML('beforeend', arguments[0])", planted)
    time.sleep(0.5)
    assert browser.execute_script("return window.__xss") == 9
