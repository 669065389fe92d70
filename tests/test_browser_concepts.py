"""Feedback on the page in a real browser: search, mark two results up and one down, see the ranking change at
once (no reload), save the refinement as a concept, then tag a video with it. Same Chromium harness as
tests/test_browser_serve.py (Debian's Chromium; XCLIP_SEARCH_SKIP_BROWSER=1 skips on purpose)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from xclip_search.serve import ServeSettings, serve_in_thread

from .test_browser_serve import browser  # noqa: F401 - the shared fixture

pytestmark = pytest.mark.browser


def _order(page: Any) -> list[int]:
    return [int(x) for x in page.eval_on_selector_all("#results .card", "ns => ns.map(n => n.dataset.segmentId)")]


def test_feedback_refines_and_saves_a_concept(browser: Any, serve_index: Path, tmp_path: Path) -> None:  # noqa: F811
    index_dir = tmp_path / "index"
    shutil.copytree(serve_index, index_dir)  # the session's index stays without concepts
    with serve_in_thread(ServeSettings(index_dir=index_dir, port=0, warm=True)) as url:
        page = browser.new_context(viewport={"width": 1360, "height": 1000}).new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        navigations: list[str] = []
        page.on("framenavigated", lambda f: navigations.append(f.url))
        page.goto(url)
        page.wait_for_selector("#index-counts .count")
        page.check("#all-segments")
        page.fill("#q", "a square moving to the right")
        page.press("#q", "Enter")
        page.wait_for_selector("#results[data-kind=search] .card .fb", timeout=60_000)
        before = _order(page)
        assert len(before) == 12
        loads = len(navigations)

        up = [before[-1], before[-2]]  # the two lowest-ranked results are marked as matching
        down = before[0]  # and the top one as not

        def press(segment: int, value: int) -> None:
            page.click(f"#results .card[data-segment-id='{segment}'] .fb[data-value='{value}']")

        press(up[0], 1)
        page.wait_for_selector("#results[data-kind=refined] .card", timeout=60_000)
        press(up[1], 1)
        page.wait_for_function("() => document.getElementById('status').textContent.includes('2 👍 and 0 👎')")
        press(down, -1)
        page.wait_for_function(
            "() => document.getElementById('status').textContent.includes('refined by 2 👍 and 1 👎')", timeout=60_000
        )
        after = _order(page)
        assert after != before
        assert set(up) <= set(after[:3])  # what was marked up now leads
        assert after.index(down) > 1
        assert page.locator("#results .card.marked-up").count() == 2
        assert page.locator("#results .card.marked-down").count() == 1
        assert len(navigations) == loads  # refined in place, no reload

        page.fill("#concept-name", "wobble")
        page.click("#concept-save-button")
        page.wait_for_function("() => document.getElementById('concept-status').textContent.includes('Saved')")

        page.fill("#tag-labels", "wobble, spinning")
        page.click("#tag-form button[type=submit]")
        page.wait_for_selector("#tag-results .bar")
        labels = page.locator("#tag-results .bar-label").all_text_contents()
        assert "wobble (concept)" in labels
        assert not errors, errors
