"""Build the course site offline: README.md from nbs/index.ipynb, nbdev's notebook processing, then smalldocs.

    python tools/docs.py               # README.md + _docs/ (open _docs/index.html in a browser)
    python tools/docs.py --readme      # README.md only
    python tools/docs.py --check       # fail if README.md is not what index.ipynb generates
    python tools/docs.py --math cdn    # typeset maths with KaTeX from a CDN instead of MathML built in

With Quarto installed, `nbdev-docs` builds the hosted site (and `nbdev-readme` the README) the standard nbdev way;
.github/workflows/deploy.yaml does that on every push to main. This script exists because Quarto ships as a binary
download, which offline machines and CI cannot fetch. It makes the offline site match the hosted one:

- pages are named as Quarto names them (nbdev's `output-file`: `core.html` for `00_core.ipynb`), so the API links
  nbdev writes (`https://<site>/core.html#checkpointer`) resolve; links to the site's own address become relative;
- maths is converted to MathML at build time (latex2mathml), which browsers render with no script and no network;
- signatures and docstrings keep their `<placeholders>` (`<factory>`, `<tier>`) as text instead of losing them as tags.
"""

import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NBS, PROC, DOCS = ROOT / "nbs", ROOT / "_proc", ROOT / "_docs"
HEADER = "<!-- Generated from nbs/index.ipynb by tools/docs.py: edit the notebook, not this file. -->\n\n"
QUARTO_ONLY = {"format-links"}  # top-level keys of nbdev.yml that only Quarto reads
KATEX_CDN = re.compile(r"<link[^>]+katex[^>]*>|<script[^>]+katex[^>]*></script>")
MATH = re.compile(r'<span class="math (inline|display)">\\[(\[](.*?)\\[)\]]</span>', re.S)
HTML_TAGS = set(
    "a abbr b br code div em i img kbd li ol p pre s small span strong sub sup table tbody td th thead "
    "tr u ul details summary hr h1 h2 h3 h4 h5 h6 blockquote figure figcaption iframe video source".split()
)


def _chapter_links(text: str, prefix: str) -> str:
    "Point the index's `](name.ipynb)` links at `prefix` + the notebook (README: nbs/...; the site keeps them)."
    return re.sub(r"\]\((\w+\.ipynb(?:#[\w-]+)?)\)", lambda m: f"]({prefix}{m.group(1)})", text)


def readme_text() -> str:
    "README.md's text: index.ipynb's markdown cells and the markdown its code cells printed (the results table)."
    nb = json.loads((NBS / "index.ipynb").read_text())
    parts = []
    for c in nb["cells"]:
        if c["cell_type"] == "markdown":
            parts.append("".join(c["source"]).strip())
        for o in c.get("outputs", []):
            md = o.get("data", {}).get("text/markdown")
            if md:
                parts.append("".join(md).strip())
    return HEADER + _chapter_links("\n\n".join(p for p in parts if p), "nbs/") + "\n"


def _escape_placeholders(text: str) -> str:
    """`<factory>`, `<tier>`: escape angle-bracket words that are not HTML tags (outside code),
    so markdown keeps them as text."""
    esc = lambda m: m.group(0) if m.group(2).lower() in HTML_TAGS else f"&lt;{m.group(1)}{m.group(2)}&gt;"
    parts = re.split(r"(```.*?```|`[^`\n]*`)", text, flags=re.S)  # odd parts are code: left as they are
    return "".join(p if i % 2 else re.sub(r"<(/?)([A-Za-z_][\w-]*)>", esc, p) for i, p in enumerate(parts))


def prepare_proc(proc: Path) -> None:
    """Make nbdev's _proc/ fit smalldocs and the hosted page names: drop the Quarto-only config it warns about, name
    each notebook after its `output-file` (00_core -> core) and point links at the new names,
    fix show_doc's markdown."""
    import yaml

    cfg = proc / "_quarto.yml"
    q = yaml.safe_load(cfg.read_text())
    q.get("format", {}).pop("commonmark", None)
    q.get("format", {}).get("html", {}).pop("keep-md", None)
    cfg.write_text(yaml.safe_dump(q, sort_keys=False))
    meta = proc / "nbdev.yml"
    m = yaml.safe_load(meta.read_text())
    for k in QUARTO_ONLY:
        m.pop(k, None)
    meta.write_text(yaml.safe_dump(m, sort_keys=False))

    notebooks = {p: json.loads(p.read_text()) for p in sorted(proc.glob("*.ipynb"))}

    def output_stem(nb):
        front = "".join(nb["cells"][0]["source"]) if nb["cells"] and nb["cells"][0]["cell_type"] == "raw" else ""
        hit = re.search(r"^output-file:\s*(\S+)\s*$", front, re.M)
        return Path(hit.group(1)).stem if hit else None

    pages = {p.stem: output_stem(nb) or p.stem for p, nb in notebooks.items()}
    renamed = lambda m: f"]({pages.get(m.group(1), m.group(1))}.ipynb"
    for p, nb in notebooks.items():
        for c in nb["cells"]:
            src = "".join(c["source"])
            # renamed instead
            if c["cell_type"] == "raw":
                c["source"] = re.sub(r"^output-file:.*\n", "", src, flags=re.M)
            if c["cell_type"] == "markdown":
                c["source"] = re.sub(r"\]\((\w+)\.ipynb", renamed, src)
            for o in c.get("outputs", []):
                md = o.get("data", {}).get("text/markdown")
                if md:  # show_doc: the notebook's own classes print as __main__.X, defaults as <factory>; generated
                    # tables link notebooks as markdown cells do
                    md = re.sub(r"\]\((\w+)\.ipynb", renamed, "".join(md))
                    o["data"]["text/markdown"] = _escape_placeholders(md.replace("__main__.", ""))
        p.unlink()
        (proc / f"{pages[p.stem]}.ipynb").write_text(json.dumps(nb, indent=1))
    side = proc / "sidebar.yml"
    side.write_text(re.sub(r"(\w+)(?=\.ipynb)", lambda mm: pages.get(mm.group(1), mm.group(1)), side.read_text()))


def _mathml(m: re.Match) -> str:
    from latex2mathml.converter import convert

    kind, tex = m.group(1), html.unescape(m.group(2)).strip()
    try:
        return f'<span class="math {kind}">{convert(tex, display="block" if kind == "display" else "inline")}</span>'
    except Exception as e:  # leave the TeX visible rather than lose it, and say which formula
        print(f"warning: maths not converted ({type(e).__name__}): {tex[:60]}", file=sys.stderr)
        return m.group(0)


def finish_pages(docs: Path, site_url: str, math: str = "mathml") -> None:
    "Rewrite the rendered pages: links to the hosted site become relative, maths becomes MathML."
    site = re.escape(site_url.rstrip("/") + "/")
    for f in docs.glob("*.html"):
        t = re.sub(r'href="' + site, 'href="', f.read_text())  # the hosted site's pages are these pages
        if math == "mathml":
            t = MATH.sub(_mathml, t)
            t = KATEX_CDN.sub("", t)
        f.write_text(t)


def broken_links(docs: Path, site_url: str) -> list[str]:
    "Every link in the built site that points into it but misses a file or an anchor, as 'page: href' strings."
    from html.parser import HTMLParser

    class Page(HTMLParser):
        def __init__(self):
            super().__init__()
            self.ids, self.hrefs = set(), []

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if a.get("id"):
                self.ids.add(a["id"])
            if tag == "a" and a.get("name"):
                self.ids.add(a["name"])
            if tag in ("a", "link") and a.get("href") is not None:
                self.hrefs.append(a["href"])
            if tag in ("script", "img") and a.get("src"):
                self.hrefs.append(a["src"])

    parsed = {}
    for f in sorted(docs.rglob("*.html")):
        pg = Page()
        pg.feed(f.read_text())
        parsed[f.resolve()] = pg
    site = site_url.rstrip("/") + "/"
    bad = []
    for f, pg in parsed.items():
        for href in pg.hrefs:
            if href.startswith(site):
                bad.append(f"{f.name}: {href} (the hosted site: should be relative)")
                continue
            # another site, mailto:, data:
            if re.match(r"^[a-z][a-z0-9+.-]*:", href) or href.startswith("//"):
                continue
            path, _, anchor = href.partition("#")
            target = (f.parent / path.split("?")[0]).resolve() if path else f
            if not target.exists():
                bad.append(f"{f.name}: {href} (no such file)")
                continue
            if anchor and target in parsed and anchor not in parsed[target].ids:
                bad.append(f"{f.name}: {href} (no such anchor)")
    return bad


def build_site(math: str = "mathml") -> Path:
    "nbdev's processing into _proc/ (doc links, show_doc, directives), then smalldocs renders _proc/ into _docs/."
    os.chdir(ROOT)
    from nbdev.quarto import refresh_quarto_yml, nbdev_sidebar
    from nbdev.serve import proc_nbs
    from nbdev.config import get_config
    import nbdev.doclinks

    refresh_quarto_yml()
    nbdev.doclinks._build_modidx()
    nbdev_sidebar.__wrapped__(path=NBS)
    if PROC.exists():
        shutil.rmtree(PROC)
    proc_nbs(NBS)  # writes _proc/ (what `nbdev-proc-nbs` does, minus its attempt to install Quarto)
    prepare_proc(PROC)
    subprocess.run([sys.executable, "-m", "smalldocs.cli", "render", "--quiet", str(PROC)], check=True, cwd=ROOT)
    if DOCS.exists():
        shutil.rmtree(DOCS)
    shutil.move(str(PROC / "_docs"), DOCS)
    finish_pages(DOCS, get_config().doc_host + get_config().doc_baseurl, math)
    return DOCS


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Build README.md and the docs site offline.")
    p.add_argument("--readme", action="store_true", help="only regenerate README.md")
    p.add_argument("--check", action="store_true", help="exit 1 if README.md differs from what index.ipynb generates")
    p.add_argument(
        "--check-links", action="store_true", help="after building, exit 1 if a link inside the site is broken"
    )
    p.add_argument(
        "--math",
        choices=("mathml", "cdn"),
        default="mathml",
        help="mathml: converted at build time, renders offline (default); cdn: KaTeX loaded from a CDN",
    )
    a = p.parse_args(argv)
    readme = ROOT / "README.md"
    if a.check:
        if not readme.exists() or readme.read_text() != readme_text():
            print("README.md is out of date: run `python tools/docs.py --readme` and commit it", file=sys.stderr)
            return 1
        return 0
    readme.write_text(readme_text())
    if a.readme:
        return 0
    out = build_site(a.math)
    pages = sorted(p.name for p in out.glob("*.html"))
    print(
        f"wrote README.md and {len(pages)} pages to {out.relative_to(ROOT)}/; open {out.relative_to(ROOT)}/index.html"
    )
    if a.check_links:
        from nbdev.config import get_config

        bad = broken_links(out, get_config().doc_host + get_config().doc_baseurl)
        for b in bad:
            print(f"broken link: {b}", file=sys.stderr)
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
