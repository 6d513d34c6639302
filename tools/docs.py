"""Build the course site offline: README.md from nbs/index.ipynb, nbdev's notebook processing, then smalldocs.

    python tools/docs.py            # README.md + _docs/
    python tools/docs.py --readme   # README.md only
    python tools/docs.py --check    # fail if README.md is not what index.ipynb generates

With Quarto installed, `nbdev-docs` builds the same site (and `nbdev-readme` the README) the standard nbdev way.
This script exists because Quarto ships as a binary download, which offline machines and CI cannot fetch.
"""
import argparse, json, os, shutil, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NBS, PROC, DOCS = ROOT / "nbs", ROOT / "_proc", ROOT / "_docs"
HEADER = "<!-- Generated from nbs/index.ipynb by tools/docs.py: edit the notebook, not this file. -->\n\n"


def readme_text() -> str:
    "README.md's text: the markdown cells of index.ipynb (the index has no code cells worth showing)."
    nb = json.loads((NBS / "index.ipynb").read_text())
    cells = ["".join(c["source"]).strip() for c in nb["cells"] if c["cell_type"] == "markdown"]
    return HEADER + "\n\n".join(c for c in cells if c) + "\n"


def build_site() -> Path:
    "nbdev's processing into _proc/ (doc links, show_doc, directives), then smalldocs renders _proc/ into _docs/."
    os.chdir(ROOT)
    from nbdev.quarto import refresh_quarto_yml, nbdev_sidebar
    from nbdev.serve import proc_nbs
    import nbdev.doclinks
    refresh_quarto_yml()
    nbdev.doclinks._build_modidx()
    nbdev_sidebar.__wrapped__(path=NBS)
    if PROC.exists(): shutil.rmtree(PROC)
    proc_nbs(NBS)  # writes _proc/ (what `nbdev-proc-nbs` does, minus its attempt to install Quarto)
    subprocess.run([sys.executable, "-m", "smalldocs.cli", "render", "--quiet", str(PROC)], check=True, cwd=ROOT)
    if DOCS.exists(): shutil.rmtree(DOCS)
    shutil.move(str(PROC / "_docs"), DOCS)
    return DOCS


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Build README.md and the docs site offline.")
    p.add_argument("--readme", action="store_true", help="only regenerate README.md")
    p.add_argument("--check", action="store_true", help="exit 1 if README.md differs from what index.ipynb generates")
    a = p.parse_args(argv)
    readme = ROOT / "README.md"
    if a.check:
        if not readme.exists() or readme.read_text() != readme_text():
            print("README.md is out of date: run `python tools/docs.py --readme` and commit it", file=sys.stderr)
            return 1
        return 0
    readme.write_text(readme_text())
    if a.readme: return 0
    out = build_site()
    pages = sorted(p.name for p in out.glob("*.html"))
    print(f"wrote README.md and {len(pages)} pages to {out.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
