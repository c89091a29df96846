"""Screenshot of ``dualex serve`` for the docs (docs/screens/search-app.png): the built-in model
on a gallery of 16 synthetic scenes, the query "a red circle", the word "circle" clicked, "why
#1 above #2" below the hits.

Needs Playwright and Debian's chromium (``make browser-deps``).

    python -m benchmarks.search_screens [--out docs/screens]
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def main() -> None:
    import uvicorn
    from playwright.sync_api import sync_playwright

    from dualex.search import Index
    from dualex.search.serve import make_app

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("docs/screens"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="dualex-screens-"))
    idx = Index.build("builtin", folder / "gallery.idx", data="synthetic:seed=1,n=16")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(make_app(idx), port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(url + "/api/health", timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
        pg = browser.new_page(viewport={"width": 1340, "height": 1000})
        pg.goto(url)
        pg.fill("#q", "a red circle")
        pg.fill("#k", "4")
        pg.click("#go")
        pg.wait_for_selector("body[data-ready='4']", timeout=60_000)
        pg.locator(".word", has_text="circle").first.click()
        pg.wait_for_selector(".hit:nth-of-type(4) canvas[data-drawn]")
        path = args.out / "search-app.png"
        pg.screenshot(path=str(path), full_page=True)
        print(f"wrote {path}")
        browser.close()
    server.should_exit = True


if __name__ == "__main__":
    main()
