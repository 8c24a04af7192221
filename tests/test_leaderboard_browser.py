"""The published ``index.html`` in a real browser: clicking a column header sorts the table.

Needs Selenium (``pip install -e '.[dev]'``) and Debian's Chromium with its driver
(``apt-get install chromium chromium-driver``); skipped with that hint when either is missing.
The page is opened from disk (file://) with networking off, as a reader would open it offline.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.leaderboard import TABLE_COLUMNS, publish
from test_leaderboard import EXPECTED_ORDER, SPLIT, build_results

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL_HINT = ("install them with 'apt-get install chromium chromium-driver' (Debian) and "
                "'pip install selenium' (in the dev extras: pip install -e '.[dev]')")


def _browser_or_skip(user_data_dir: Path):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip(f"selenium is not installed; {INSTALL_HINT}")
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (Path(p).is_file() or shutil.which(Path(p).name))]
    if missing:
        pytest.skip(f"{', '.join(missing)} not found; {INSTALL_HINT}")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--disable-dev-shm-usage", f"--user-data-dir={user_data_dir}"):
        opts.add_argument(arg)
    driver_path = CHROMEDRIVER if Path(CHROMEDRIVER).is_file() else shutil.which("chromedriver")
    try:
        return webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    except Exception as exc:  # a driver/browser version mismatch, a broken install
        pytest.skip(f"cannot start headless chromium ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                    f"{INSTALL_HINT}")


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("lb-browser")
    results, subs = build_results(base)
    publish(results, subs, base / "leaderboard")
    return base / "leaderboard" / "index.html"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = _browser_or_skip(tmp_path_factory.mktemp("chromium-profile"))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _column(name: str) -> int:
    return [c.key for c in TABLE_COLUMNS].index(name)


def _state(driver, col: int) -> tuple[list[str], list[str]]:
    """(submission of each row, data-value of column ``col`` of each row), in displayed order."""
    rows = driver.find_elements("css selector", f"#table-{SPLIT} tbody tr")
    names = [r.get_attribute("data-submission") for r in rows]
    values = [r.find_elements("css selector", "td")[col].get_attribute("data-value") for r in rows]
    return names, values


def _header(driver, col: int):
    return driver.find_elements("css selector", f"#table-{SPLIT} thead th")[col]


def test_click_header_sorts_numeric_column_both_ways(page, browser):
    browser.get(page.as_uri())
    col = _column("wall_s")
    names, _ = _state(browser, col)
    assert names == EXPECTED_ORDER  # as published: by energy MAE

    _header(browser, col).click()
    names, values = _state(browser, col)
    nums = [float(v) for v in values]
    assert nums == sorted(nums) and names == ["lda", "lda-leaky", "pbe", "tpss"]
    assert _header(browser, col).get_attribute("aria-sort") == "ascending"

    _header(browser, col).click()
    names, values = _state(browser, col)
    nums = [float(v) for v in values]
    assert nums == sorted(nums, reverse=True) and names == ["tpss", "pbe", "lda-leaky", "lda"]
    assert _header(browser, col).get_attribute("aria-sort") == "descending"


def test_missing_values_sort_last_in_both_directions(page, browser):
    browser.get(page.as_uri())
    col = _column("excitation_mae_eV")
    for direction in ("ascending", "descending"):
        _header(browser, col).click()
        names, values = _state(browser, col)
        assert _header(browser, col).get_attribute("aria-sort") == direction
        assert names[0] == "tpss" and values[0] != ""
        assert values[1:] == ["", "", ""]


def test_text_column_and_back_to_rank(page, browser):
    browser.get(page.as_uri())
    _header(browser, _column("submission")).click()
    names, _ = _state(browser, _column("submission"))
    assert names == sorted(names)
    rank = _column("rank")
    _header(browser, rank).click()  # another column was sorted last: rank starts ascending again
    names, values = _state(browser, rank)
    assert [int(v) for v in values] == [1, 2, 3, 4] and names == EXPECTED_ORDER
    _header(browser, rank).click()
    _, values = _state(browser, rank)
    assert [int(v) for v in values] == [4, 3, 2, 1]


def test_published_rank_column_reverses_on_first_click(page, browser):
    browser.get(page.as_uri())
    rank = _column("rank")
    assert _header(browser, rank).get_attribute("aria-sort") == "ascending"  # as published
    _header(browser, rank).click()
    names, _ = _state(browser, rank)
    assert names == EXPECTED_ORDER[::-1]
