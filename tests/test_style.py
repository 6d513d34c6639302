"""One style everywhere: `ruff format` and `ruff check` (configured in pyproject.toml) are clean on the notebooks,
tests, tools and benchmarks, and the generated library keeps lines within 120 characters."""

import subprocess
import sys

from conftest import ROOT

RUFF = [sys.executable, "-m", "ruff"]


def test_ruff_check_is_clean():
    r = subprocess.run([*RUFF, "check", "--output-format", "concise", "."], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, f"ruff check found:\n{r.stdout[-3000:]}{r.stderr[-500:]}"


def test_ruff_format_is_clean():
    r = subprocess.run([*RUFF, "format", "--check", "."], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, f"run `ruff format` (then nbdev-export): it would reformat\n{r.stdout[-3000:]}"


def test_library_lines_fit_in_120_characters():
    # the one exception is nbdev's own `__all__` line: it wraps the list at 120 before adding `__all__ = `
    long = [
        f"{p.name}:{i}: {len(line)} characters"
        for p in sorted((ROOT / "rdtcourse").glob("*.py"))
        if p.name != "_modidx.py"
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if len(line) > 120 and not line.startswith("__all__ = [")
    ]
    assert not long, "lines over 120 characters: " + ", ".join(long)


def test_a_long_line_is_caught(tmp_path):
    "The check can fail: a 121-character line in a notebook-like file is reported."
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    (tmp_path / "bad.py").write_text("x = " + "1 + " * 29 + "1\n")
    assert len((tmp_path / "bad.py").read_text().splitlines()[0]) > 120
    r = subprocess.run([*RUFF, "check", "--select", "E501", "bad.py"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 1 and "E501" in r.stdout
