"""Headless Chromium for the pages' tests (Debian's `chromium` + `chromium-driver`, installed with apt when missing):
the `chromium` and `browser` fixtures (a plugin of tests/conftest.py), a staff session for the browser, and the
page's layout in a narrow window."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.test import Client

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT_S = 30


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium and its driver, installed with apt when missing (as root). Skipped, with the reason,
    only outside CI on a machine where they cannot be installed."""
    problem = None
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            problem = "chromium/chromium-driver are not installed and this process cannot apt-get install them"
        else:
            problem = _apt_install()
    if problem:
        from tests.conftest import IN_CI

        if IN_CI:
            pytest.fail(problem)
        pytest.skip(problem)
    return CHROMIUM


def _apt_install() -> str | None:
    """Install Chromium and its driver; None when done, else what went wrong. The suite's xdist workers each ask at
    once: one installs while the others wait on a file lock (and apt-get waits on dpkg's own lock, if it is held)."""
    import fcntl

    with open(Path(tempfile.gettempdir()) / "intentsite-chromium-install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if CHROMIUM.exists() and CHROMEDRIVER.exists():  # another worker installed them meanwhile
            return None
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        install = ["apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=600", "--no-install-recommends",
                   "chromium", "chromium-driver"]
        done = subprocess.run(install, env=env, capture_output=True, text=True)
        if done.returncode != 0:  # stale package lists: update once and try again
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, text=True)
            done = subprocess.run(install, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            return f"apt-get install chromium chromium-driver failed: {done.stderr[-2000:]}"
    return None


@pytest.fixture
def browser(chromium, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--hide-scrollbars", "--force-device-scale-factor=1", "--window-size=1440,1000",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    # The driver is given explicitly: Selenium Manager never looks for (or downloads) one.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console, for `wait_dataset`'s failures
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_script_timeout(WAIT_S)
    yield driver
    driver.quit()


def staff_session(live_server, driver, django_user_model, *, username: str = "analyst") -> None:
    """Log the browser in as a staff member (not a superuser) with a real session cookie."""
    staff = django_user_model.objects.create_user(username, password="pw-analyst-123", is_staff=True)
    client = Client()
    client.force_login(staff)
    driver.get(f"{live_server.url}/admin/login/")
    driver.add_cookie({"name": django_settings.SESSION_COOKIE_NAME,
                       "value": client.cookies[django_settings.SESSION_COOKIE_NAME].value, "path": "/"})


def wait_dataset(driver, element_id: str, predicate, what: str) -> dict:
    """Wait until `predicate` holds of the element's dataset (its `data-*` as a dict), and return it. Fail at once
    when the page says it is in error, or after WAIT_S, with what the page shows: the dataset, its message, and the
    browser's console (a script's exception, a refused request)."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    def read(d):
        return d.execute_script("return Object.assign({}, document.getElementById(arguments[0]).dataset)", element_id)

    def done(d):
        dataset = read(d)
        return dataset if predicate(dataset) or "error" in dataset.values() else False

    try:
        dataset = WebDriverWait(driver, WAIT_S).until(done)
    except TimeoutException:
        dataset = read(driver)
    if not predicate(dataset):
        message = driver.execute_script("const m = document.querySelector('[role=alert], [role=status], #ad-message');"
                                        "return m ? m.textContent : null;")
        console = [entry["message"] for entry in driver.get_log("browser")]
        raise AssertionError(f"{what}: not within {WAIT_S} s; dataset {dataset}, message {message!r}, "
                             f"console {console}")
    return dataset


def narrow_window(driver, width: int = 700) -> dict:
    """The page in a window `width` px wide: the document's width and the width it scrolls to (wider: something
    sticks out sideways), and each chart's canvas width beside its box's."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.set_window_size(width, 1000)
    # Charts follow their boxes on the next animation frames (Chart.js' ResizeObserver): waited for, up to WAIT_S.
    WebDriverWait(driver, WAIT_S).until(lambda d: d.execute_script(
        "return document.documentElement.clientWidth <= arguments[0] && Object.values(Chart.instances).every("
        "(c) => c.width <= c.canvas.parentElement.clientWidth);", width), "the page or its charts did not narrow")
    return driver.execute_script("""
        const doc = document.documentElement;
        return {scroll: doc.scrollWidth, client: doc.clientWidth,
                charts: Object.values(Chart.instances).map((c) => [c.width, c.canvas.parentElement.clientWidth])};""")
