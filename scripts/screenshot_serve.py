"""Screenshot of the web page on an index: start the server, search a query, play a result, save a PNG.

    python scripts/screenshot_serve.py --index xclip-index --query "a red square moving left" --out docs/serve.png

Drives Debian's Chromium (``apt-get install chromium``) through Playwright's Python package; it never downloads
a browser. Used to (re)take the README screenshot on the demo index.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from xclip_search.testing import CHROMIUM, CHROMIUM_ARGS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", required=True, type=Path, help="index directory")
    parser.add_argument("--query", required=True, help="text to search")
    parser.add_argument("--out", type=Path, default=Path("artifacts/serve.png"), help="PNG to write")
    parser.add_argument("--width", type=int, default=1440)
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument("--no-play", action="store_true", help="do not click the first result")
    parser.add_argument("--tag", default=None, help='also tag the played video with these labels ("a,b,c")')
    parser.add_argument("--all-segments", action="store_true", help="show every matching moment")
    parser.add_argument("--chromium", default=CHROMIUM, help="Chromium executable")
    args = parser.parse_args(argv)

    from playwright.sync_api import sync_playwright

    from xclip_search.serve import ServeSettings, serve_in_thread

    settings = ServeSettings(index_dir=args.index, port=0, warm=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with serve_in_thread(settings) as url, sync_playwright() as pw, tempfile.TemporaryDirectory() as profile:
        browser = pw.chromium.launch_persistent_context(
            profile,
            executable_path=args.chromium,
            args=CHROMIUM_ARGS,
            viewport={"width": args.width, "height": args.height},
        )
        page = browser.new_page()
        page.goto(url)
        page.wait_for_selector("#index-counts .count")
        if args.all_segments:
            page.check("#all-segments")
        page.fill("#q", args.query)
        page.click("#search-form button[type=submit]")
        page.wait_for_selector("#results[data-kind=search] .card img", timeout=120_000)
        page.wait_for_function(
            "() => [...document.querySelectorAll('#results .card img')].every(i => i.complete)", timeout=60_000
        )
        if not args.no_play:
            page.click("#results .card")
            page.wait_for_function("() => { const v = document.getElementById('video'); return !v.paused; }")
            page.wait_for_timeout(800)
        if args.tag:
            page.fill("#tag-labels", args.tag)
            page.click("#tag-form button[type=submit]")
            page.wait_for_selector("#tag-results .bar")
        page.evaluate("() => window.scrollTo(0, 0)")
        page.screenshot(path=str(args.out), full_page=True)
        browser.close()
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
