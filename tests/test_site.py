"""The learner-facing site: the docs build offline with a page per notebook, every link inside it resolves, pages
render in a real (headless) browser with their maths typeset and no flood of progress lines, and JupyterLab opens a
chapter. The browser tests skip, saying why, where Chromium is not installed (.ci/run installs it)."""

import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import docs  # tools/docs.py

pytestmark = pytest.mark.xdist_group("site")  # one worker builds the site once for all of these
SITE_URL = "https://rdtcourse.github.io/rdtcourse"
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium); .ci/run installs it"
)
# the tallest chapter page (rdt_train, which also trains and scores the masked LM) is ~28,000 px at 1280 px wide;
# a 75-line bar flood adds ~5,650 px
MAX_PAGE_PX = 31_000


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    "The site built by tools/docs.py in a copy of the repository (so the build never touches the developer's tree)."
    tmp = tmp_path_factory.mktemp("site")
    for name in ("nbs", "rdtcourse", "tools"):
        shutil.copytree(ROOT / name, tmp / name, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
    shutil.copy(ROOT / "pyproject.toml", tmp)
    r = subprocess.run([sys.executable, str(tmp / "tools" / "docs.py")], cwd=tmp, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "warning:" not in r.stderr, f"the docs build warns:\n{r.stderr}"
    return tmp / "_docs"


def _page_names() -> dict:
    "notebook stem -> the page Quarto (and tools/docs.py) names it after nbdev's output-file: 00_core -> core."
    return {
        nb.stem: (re.sub(r"^\d+[a-zA-Z0-9]*_", "", nb.stem) if nb.stem != "index" else "index")
        for nb in (ROOT / "nbs").glob("[!.]*.ipynb")
    }


def test_every_notebook_has_its_page(site):
    missing = sorted(stem for stem, page in _page_names().items() if not (site / f"{page}.html").exists())
    assert not missing, f"notebooks without a docs page: {missing}"
    home = (site / "index.html").read_text()
    assert "The chapters" in home and 'href="core.html"' in home  # the chapter table links to the pages
    assert "Checkpointer" in (site / "core.html").read_text()  # the API docs of exported code are on the page


def test_links_inside_the_site_resolve(site):
    assert docs.broken_links(site, SITE_URL) == []
    hosted = [f.name for f in site.glob("*.html") if f'href="{SITE_URL}' in f.read_text()]
    assert not hosted, f"pages still link to the hosted site instead of themselves: {hosted}"


def test_broken_links_are_caught(tmp_path):
    (tmp_path / "a.html").write_text(
        '<h2 id="x">x</h2><a href="a.html#x">ok</a><a href="#y">no anchor</a>'
        f'<a href="b.html">no file</a><a href="{SITE_URL}/a.html">hosted</a><a href="https://example.org">away</a>'
    )
    bad = docs.broken_links(tmp_path, SITE_URL)
    assert sorted(b.split(" (")[1] for b in bad) == [
        "no such anchor)",
        "no such file)",
        "the hosted site: should be relative)",
    ]


def test_placeholders_survive_as_text():
    assert (
        docs._escape_placeholders("f(x=<factory>) writes _runs/<tier>/x <b>bold</b> `<kept>`\n```\nf(<code>)\n```")
        == "f(x=&lt;factory&gt;) writes _runs/&lt;tier&gt;/x <b>bold</b> `<kept>`\n```\nf(<code>)\n```"
    )


def test_pages_load_nothing_from_the_network(site):
    for f in site.glob("*.html"):
        remote = re.findall(r'<(?:script|link)[^>]+(?:src|href)="(https?://[^"]+)"', f.read_text())
        assert not remote, f"{f.name} loads {remote}: the site must work offline"


def _chromium(url: str, *extra: str, timeout: int = 90) -> str:
    "The DOM of `url` after its scripts ran, from headless Chromium."
    with tempfile.TemporaryDirectory() as profile:
        r = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                f"--user-data-dir={profile}",
                "--window-size=1280,900",
                *extra,
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def _rendered(page: Path) -> tuple[str, int]:
    "The DOM of a built page in Chromium and its full height in CSS pixels (a probe copy records scrollHeight)."
    probe = page.with_name(f"_probe_{page.name}")
    probe.write_text(
        page.read_text().replace(
            "</body>",
            "<script>window.addEventListener('load', () => setTimeout(() => "
            "document.body.setAttribute('data-height', document.documentElement.scrollHeight), 100))</script></body>",
        )
    )
    try:
        dom = _chromium(probe.as_uri(), "--virtual-time-budget=5000")
    finally:
        probe.unlink()
    height = re.search(r'data-height="(\d+)"', dom)
    assert height, "the page did not finish loading"
    return dom, int(height.group(1))


@needs_chromium
@pytest.mark.parametrize("page", ["index", "gpt", "rdt_train"])
def test_page_renders_in_a_browser(site, page):
    dom, height = _rendered(site / f"{page}.html")
    # prose only: code may hold \( legitimately
    text = re.sub(r"<(pre|code|script|style)\b.*?</\1>", " ", dom, flags=re.S)
    text = re.sub(r"<[^>]+>", " ", text)
    assert len(text.split()) > 200, f"{page}.html renders (almost) blank"
    assert "\\(" not in text and "\\[" not in text, f"{page}.html shows raw LaTeX"
    assert height < MAX_PAGE_PX, f"{page}.html is {height} px tall: a flood of output lines?"
    if page == "gpt":
        assert dom.count("<math") > 5, "the GPT chapter's maths is not typeset"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs_chromium
def test_jupyterlab_opens_a_chapter():
    pytest.importorskip("jupyterlab", reason="JupyterLab is not installed (the dev and lab extras have it)")
    port = _free_port()
    # Ctrl-C's SIGINT must reach it as in a terminal: a suite started in the background (`pytest &`, nohup) ignores
    # SIGINT, every child inherits that, and the command would never see our signal (two full runs timed out so).
    lab = subprocess.Popen(
        [str(Path(sys.executable).parent / "rdtcourse"), "lab", "03_gpt.ipynb", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        url = next(l.strip() for l in iter(lab.stdout.readline, "") if l.strip().startswith("http"))
        assert url.startswith(f"http://127.0.0.1:{port}/lab/tree/03_gpt.ipynb?token=")
        api = url.split("/lab/")[0] + "/api/status?token=" + url.split("token=")[1]
        for _ in range(120):  # the server takes a few seconds to start
            try:
                urllib.request.urlopen(api, timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not answer within a minute")
        dom = _chromium(url, "--virtual-time-budget=30000", timeout=120)
        assert re.search(
            r"jp-RenderedMarkdown[^>]*><h1[^>]*>(?:<span[^>]*></span>)?GPT: a nanoGPT-style decoder", dom
        ), "JupyterLab does not show the chapter's first heading rendered"
    finally:
        lab.send_signal(signal.SIGINT)  # what Ctrl-C does: rdtcourse lab stops the server and exits
        try:
            code = lab.wait(timeout=60)  # rdtcourse lab gives the server 10 s, then kills it
        except subprocess.TimeoutExpired:
            lab.kill()
            raise
    assert code == 0
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "the server still listens after Ctrl-C"
