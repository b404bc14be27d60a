"""`aubench report DIR --format html` read as a reader reads it: one file, rendered by headless Chromium (Debian's
`chromium`), every figure loaded with a size, the tables there, nothing fetched from anywhere, and a PDF print.

Chromium comes from the system (`.ci/run` installs it and sets AUBENCH_REQUIRE_CHROMIUM=1, so CI always runs
these tests); elsewhere they are skipped with the command that installs it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aubench_cli.cli import app
from test_report import studies  # noqa: F401  (the fixture: three studies, runs done, missing, failed)

runner = CliRunner()
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and os.environ.get("AUBENCH_REQUIRE_CHROMIUM") != "1",
    reason="headless Chromium not installed (apt-get install chromium)")

# Written into the page copy the test renders (never into the report): after every image has loaded, each
# image's natural size and whether it completed, and the tables' shapes, as attributes Chromium's DOM dump shows.
PROBE = """<script>
addEventListener('load', () => {
  const lastRow = i => {  // the image decoded down to its last row: matplotlib's PNGs are opaque there
    const c = document.createElement('canvas');
    c.width = i.naturalWidth; c.height = i.naturalHeight;
    const g = c.getContext('2d');
    g.drawImage(i, 0, 0);
    const row = g.getImageData(0, c.height - 1, c.width, 1).data;
    return Math.min(...row.filter((_, k) => k % 4 === 3));
  };
  const images = [...document.images].map(i => [i.naturalWidth, i.naturalHeight, i.complete, i.alt,
                                                 i.naturalWidth ? lastRow(i) : 0]);
  const style = (q, p) => getComputedStyle(document.querySelector(q))[p];
  const print = {nav: style('nav', 'display'), h2: style('h2', 'breakBefore'), table: style('table', 'breakInside'),
                 figure: style('figure', 'breakInside'), wrap: style('.wrap', 'overflowX')};
  const tables = [...document.querySelectorAll('table')].map(t => [t.rows.length, t.rows[0].cells.length,
                                                                 t.getBoundingClientRect().width]);
  document.body.setAttribute('data-probe', JSON.stringify({images, tables, print}));
});
</script>"""


def chromium(*args: str) -> subprocess.CompletedProcess:
    assert CHROMIUM, "headless Chromium is needed: apt-get install chromium"
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--disable-extensions", *args], capture_output=True, text=True, timeout=120)


class Links(HTMLParser):
    """Every tag, and every attribute that makes a browser fetch something."""

    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.fetches: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "srcset", "poster", "data", "action", "background") and value is not None:
                self.fetches.append((tag, name, value))


@pytest.fixture(scope="module")
def page(studies, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("html") / "report.html"
    result = runner.invoke(app, ["report", str(studies), "--format", "html", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def test_one_file_nothing_beside_it_nothing_fetched(page):
    out, written = page
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.html"]  # no figures/ folder
    ranking = [n for n in written["embedded_figures"] if n.endswith(("-ranks.png", "-critical-difference.png"))]
    assert written["figures"] == [] and len(written["embedded_figures"]) == 5 + len(ranking)  # + the rankings' figures
    text = out.read_text()
    parser = Links()
    parser.feed(text)
    assert "script" not in parser.tags and "link" not in parser.tags and "iframe" not in parser.tags
    images = [v for tag, name, v in parser.fetches if tag == "img"]
    assert len(images) == len(written["embedded_figures"]) and all(v.startswith("data:image/png;base64,") for v in images)
    others = [(t, n, v) for t, n, v in parser.fetches if not (v.startswith("data:") or v.startswith("#"))]
    assert others == []  # no http(s)://, no relative file, no protocol-relative //host
    assert not re.search(r"url\(|@import|@font-face", text)  # the style fetches nothing either
    assert "@media print" in text


def test_page_holds_both_layouts_the_tests_and_the_method(page):
    text = page[0].read_text()
    for heading in ("The paper's layout", "The literature's layout", "Paired tests between runs",
                    "Runs: settings and data", "How the numbers were obtained"):
        assert text.count(f">{heading}<") >= 1, heading
    assert "<td><b>80.0</b> ([75.5])</td>" in text  # the paper's layout, best bold, the paper's value beside
    assert "B − C" in text and "p (Holm)" in text  # a pair of the architectures study
    assert "100 balanced test batches per AU" in text and "3 subjects" in text


def rendered(text: str, folder: Path) -> dict:
    """What Chromium's rendering of ``text`` (with the probe added) reports."""
    probe = folder / "probe.html"
    probe.write_text(text.replace("</body>", PROBE + "</body>"))
    result = chromium("--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    match = re.search(r"data-probe=\"([^\"]*)\"", result.stdout)
    assert match, result.stderr[-2000:]
    return json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))


@needs_chromium
def test_chromium_renders_every_image_and_table(page, tmp_path):
    out, written = page
    seen = rendered(out.read_text(), tmp_path)
    assert len(seen["images"]) == len(written["embedded_figures"]) >= 5
    for width, height, complete, alt, last_row_alpha in seen["images"]:
        assert complete and width > 300 and height > 200, alt  # decoded, with the figure's own size
        assert last_row_alpha == 255, alt  # and whole: a cut PNG leaves its last rows transparent
    assert seen["print"]["nav"] != "none" and seen["print"]["wrap"] == "auto"  # on screen: contents, scrolling
    html_tables = out.read_text().count("<table")
    assert len(seen["tables"]) == html_tables >= 3 * 4
    assert all(rows >= 2 and cols >= 2 and width > 0 for rows, cols, width in seen["tables"])


@needs_chromium
def test_chromium_screenshot_and_print(page, tmp_path):
    out, _ = page
    shot = tmp_path / "shot.png"
    chromium("--hide-scrollbars", "--window-size=1280,1600", f"--screenshot={shot}", out.as_uri())
    import matplotlib.image as mpimg

    image = mpimg.imread(shot)
    assert image.shape[:2] == (1600, 1280) and image[..., :3].std() > 0.05  # a page drawn, not a blank one
    # the print rules are valid CSS that applies (rendered here as if for the screen): no navigation, each
    # study on a new page, tables and figures kept whole, wide tables shown whole rather than scrolled
    text = out.read_text()
    assert text.count("@media print{") == 1
    printed = rendered(text.replace("@media print{", "@media all{"), tmp_path)["print"]
    assert printed == {"nav": "none", "h2": "page", "table": "avoid", "figure": "avoid", "wrap": "visible"}
    pdf = tmp_path / "report.pdf"
    chromium("--no-pdf-header-footer", f"--print-to-pdf={pdf}", out.as_uri())
    pages = len(re.findall(rb"/Type\s*/Page[^s]", pdf.read_bytes()))
    assert pages >= text.count("<h2")  # each section starts a page
