"""Open the built site in headless Chromium and check what a reader sees.

    mkdocs build --strict && python docs/check_site.py [--site site] [--shots DIR]

Each page is served over HTTP from ``site/`` and loaded by ``chromium --headless``
with JavaScript on; the checks run on the DOM after the scripts (MathJax) ran:

- no ``<autoref>`` markup, raw or escaped, and no HTML tags shown as text;
- every formula typeset by MathJax (each ``arithmatex`` element holds an
  ``mjx-container``) and no TeX delimiters left in the text;
- no script, style sheet or font fetched from the network (the site works offline)
  and no file the pages ask for missing from the site;
- no "Returns" table of the API reference split into several rows (gmmjax's
  Returns sections are one prose item);
- no table wider than the page in a window :data:`WIDTH` pixels wide (a reader
  would see it cut at the edge), measured by a script the server adds to each page;
- page-specific expectations (:data:`EXPECT`): the benchmarks as tables, not JSON;
  the tutorials with their outputs.

A few pages (:data:`SCREENSHOTS`) are also captured as PNG files in a temporary
directory (or ``--shots DIR``) for a person to look at. The exit status is 1 when a
check fails, with one line per problem naming the page.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import html.parser
import http.server
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Pages captured as screenshots: home, the API page of ``multistart``, a tutorial
#: with formulas and outputs, the benchmarks.
SCREENSHOTS = ("", "api/selection/", "tutorials/em/", "benchmarks/")
#: ``page: (required, forbidden)`` substrings of the rendered DOM.
EXPECT = {
    "api/selection/": (['id="gmmjax.multistart"'], []),
    "tutorials/em/": (["<mjx-container", '<div class="output'], []),
    "benchmarks/": (["<table"], ["language-json"]),
}
#: The browser window's width in pixels: a laptop's, where Material shows the
#: navigation, the page and its contents side by side.
WIDTH = 1280
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
_SKIP = {"script", "style", "pre", "code", "mjx-container", "svg", "textarea"}
_TEX = re.compile(r"\\\(|\\\)|\\\[|\\\]|\$\$|\\begin\{")
_TAG_AS_TEXT = re.compile(r"</?(?:autoref|code|a|span|div|p|em|strong|table|br)\b")
#: Scripts, images and style sheets (fonts come through these) from another host.
_NETWORK = re.compile(
    r"<(?:script|img)\b[^>]*?\bsrc=\"((?:https?:)?//[^\"]+)\""
    r"|<link\b(?=[^>]*\brel=\"(?:stylesheet|preload)\")[^>]*?"
    r"\bhref=\"((?:https?:)?//[^\"]+)\""
)
_RETURNS = re.compile(
    r'doc-section-title">Returns:</span>.*?</table>', re.DOTALL | re.IGNORECASE
)


class _Text(html.parser.HTMLParser):
    """The text a reader sees, outside code, scripts and typeset math."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.depth = 0
        self.parts: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in _SKIP:
            self.depth += 1

    def handle_endtag(self, tag):
        if tag in _SKIP and self.depth:
            self.depth -= 1

    def handle_data(self, data):
        if not self.depth:
            self.parts.append(data)


def visible_text(dom: str) -> str:
    parser = _Text()
    parser.feed(dom)
    return " ".join(parser.parts)


def problems(page: str, dom: str) -> list[str]:
    """What is wrong with the rendered DOM of ``page`` (empty when nothing)."""
    out = []
    if "<autoref" in dom or "&lt;autoref" in dom:
        out.append("raw <autoref> markup")
    text = visible_text(dom)
    if match := _TAG_AS_TEXT.search(text):
        context = text[max(0, match.start() - 40) : match.end() + 40]
        out.append(f"HTML markup shown as text: ...{' '.join(context.split())}...")
    if match := _TEX.search(text):
        context = text[max(0, match.start() - 30) : match.end() + 30]
        out.append(f"TeX not typeset: ...{' '.join(context.split())}...")
    n_math = len(re.findall(r'class="arithmatex"', dom))
    n_typeset = dom.count("<mjx-container")
    if n_typeset < n_math:
        out.append(f"{n_math - n_typeset} of {n_math} formulas not typeset by MathJax")
    remote = sorted({a or b for a, b in _NETWORK.findall(dom)})
    out += [f"loads {url} from the network" for url in remote]
    for table in _RETURNS.findall(dom):
        rows = table.count('class="doc-section-item"')
        if rows > 1:
            out.append(f"a Returns table split into {rows} rows")
    out += [f"a table wider than the page: {m}" for m in _OVERFLOW.findall(dom)]
    required, forbidden = EXPECT.get(page, ([], []))
    out += [f"lacks {s!r}" for s in required if s not in dom]
    out += [f"contains {s!r}" for s in forbidden if s in dom]
    return out


#: Added to each served page: marks a table that is wider than the page (a reader
#: would see it cut at the edge and have to scroll it), with its section's id.
_PROBE = b"""<script>
addEventListener("load", () => setTimeout(() => {
  for (const box of document.querySelectorAll(
      ".md-typeset__scrollwrap, .md-typeset table:not([class])")) {
    if (box.scrollWidth <= box.clientWidth + 1) continue;
    let at = box, section = "";
    while (at && !section) {
      at = at.previousElementSibling || at.parentElement;
      if (at && /^H[1-6]$/.test(at.tagName)) section = at.id;
    }
    box.setAttribute("data-check-overflow",
        `${box.scrollWidth}px in ${box.clientWidth}px, under #${section}`);
  }
}, 1000));
</script>"""
_OVERFLOW = re.compile(r'data-check-overflow="([^"]*)"')


class _Handler(http.server.SimpleHTTPRequestHandler):
    missing: set[str]

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        if path.is_dir():
            path = path / "index.html"
        if path.suffix != ".html" or not path.is_file():
            return super().do_GET()
        body = path.read_bytes().replace(b"</body>", _PROBE + b"</body>", 1)
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_error(self, code, message=None, explain=None):
        if code == 404:
            self.missing.add(self.path)
        super().send_error(code, message, explain)


def serve(site: Path) -> tuple[http.server.ThreadingHTTPServer, set[str]]:
    """An HTTP server of ``site`` on a free local port, and the set it fills with
    the paths it could not find."""
    missing: set[str] = set()
    handler = type("Handler", (_Handler,), {"missing": missing})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(site))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, missing


def find_browser() -> str:
    for name in (os.environ.get("CHROMIUM", ""), *BROWSERS):
        if name and (path := shutil.which(name)):
            return path
    sys.exit(
        "check_site: no Chromium found (apt-get install chromium, or set CHROMIUM)"
    )


def chromium(browser: str, url: str, *args: str) -> str:
    """Load ``url`` in headless Chromium; what it prints (the DOM for --dump-dom)."""
    with tempfile.TemporaryDirectory(prefix="gmmjax-chromium-") as profile:
        proc = subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                "--virtual-time-budget=20000",
                *args,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"chromium failed on {url}: {proc.stderr[-2000:]}")
    return proc.stdout


def pages(site: Path) -> list[str]:
    """Every page of the site, as its URL relative to the root ('' for home)."""
    return sorted(
        "" if p.parent == site else p.parent.relative_to(site).as_posix() + "/"
        for p in site.rglob("index.html")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=Path, default=ROOT / "site")
    parser.add_argument("--shots", type=Path, help="where the screenshots go")
    parser.add_argument("--jobs", type=int, default=4)
    args = parser.parse_args(argv)
    if not (args.site / "index.html").is_file():
        sys.exit(f"check_site: no built site in {args.site} (run mkdocs build)")
    shots = args.shots or Path(tempfile.mkdtemp(prefix="gmmjax-site-"))
    shots.mkdir(parents=True, exist_ok=True)
    browser = find_browser()
    server, missing = serve(args.site)
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    all_pages = pages(args.site)

    def check(page: str) -> tuple[str, list[str]]:
        dom = chromium(
            browser, base + page, f"--window-size={WIDTH},1000", "--dump-dom"
        )
        return page, problems(page, dom)

    def screenshot(page: str) -> Path:
        name = (page.strip("/").replace("/", "_") or "home") + ".png"
        chromium(
            browser,
            base + page,
            f"--window-size={WIDTH},2400",
            f"--screenshot={shots / name}",
        )
        return shots / name

    failed = 0
    try:
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            for page, found in pool.map(check, all_pages):
                failed += bool(found)
                for problem in found:
                    print(f"FAIL /{page}: {problem}")
            taken = list(pool.map(screenshot, SCREENSHOTS))
    finally:
        server.shutdown()
    for path in sorted(missing):
        print(f"FAIL: a page asks for {path}, which the site lacks")
    print(
        f"check_site: {len(all_pages)} pages, {failed} with problems, "
        f"{len(missing)} missing files; screenshots: "
        + ", ".join(str(p) for p in taken)
    )
    return 1 if failed or missing else 0


if __name__ == "__main__":
    sys.exit(main())
