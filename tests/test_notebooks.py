"""Every notebook in nbs/ runs under papermill at the CI tier (one test per notebook, found by glob)."""

import json
import re
from pathlib import Path
import pytest
import papermill as pm
from conftest import ROOT
from rdtcourse.course import run_notebook, declared_parameters, tier_parameters

NOTEBOOKS = sorted((ROOT / "nbs").glob("*.ipynb"))
CHAPTERS = [p for p in NOTEBOOKS if p.name[:2].isdigit()]


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_at_ci_tier(nb, tmp_path):
    if nb in CHAPTERS:
        run = run_notebook(nb, tmp_path, tier="ci", root=ROOT)
        assert run.ok, f"{nb.name} failed at {run.error}; executed copy: {run.executed}"
        # every chapter reports its headline numbers as a flat name -> number object
        assert run.metrics, f"{nb.name} wrote no metrics.json"
        assert all(isinstance(v, (int, float)) for v in run.metrics.values())
        _assert_clean_outputs(run.executed)
    else:  # index.ipynb and other unnumbered pages: they must still execute
        pm.execute_notebook(
            str(nb), str(tmp_path / nb.name), kernel_name="python3", cwd=str(nb.parent), progress_bar=False
        )


def _assert_clean_outputs(executed: Path):
    "What the docs will show: no kernel warnings, no mid-loop progress lines, no frozen widget bars, no bare reprs."
    nb = json.loads(Path(executed).read_text())
    for i, c in enumerate(nb["cells"]):
        for o in c.get("outputs", []):
            text = "".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
            where = f"{Path(executed).name} cell {i}"
            assert "[IPKernelApp] WARNING" not in text, f"{where}: a kernel warning in the outputs"
            assert "\r" not in text, f"{where}: a progress bar saved mid-loop"
            assert "application/vnd.jupyter.widget-view+json" not in o.get("data", {}), (
                f"{where}: a widget (frozen when saved)"
            )
            assert not re.match(r"^(PosixPath|VBox|HBox)\(", text), f"{where}: a bare repr {text[:40]!r}"


@pytest.mark.parametrize("nb", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_declares_out_dir(nb):
    assert "out_dir" in declared_parameters(nb), f"{nb.name} has no `out_dir` in its parameters cell"


def test_param_files_name_declared_parameters_only():
    files = sorted((ROOT / "tests" / "params").glob("*.yaml"))
    for f in files:
        nb = ROOT / "nbs" / f"{f.stem}.ipynb"
        assert nb.exists(), f"{f.name} has no notebook {nb.name}"
        tier_parameters(nb, "ci", root=ROOT)  # raises on a parameter the notebook does not declare


def test_stranger_parameter_is_refused(tmp_path):
    (tmp_path / "nbs").mkdir()
    (tmp_path / "tests" / "params").mkdir(parents=True)
    src = ROOT / "nbs" / "99_cli.ipynb"
    (tmp_path / "nbs" / src.name).write_text(src.read_text())
    (tmp_path / "tests" / "params" / "99_cli.yaml").write_text("not_a_param: 1\n")
    with pytest.raises(ValueError, match="not_a_param"):
        tier_parameters(tmp_path / "nbs" / src.name, "ci", root=tmp_path)
