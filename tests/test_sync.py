"""The library is what the notebooks export, the notebooks are clean, README.md is what index.ipynb generates,
and CI runs the README's test command."""

import re
import shutil
import subprocess
import sys
from pathlib import Path
from conftest import ROOT

BIN = Path(sys.executable).parent


def _snapshot(d: Path) -> dict:
    return {
        p.relative_to(d).as_posix(): p.read_bytes()
        for p in sorted(d.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and p.suffix in (".py", ".ipynb")
    }


def test_export_and_clean_leave_tree_unchanged(tmp_path):
    # work on a copy so a failing check never rewrites the developer's files
    for name in ("nbs", "rdtcourse"):
        shutil.copytree(
            ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    before = {
        **{f"nbs/{k}": v for k, v in _snapshot(tmp_path / "nbs").items()},
        **{f"rdtcourse/{k}": v for k, v in _snapshot(tmp_path / "rdtcourse").items()},
    }
    for cmd in ("nbdev-export", "nbdev-clean"):
        subprocess.run([str(BIN / cmd)], cwd=tmp_path, check=True, capture_output=True)
    after = {
        **{f"nbs/{k}": v for k, v in _snapshot(tmp_path / "nbs").items()},
        **{f"rdtcourse/{k}": v for k, v in _snapshot(tmp_path / "rdtcourse").items()},
    }
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"run nbdev-export && nbdev-clean and commit: these change {changed}"


def test_readme_is_generated_from_index():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "docs.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def _commands(text: str) -> list[str]:
    return [l.strip() for l in text.splitlines() if l.strip().startswith("python3 -m venv")]


def test_ci_runs_the_readme_test_command():
    readme = _commands((ROOT / "README.md").read_text())
    assert len(readme) == 2, f"README must give exactly two set-up commands, found {readme}"
    test_cmd = [c for c in readme if "pytest" in c]
    assert len(test_cmd) == 1
    assert test_cmd[0] in (ROOT / ".ci" / "run").read_text()
    # the install must not be able to pull a different (CUDA) torch build
    assert all(re.search(r"torch==[\d.]+", c) for c in readme)


def test_poetry_reads_the_same_version_as_setuptools():
    import tomllib
    import rdtcourse

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    # Poetry 2 needs it written out; setuptools reads __init__
    assert meta["tool"]["poetry"]["version"] == rdtcourse.__version__
    assert meta["project"]["dynamic"] == ["version"]


def test_sidebar_lists_every_notebook_once():
    import yaml

    listed = yaml.safe_load((ROOT / "nbs" / "sidebar.yml").read_text())["website"]["sidebar"]["contents"]
    notebooks = sorted(p.name for p in (ROOT / "nbs").glob("[!._]*.ipynb"))
    assert sorted(listed) == notebooks, f"nbs/sidebar.yml (written by hand) must list every notebook once: {listed}"
