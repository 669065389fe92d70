"""Search as you type on the page, in a real browser (same Debian Chromium harness as tests/test_browser_serve.py;
XCLIP_SEARCH_SKIP_BROWSER=1 skips on purpose).

Deterministic: the page's clock is Playwright's fake one, paused, so the debounce fires only when the test moves
time on (``clock.run_for``); a request the test wants in flight is held at the network layer until the test lets
it go. Every wait is on an event or a DOM condition.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from xclip_search.serve import ServeSettings, serve_in_thread

from .test_browser_serve import browser  # noqa: F401 - the shared fixture

pytestmark = pytest.mark.browser

DELAY_MS = 250  # app.js TYPE_DELAY_MS
# What the page showed (and the box's text at that moment), and the answers it dropped as stale.
RECORD = """
window.__renders = [];
window.__stale = [];
document.addEventListener("xclip:results", (e) =>
  window.__renders.push(Object.assign({ box: document.getElementById("q").value.trim() }, e.detail)));
document.addEventListener("xclip:stale", (e) => window.__stale.push(e.detail.seq));
"""
# A browser whose aborts come too late: every answer arrives, so only the page's sequence check can drop it.
NO_ABORT = "AbortController.prototype.abort = function () {};"


def _q(url: str) -> str:
    return parse_qs(urlsplit(url).query).get("q", [""])[0]


def _until(page: Any, done: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    """Let Playwright deliver events (route and request callbacks) until `done()`; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        page.wait_for_timeout(20)


def _busy(page: Any) -> bool:
    return page.get_attribute("#results", "aria-busy") == "true"


def _shown(query: str) -> str:
    return f"#results[data-kind=search][data-query={query!r}] .card"


def _renders(page: Any) -> list[tuple[str, str]]:
    return [(r["kind"], r["query"]) for r in page.evaluate("window.__renders")]


@dataclass
class Wire:
    """The page's /api/search traffic as the test sees and steers it."""

    page: Any
    asked: list[str] = field(default_factory=list)  # q of every GET /api/search the page sent, in order
    failed: list[str] = field(default_factory=list)  # q of every one the browser gave up on (aborted)
    hold: set[str] = field(default_factory=set)  # the next request for these queries is held, not sent on
    held: dict[str, Any] = field(default_factory=dict)

    def on_search(self, route: Any) -> None:
        q = _q(route.request.url)
        self.asked.append(q)
        if q in self.hold:
            self.hold.discard(q)
            self.held[q] = route
        else:
            route.continue_()

    def wait_held(self, q: str) -> None:
        _until(self.page, lambda: q in self.held, f"the search for {q!r} to be sent")

    def release(self, q: str) -> None:
        """Let a held request go on to the server (Playwright may refuse one the page already cancelled)."""
        with contextlib.suppress(Exception):
            self.held.pop(q).continue_()


@contextlib.contextmanager
def typing_page(chromium: Any, index_dir: Path, *scripts: str) -> Iterator[Wire]:
    """The page on a fresh server, its clock paused once the library shows; yields its search traffic."""
    with serve_in_thread(ServeSettings(index_dir=index_dir, port=0, warm=True)) as url:
        context = chromium.new_context(viewport={"width": 1360, "height": 1000})
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        wire = Wire(page)
        page.route(re.compile(r"/api/search\?"), wire.on_search)
        page.on("requestfailed", lambda r: wire.failed.append(_q(r.url)) if "/api/search?" in r.url else None)
        page.clock.install()
        for script in (RECORD, *scripts):
            page.add_init_script(script)
        page.goto(url)
        page.wait_for_selector("#results[data-kind=library] .card")
        page.clock.pause_at(page.evaluate("Date.now()") + 1000)
        yield wire
        for q in list(wire.held):
            wire.release(q)
        context.close()
    assert not errors, errors


def test_typing_shows_only_the_final_querys_results(browser: Any, serve_index: Path) -> None:  # noqa: F811
    with typing_page(browser, serve_index) as wire:
        page, asked, failed, hold = wire.page, wire.asked, wire.failed, wire.hold
        box = page.locator("#q")

        # Debounce: typing sends nothing; the search starts DELAY_MS after the last keystroke, not before.
        hold.add("a squ")
        box.press_sequentially("a squ")
        page.clock.run_for(DELAY_MS - 1)
        assert not _busy(page) and asked == []
        page.clock.run_for(1)
        assert _busy(page)
        wire.wait_held("a squ")
        # While it is on its way the grid keeps what it showed (no empty grid), and the status says why.
        assert page.get_attribute("#results", "data-kind") == "library"
        assert page.locator("#results .card").count() > 0
        assert "Searching" in page.text_content("#status")

        # More typing makes it stale: the page aborts it at the first new keystroke, and searches the final text.
        box.press_sequentially("are moving")
        _until(page, lambda: "a squ" in failed, "the stale search to be aborted")
        assert not _busy(page)
        page.clock.run_for(DELAY_MS)
        page.wait_for_selector(_shown("a square moving"), timeout=60_000)
        assert asked == ["a squ", "a square moving"]  # one search per pause, not one per keystroke
        wire.release("a squ")
        assert _renders(page) == [("search", "a square moving")]
        assert all(
            r["query"] == r["box"] for r in page.evaluate("window.__renders")
        )  # nothing was shown for text no longer in the box
        assert urlsplit(page.url).query == "q=a+square+moving"
        first = page.locator("#results .card").count()
        assert "a square moving" in page.text_content("#status")

        # Results update in place: while the next search is out, the current results stay; Enter searches at once
        # (no waiting on the clock) and replaces them, and the typing timer it overtook never fires.
        hold.add("a square moving left")
        box.press_sequentially(" left")
        page.clock.run_for(DELAY_MS)
        wire.wait_held("a square moving left")
        assert page.locator(_shown("a square moving")).count() == first
        box.press("Enter")
        _until(page, lambda: "a square moving left" in failed, "Enter to abort the typed search")
        wire.release("a square moving left")
        page.wait_for_selector(_shown("a square moving left"), timeout=60_000)
        assert asked[2:] == ["a square moving left", "a square moving left"]
        page.clock.run_for(2 * DELAY_MS)
        assert not _busy(page) and len(asked) == 4

        # Feedback marks belong to the results they were given on: new text, new results, no marks.
        page.locator("#results .card .fb[data-value='1']").first.click()
        page.wait_for_selector("#results[data-kind=refined] .card.marked-up", timeout=60_000)
        assert page.is_visible("#concept-save")
        box.press("End")  # the click moved focus to the card; typing goes on at the end of the text
        box.press_sequentially(" now")
        page.clock.run_for(DELAY_MS)
        page.wait_for_selector(_shown("a square moving left now"), timeout=60_000)
        assert page.locator("#results .card.marked-up").count() == 0
        assert not page.is_visible("#concept-save")

        # One character is not searched while typing (Enter still searches it); an emptied box shows the library.
        box.fill("")
        page.wait_for_selector("#results[data-kind=library] .card")
        assert urlsplit(page.url).query == ""
        box.fill("a")
        page.clock.run_for(2 * DELAY_MS)
        assert not _busy(page) and page.get_attribute("#results", "data-kind") == "library"
        box.press("Enter")
        page.wait_for_selector(_shown("a"), timeout=60_000)

        renders = page.evaluate("window.__renders")
        assert all(r["query"] == r["box"] for r in renders if r["kind"] == "search"), renders
        assert not wire.held and page.evaluate("window.__stale") == []  # aborts stopped every stale answer


def test_an_answer_that_outruns_its_abort_is_not_shown(browser: Any, serve_index: Path) -> None:  # noqa: F811
    """Even when a stale answer does arrive (here: aborts do nothing), the sequence check drops it."""
    with typing_page(browser, serve_index, NO_ABORT) as wire:
        page, box = wire.page, wire.page.locator("#q")
        wire.hold |= {"a squ", "a square moving"}
        box.press_sequentially("a squ")
        page.clock.run_for(DELAY_MS)
        wire.wait_held("a squ")
        box.press_sequentially("are moving")
        page.clock.run_for(DELAY_MS)
        wire.wait_held("a square moving")
        wire.release("a squ")  # the stale answer comes back first, while the final one is still out
        page.wait_for_function("() => window.__stale.length === 1", timeout=60_000)
        assert _renders(page) == [] and page.get_attribute("#results", "data-kind") == "library"
        assert _busy(page)  # still waiting for the final answer
        wire.release("a square moving")
        page.wait_for_selector(_shown("a square moving"), timeout=60_000)
        assert _renders(page) == [("search", "a square moving")]
        assert wire.failed == []  # nothing was aborted: the check alone kept the stale answer off the page
