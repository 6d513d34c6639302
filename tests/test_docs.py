"""The docs build offline (nbdev processing + smalldocs) and every notebook gets its page."""
import shutil, subprocess, sys
from conftest import ROOT


def test_docs_build_has_a_page_per_notebook(tmp_path):
    for name in ("nbs", "rdtcourse", "tools"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    r = subprocess.run([sys.executable, str(tmp_path / "tools" / "docs.py")], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    pages = {p.stem for p in (tmp_path / "_docs").glob("*.html")}
    missing = sorted(nb.stem for nb in (ROOT / "nbs").glob("*.ipynb") if nb.stem not in pages)
    assert not missing, f"notebooks without a docs page: {missing}"
    home = (tmp_path / "_docs" / "index.html").read_text()
    assert "The chapters" in home and "00_core" in home
    core = (tmp_path / "_docs" / "00_core.html").read_text()
    assert "Checkpointer" in core  # the API docs of exported code are on the page
