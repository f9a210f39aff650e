"""The built book, checked page by page in headless Chromium (Playwright driving Debian's `chromium`).

Runs after `jupyter-book build`: `make book-check` (part of `make test`) sets GPTBOOK_BOOK_TEST=1.
In a plain `pytest tests` run, which comes before the build, every test here is skipped with that reason.
When asked to run, a missing browser or book skips on a laptop (with how to fix it) and fails in CI (CI=true).
Screenshots of every page land in _build/screenshots/.
"""

import functools
import http.server
import json
import os
import re
import shutil
import threading
import urllib.parse
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
RUN = os.environ.get("GPTBOOK_BOOK_TEST", "") not in ("", "0")
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
IMAGE_MIMES = ("image/png", "image/jpeg", "image/svg+xml", "image/gif")

pytestmark = pytest.mark.skipif(
    not RUN,
    reason="browser test of the built book: runs after the build, in `make book-check` (part of `make test`)",
)


def toc_pages():
    """Docnames in reading order: the root page, then every file of _toc.yml (extension dropped)."""
    import yaml  # PyYAML comes with jupyter-book: imported only when the book is checked

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    pages = [toc["root"]]

    def walk(entries):
        for entry in entries:
            if "file" in entry:
                pages.append(re.sub(r"\.(ipynb|md)$", "", entry["file"]))
            walk(entry.get("sections", []))

    for part in toc.get("parts", [{"chapters": toc.get("chapters", [])}]):
        walk(part["chapters"])
    return pages


def repository_url():
    """_config.yml's repository.url, the one place it is set ("" while there is no public repository)."""
    import yaml

    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    return ((config.get("repository") or {}).get("url") or "").strip().rstrip("/")


PAGES = toc_pages() if RUN else []  # a plain `pytest tests` collects without PyYAML
REPOSITORY = repository_url() if RUN else ""
OTHER_PAGES = ["index", "genindex", "search"]  # redirect to the root page, Sphinx's index and search


def find_chromium():
    """$CHROMIUM if set (any Chromium or Chrome binary), else Debian's chromium."""
    if "CHROMIUM" in os.environ:
        return shutil.which(os.environ["CHROMIUM"])
    for candidate in ("/usr/bin/chromium", "chromium", "chromium-browser"):
        if path := shutil.which(candidate):
            return path
    return None


def require(ok, message):
    """Skip with `message` on a reader's machine; fail in CI, where the browser test is mandatory."""
    if not ok:
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


def image_outputs(notebook):
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    count = 0
    for cell in nb["cells"]:
        tags = cell.get("metadata", {}).get("tags", [])
        if "remove-output" in tags or "remove-cell" in tags:
            continue
        for out in cell.get("outputs", []):
            count += any(mime in out.get("data", {}) for mime in IMAGE_MIMES)
    return count


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site():
    require(
        (HTML / "index.html").exists(),
        f"the book is not built ({HTML / 'index.html'} is missing): run `make book` first",
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(HTML)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    exe = find_chromium()
    require(
        exe is not None,
        "Chromium not found: install it to run the browser test of the book "
        "(Debian/Ubuntu: `sudo apt-get install chromium fonts-noto-cjk`; or set CHROMIUM=/path/to/chrome)",
    )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=FLAGS)
        yield b
        b.close()


def open_page(browser, site, docname):
    """Load one page; return (page, problems) with every failed local request, outside request and JS error."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems = []

    def route(r):
        if r.request.url.startswith(site) or r.request.url.startswith("data:"):
            r.continue_()
        else:  # the book must work offline: nothing may be fetched from elsewhere
            problems.append(f"outside request: {r.request.url}")
            r.abort()

    def response(r):
        if r.url.startswith(site) and r.status >= 400:
            problems.append(f"HTTP {r.status}: {r.url}")

    def console(m):  # errors logged by our own pages' scripts (not by a blocked outside request)
        if m.type == "error" and str(m.location.get("url", "")).startswith(site):
            problems.append(f"console error: {m.text} at {m.location.get('url')}")

    page.route("**/*", route)
    page.on("requestfailed", lambda r: problems.append(f"failed request: {r.url} ({r.failure})"))
    page.on("response", response)
    page.on("pageerror", lambda e: problems.append(f"JS error: {e}"))
    page.on("console", console)
    page.goto(site + docname + ".html", wait_until="load", timeout=60_000)
    page.wait_for_load_state("networkidle", timeout=60_000)
    return page, problems


def wait_for_math(page, docname):
    """Wait until MathJax (if the page loads it) has typeset everything."""
    if page.evaluate("() => document.querySelector('script[src*=\"mathjax\"]') !== null"):
        try:
            page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=20_000)
        except Exception:
            pytest.fail(f"{docname}: MathJax did not start (is _build/html/_static/mathjax there?)", pytrace=False)
        page.evaluate("() => MathJax.startup.promise")


# Prose text outside code, outputs and typeset math: where raw TeX delimiters would show if MathJax failed.
PROSE_TEXT = """() => {
  const root = document.querySelector('main') || document.body;
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT, {
    acceptNode: n => n.parentElement.closest('pre, code, script, style, mjx-container, .cell_output, .highlight')
      ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT});
  let text = '';
  while (walker.nextNode()) text += walker.currentNode.nodeValue + ' ';
  return text;
}"""

# Two different CJK characters drawn in the article's font: identical pixels mean both are the missing-glyph box.
CJK_RENDERS = """() => {
  const el = document.querySelector('article') || document.body;
  const c = document.createElement('canvas'); c.width = 64; c.height = 64;
  const ctx = c.getContext('2d');
  ctx.font = '40px ' + getComputedStyle(el).fontFamily;
  const draw = ch => { ctx.clearRect(0, 0, 64, 64); ctx.fillText(ch, 4, 48);
                       return Array.from(ctx.getImageData(0, 0, 64, 64).data).join(','); };
  return draw('\u4e2d') !== draw('\u6587');
}"""


@pytest.mark.parametrize("docname", PAGES)
def test_book_page(browser, site, docname):
    page, problems = open_page(browser, site, docname)
    try:
        assert not problems, f"{docname}: " + "; ".join(problems)
        wait_for_math(page, docname)
        page.evaluate("() => document.querySelectorAll('img').forEach(i => { i.loading = 'eager'; })")
        page.wait_for_function("() => Array.from(document.images).every(i => i.complete)", timeout=30_000)
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / (docname.replace("/", "__") + ".png")), full_page=True)
        assert not problems, f"{docname}: " + "; ".join(problems)

        assert page.evaluate(CJK_RENDERS), (
            f"{docname}: Chinese characters render as missing-glyph boxes: install a CJK font (fonts-noto-cjk)"
        )

        broken = page.evaluate(
            "() => Array.from(document.images).filter(i => i.naturalWidth === 0 && i.getAttribute('src'))"
            ".map(i => i.getAttribute('src'))"
        )
        assert not broken, f"{docname}: images that did not load: {broken}"

        notebook = ROOT / f"{docname}.ipynb"
        if notebook.exists():
            want = image_outputs(notebook)
            shown = page.evaluate(
                "() => Array.from(document.querySelectorAll('.cell_output img'))"
                ".filter(i => i.naturalWidth > 0 && i.naturalHeight > 0).length"
            )
            assert shown >= want, f"{docname}: {shown} figures shown, the notebook has {want} image outputs"
            assert page.locator("button.copybtn").count() > 0, f"{docname}: no copy buttons on code cells"
            hrefs = page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
            if REPOSITORY:  # launch buttons for the configured repository
                name = "/".join(REPOSITORY.split("/")[-2:])  # owner/name
                for launcher in (f"colab.research.google.com/github/{name}/", f"mybinder.org/v2/gh/{name}/"):
                    assert any(launcher in h and f"{docname}.ipynb" in h for h in hrefs), (
                        f"{docname}: no launch link to {launcher}...{docname}.ipynb"
                    )
            else:  # no repository configured: no launch buttons pointing at a made-up one
                launch = [h for h in hrefs if "colab.research.google.com" in h or "mybinder.org" in h]
                assert not launch, f"{docname}: launch links without a repository: {launch}"

        n_math = page.locator(".math").count()
        typeset = page.locator("mjx-container").count()
        assert typeset >= n_math, f"{docname}: {n_math} math elements, only {typeset} typeset by MathJax"
        assert page.locator("mjx-merror").count() == 0, f"{docname}: MathJax reports a TeX error"
        prose = page.evaluate(PROSE_TEXT)
        for raw in ("$$", "\\[", "\\(", "\\begin{"):
            assert raw not in prose, f"{docname}: raw TeX {raw!r} left in the page text (math not typeset)"

        index = PAGES.index(docname)
        for selector, neighbour in (("a.left-prev", index - 1), ("a.right-next", index + 1)):
            link = page.locator(selector)
            if 0 <= neighbour < len(PAGES):
                assert link.count() == 1, f"{docname}: no {selector} navigation link"
                href = link.get_attribute("href")
                target = page.evaluate("h => new URL(h, location.href).pathname", href)
                assert target == f"/{PAGES[neighbour]}.html", f"{docname}: {selector} goes to {target}"
            else:
                assert link.count() == 0, f"{docname}: unexpected {selector} link on the first/last page"
    finally:
        page.close()


@pytest.mark.parametrize("docname", OTHER_PAGES)
def test_other_page_loads_cleanly(browser, site, docname):
    page, problems = open_page(browser, site, docname)
    try:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / (docname + ".png")))
        assert not problems, f"{docname}: " + "; ".join(problems)
    finally:
        page.close()


def test_search_finds_chinese_words(browser, site):
    """The search index segments Chinese text (jieba): a Chinese query finds the attention chapter."""
    page, problems = open_page(browser, site, "search")
    try:
        page.goto(site + "search.html?q=" + urllib.parse.quote("注意力"), wait_until="load")
        page.wait_for_selector("ul.search li a", timeout=30_000)
        titles = page.locator("ul.search li a").all_inner_texts()
        assert any("注意力" in t for t in titles), f"search for 注意力 found {titles}"
        assert not problems, "; ".join(problems)
    finally:
        page.close()


def test_built_pages_are_exactly_the_toc(site):
    """Nothing outside _toc.yml was built (e.g. a MyST twin seen by Sphinx), and nothing in it is missing."""
    built = {
        p.relative_to(HTML).with_suffix("").as_posix()
        for p in HTML.rglob("*.html")
        if not p.relative_to(HTML).parts[0].startswith("_")
    }
    assert built == set(PAGES) | set(OTHER_PAGES)
