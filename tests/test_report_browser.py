"""The report in a real browser: headless Chromium from Debian's packages, driven by Selenium.

The page must load from file:// with no console error and no request outside its folder, show
every item, move its slider when dragged (and so show another picture), lay the repair mask over a
slider when its "show repairs" box is ticked, and not be blank. The
report is made from a job store filled by hand (restored photos made here with bicubic, a failed and
a skipped item), so that no network runs: ``test_report.py`` covers reports of real jobs.
"""
from __future__ import annotations

import io
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from archive_restore.jobs.store import ItemSpec, JobStore
from archive_restore.pipeline.defects import keep_mask
from archive_restore.report import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
INSTALL = ("needs headless Chromium and its driver from Debian's packages: `apt-get install chromium "
           "chromium-driver` (as root; .ci/run installs them) and selenium (`pip install -e '.[test]'`)")


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason=INSTALL)
    if not (CHROMIUM and DRIVER):
        pytest.skip(INSTALL)
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900",
                "--force-device-scale-factor=1"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def _scan(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 / w, y * 255 / h, (x + y) % 16 * 12.0], axis=2) + rng.normal(0, 10, (h, w, 3))
    return img.clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A photo job's store and files: two photos restored (x4, sharpened so that the two sides of the
    slider differ), the first with a repair mask (``--defects on``: a block in its middle), one failed, one
    skipped; and its report."""
    root = tmp_path_factory.mktemp("browser")
    rng = np.random.default_rng(7)
    inp, out = root / "scans", root / "restored"
    (inp / "a").mkdir(parents=True)
    out.mkdir()
    with JobStore.open(root / "jobs") as store:
        job = store.get_or_create_job("photos", inp, out, {"scale": 4})
        keys = ["a/one.png", "a/two.png", "a/broken.png", "a/notes.txt"]
        store.add_items(job.id, [ItemSpec(k) for k in keys])
        for key in keys[:2]:
            small = _scan(rng, 40, 56)
            Image.fromarray(small).save(inp / key)
            big = np.asarray(Image.fromarray(small).resize((224, 160), Image.BICUBIC)).astype(np.float32)
            restored = np.clip(255 - big, 0, 255).astype(np.uint8)  # unlike the input, to see the slider work
            (out / key).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(restored).save(out / key)
            item = store.claim_next(job.id)
            extra = {"defect_mask": keep_mask(store.job_dir(job.id), key, REPAIRED)} if key == keys[0] else {}
            store.mark_done(item.id, output=out / key, code_source="blind", faces=0, extra=extra)
        (inp / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
        store.mark_failed(store.claim_next(job.id).id,
                          f"InputError: {inp / 'a' / 'broken.png'}: cannot decode the image (image file is truncated)")
        store.mark_skipped(store.claim_next(job.id).id, "not an image extension")
        index = write_report(store, store.job(job.id), root / "report", progress=False)
        items = {i.key: i.status for i in store.items(job.id)}
    return index, items


REPAIRED = np.zeros((40, 56), bool)
REPAIRED[10:30, 20:36] = True  # the first photo's repair mask: the middle of its columns 20-35, rows 10-29


def _load(browser, index: Path) -> None:
    browser.get_log("browser"), browser.get_log("performance")  # forget earlier pages
    browser.get(index.as_uri())
    for img in browser.find_elements("css selector", "img"):  # lazy images load once scrolled to
        browser.execute_script("arguments[0].scrollIntoView()", img)
    browser.execute_script("window.scrollTo(0, 0)")
    for _ in range(50):
        if browser.execute_script("return Array.from(document.images).every(i => i.complete)"):
            break
        time.sleep(0.1)


def test_page_loads_offline_with_no_console_error_and_no_request_outside_its_folder(browser, site):
    index, _ = site
    _load(browser, index)
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert errors == []
    requests = [json.loads(e["message"])["message"] for e in browser.get_log("performance")]
    urls = [m["params"]["request"]["url"] for m in requests if m["method"] == "Network.requestWillBeSent"]
    folder = index.parent.as_uri() + "/"
    assert index.as_uri() in urls and len(urls) > 1
    assert [u for u in urls if not u.startswith(folder)] == []
    broken = browser.execute_script("return Array.from(document.images).filter(i => !i.naturalWidth).map(i => i.src)")
    assert broken == []


def test_every_item_is_on_the_page_with_its_status(browser, site):
    index, items = site
    _load(browser, index)
    for key, status in items.items():
        (card,) = browser.find_elements("css selector", f'[data-key="{key}"]')
        assert card.get_attribute("data-status") == status and card.is_displayed()
    failed = browser.find_element("css selector", '[data-key="a/broken.png"]').text
    assert "the file could not be used: cannot decode the image (image file is truncated)" in failed


def test_dragging_the_slider_changes_what_is_shown(browser, site):
    from selenium.webdriver.common.action_chains import ActionChains

    index, _ = site
    _load(browser, index)
    compare = browser.find_element("css selector", '[data-key="a/one.png"] .compare')
    slider = compare.find_element("css selector", "input.slider")
    before = _pixels(compare.screenshot_as_png)
    width = compare.size["width"]
    drag = ActionChains(browser).move_to_element(slider).click_and_hold().move_by_offset(-width // 2 + 5, 0)
    drag.release().perform()
    assert float(slider.get_attribute("value")) < 10
    assert browser.execute_script("return getComputedStyle(arguments[0]).getPropertyValue('--pos')", compare).strip() \
        == f"{slider.get_attribute('value')}%"
    after = _pixels(compare.screenshot_as_png)
    assert before.shape == after.shape
    changed = np.abs(before.astype(int) - after.astype(int)).max(axis=2) > 40
    # the strip between the old and the new divider now shows the restored picture instead of the input
    assert changed[:, int(width * 0.1):int(width * 0.45)].mean() > 0.5
    assert changed[:, int(width * 0.55):].mean() < 0.05


def test_ticking_show_repairs_lays_the_mask_over_the_slider(browser, site):
    index, _ = site
    _load(browser, index)
    assert browser.find_elements("css selector", '[data-key="a/two.png"] input.show-repairs') == []  # no mask
    card = browser.find_element("css selector", '[data-key="a/one.png"]')
    compare, overlay = card.find_element("css selector", ".compare"), card.find_element("css selector", "img.repairs")
    box = card.find_element("css selector", "input.show-repairs")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", card)  # all of it on the screen
    assert not overlay.is_displayed() and not box.is_selected()
    hidden = _pixels(compare.screenshot_as_png)
    box.click()
    assert box.is_selected() and overlay.is_displayed()
    shown = _pixels(compare.screenshot_as_png)
    assert hidden.shape == shown.shape
    changed = np.abs(hidden.astype(int) - shown.astype(int)).max(axis=2) > 40
    h, w = changed.shape  # the mask's block, as fractions of the 56x40 photo, with a margin
    assert changed[int(h * 11 / 40):int(h * 29 / 40), int(w * 21 / 56):int(w * 35 / 56)].mean() > 0.9
    inside = np.zeros_like(changed)
    inside[int(h * 9 / 40):int(h * 31 / 40), int(w * 19 / 56):int(w * 37 / 56)] = True
    assert changed[~inside].mean() < 0.01
    box.click()
    assert not overlay.is_displayed()


def test_a_screenshot_is_not_blank(browser, site):
    index, _ = site
    _load(browser, index)
    shot = _pixels(browser.get_screenshot_as_png())
    assert shot.std() > 20
    assert len(np.unique(shot.reshape(-1, 3), axis=0)) > 500  # pictures and text, not a few flat colours


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
