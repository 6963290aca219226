"""The rating UI in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright)."""
import os
import shutil
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from feedback.models import Rating

CHROMIUM = os.environ.get("CHROMIUM_PATH", shutil.which("chromium") or "/usr/bin/chromium")
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _playwright_runs_an_event_loop(monkeypatch):
    # Playwright's sync API keeps an event loop in this thread; the ORM calls here are still synchronous.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture
def page(live_server, demo_files):
    from playwright.sync_api import sync_playwright

    from feedback.services import feedback_import

    data, _ = demo_files
    feedback_import(data, None)
    get_user_model().objects.create_user("rita", password="rita-password-123")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"No Chromium at {CHROMIUM}: install Debian's chromium package (see .ci/setup)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"],
        )
        page = browser.new_page()
        page.goto(f"{live_server.url}/rate/")
        page.fill("#id_username", "rita")
        page.fill("#id_password", "rita-password-123")
        page.click("button[type=submit]")
        page.wait_for_selector("#entry")
        # #entry is parsed before rate.js at the end of the body runs: keys pressed earlier would go unheard.
        page.wait_for_load_state("domcontentloaded")
        yield page
        browser.close()


def test_a_rater_rates_ten_entries_with_the_keyboard(page, tmp_path):
    seen = []
    for index in range(10):
        entry_id = page.get_attribute("#entry", "data-entry")
        seen.append(entry_id)
        with page.expect_navigation():
            page.keyboard.press("u" if index % 3 == 0 else "d")
        page.wait_for_selector("#progress")
    assert page.inner_text("#progress").startswith("Rated 10 of ")
    ratings = {r.entry.external_id: r.value for r in Rating.objects.filter(rater__username="rita").select_related("entry")}
    assert ratings == {entry_id: ("up" if i % 3 == 0 else "down") for i, entry_id in enumerate(seen)}
    page.screenshot(path=str(tmp_path / "rate.png"), full_page=True)


def test_typing_in_the_notes_does_not_trigger_shortcuts(page):
    entry_id = page.get_attribute("#entry", "data-entry")
    page.click("#notes")
    page.keyboard.type("dud")
    assert not Rating.objects.filter(rater__username="rita").exists()
    with page.expect_navigation():
        page.click("#thumbs-down")
    rating = Rating.objects.get(rater__username="rita")
    assert (rating.entry.external_id, rating.value, rating.notes) == (entry_id, "down", "dud")


def test_n_skips_to_the_next_entry_without_rating(page):
    first = page.get_attribute("#entry", "data-entry")
    with page.expect_navigation():
        page.keyboard.press("n")
    assert page.get_attribute("#entry", "data-entry") != first
    assert not Rating.objects.filter(rater__username="rita").exists()


def test_a_rater_corrects_a_pick(page):
    entry_id = page.get_attribute("#entry", "data-entry")
    page.click("details summary")
    page.select_option("#corrected-widget", "line_chart")
    page.select_option("#corrected-fixtures", ["hq_main_meter_kw", "hq_outdoor_air_temp"])
    page.fill("#tags", "wrong_widget, wrong_fixture")
    with page.expect_navigation():
        page.click("#thumbs-down")
    rating = Rating.objects.get(rater__username="rita", entry__external_id=entry_id)
    assert rating.corrected_widget.slug == "line_chart"
    assert sorted(f.slug for f in rating.corrected_fixtures.all()) == ["hq_main_meter_kw", "hq_outdoor_air_temp"]
    assert rating.tags == ["wrong_widget", "wrong_fixture"]


def test_the_compare_view_rates_variants_side_by_side(page, tmp_path):
    with page.expect_navigation():
        page.keyboard.press("c")
    cards = page.locator(".variant")
    assert cards.count() == 15
    target = cards.nth(1).get_attribute("data-entry")
    with page.expect_navigation():
        page.click(f"[aria-label='thumbs up {target}']")
    assert page.locator(f".variant[data-entry='{target}']").get_attribute("class").endswith("rated-up")
    assert Rating.objects.get(rater__username="rita").entry.external_id == target
    page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)


def test_each_variant_shows_its_widget_as_a_drawn_preview(page):
    from feedback.models import Entry

    scenario_id = Entry.objects.get(external_id=page.get_attribute("#entry", "data-entry")).scenario.external_id
    with page.expect_navigation():
        page.keyboard.press("c")
    cards = page.locator(".variant")
    expected = dict(Entry.objects.filter(scenario__external_id=scenario_id).values_list("external_id", "widget__slug"))
    assert cards.count() == len(expected) >= 4  # every variant of the scenario, one card each
    drawings: dict[str, set[str]] = {}
    for index in range(cards.count()):
        card = cards.nth(index)
        widget = expected[card.get_attribute("data-entry")]
        assert card.locator("figure").get_attribute("data-widget") == widget
        svg = card.locator("svg.widget-svg")
        assert svg.get_attribute("data-widget") == widget
        box = svg.bounding_box()
        assert box and box["width"] > 150 and box["height"] > 80
        # the picture draws something besides its background: shapes with real extent
        drawn = svg.evaluate("s => Array.from(s.querySelectorAll('polyline, path, rect, circle, line, text')).filter(e => { const b = e.getBBox(); return b.width * b.height > 4 || b.width > 8 || b.height > 8; }).length")
        assert drawn >= 2, widget
        # what is drawn, without the labels: the widget's kind of picture
        drawings.setdefault(widget, set()).add(svg.evaluate("s => Array.from(s.querySelectorAll('*')).map(e => e.tagName + '.' + (e.getAttribute('class') || '')).join(' ')"))
    shapes = {widget: min(found) for widget, found in drawings.items()}
    assert len(shapes) >= 4 and len(set(shapes.values())) == len(shapes), "two widgets drew the same kind of picture"
