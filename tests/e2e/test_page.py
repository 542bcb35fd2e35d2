"""The web page in real headless Chromium (Debian's), driven by Playwright against `cnnops serve`:
draw a stroke, classify it, upload a photo, use the keyboard, and see errors inline."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.server]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# The closed network here refuses Chromium's background connections; these flags stop it trying.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OUTPUT = Path(__file__).resolve().parents[2] / "test-output"


@pytest.fixture(scope="module")
def page(server):
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian chromium is not installed; `make test` installs it (apt-get install chromium).")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            tab = browser.new_page(viewport={"width": 1200, "height": 900})
            tab.goto(server["url"] + "/", timeout=30_000)
            tab.wait_for_function("document.getElementById('model').textContent.includes(' v1')", timeout=30_000)
            yield tab
        finally:
            browser.close()


def bars(page) -> list[str]:
    return page.locator("#bars li.prediction").evaluate_all("items => items.map(i => i.getAttribute('aria-label'))")


def test_page_shows_the_model(page, server):
    header = page.locator("#model").inner_text()
    assert f"{server['name']} v1 (@champion)" in header
    assert "cross, disc, stripes" in header


def test_draw_a_stroke_and_classify_it(page):
    box = page.locator("#canvas").bounding_box()
    page.mouse.move(box["x"] + 60, box["y"] + 140)
    page.mouse.down()
    for step in range(1, 11):
        page.mouse.move(box["x"] + 60 + step * 16, box["y"] + 140, steps=2)
    page.mouse.up()
    drawn = page.evaluate("""() => { const c = document.getElementById('canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let dark = 0; for (let i = 0; i < d.length; i += 4) if (d[i] < 128) dark++; return dark; }""")
    assert drawn > 1000  # the stroke is on the canvas
    page.get_by_role("button", name="Classify drawing").click()
    page.wait_for_function("document.querySelectorAll('#bars li.prediction').length === 3", timeout=30_000)
    assert page.locator("#source").inner_text() == "Drawing"
    shown = bars(page)
    assert {label.split(":")[0] for label in shown} == {"cross", "disc", "stripes"}
    assert page.locator("#error").inner_text() == ""


def test_upload_a_photo(page, server):
    photo = next((server["source"] / "disc").glob("*.png"))
    page.set_input_files("#file", str(photo))
    page.get_by_role("button", name="Classify photo").click()
    page.wait_for_function(f"document.getElementById('source').textContent === 'Photo: {photo.name}'", timeout=30_000)
    assert len(bars(page)) == 3
    widths = page.locator("#bars .bar span").evaluate_all("spans => spans.map(s => parseFloat(s.style.width))")
    assert widths == sorted(widths, reverse=True) and 0 < widths[0] <= 100
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / "web-page.png"), full_page=True)


def test_keyboard_draws_and_classifies(page):
    page.locator("#canvas").focus()
    page.keyboard.press("Delete")
    page.keyboard.press("Space")
    for _ in range(12):
        page.keyboard.press("ArrowRight")
    page.keyboard.press("Space")
    page.locator("#topk").select_option("3")
    page.locator("#canvas").focus()
    page.evaluate("document.getElementById('source').textContent = ''")
    page.keyboard.press("Enter")
    page.wait_for_function("document.getElementById('source').textContent === 'Drawing'", timeout=30_000)
    assert len(bars(page)) == 3


def test_bad_file_shows_an_inline_error_and_the_page_recovers(page, server, tmp_path):
    fake = tmp_path / "notes.png"
    fake.write_bytes(b"these are notes, not a picture")
    page.set_input_files("#file", str(fake))
    page.get_by_role("button", name="Classify photo").click()
    page.wait_for_function("document.getElementById('error').textContent.includes('400')", timeout=30_000)
    assert "not an image" in page.locator("#error").inner_text()
    page.set_input_files("#file", str(next((server["source"] / "cross").glob("*.png"))))
    page.get_by_role("button", name="Classify photo").click()
    page.wait_for_function("document.getElementById('error').textContent === ''", timeout=30_000)
