"""The committed notebooks read as lessons: every number in their prose is printed by the notebook or marked as
published (tools/prose.py), their outputs carry no warnings, and every chapter ends on exercises whose solutions run."""

import json
import re
import sys
from pathlib import Path
import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import prose  # noqa: E402

NOTEBOOKS = sorted(p for p in (ROOT / "nbs").glob("*.ipynb") if not p.name.startswith("."))
# 00-19: the chapters (90_course, 99_cli are tools)
CHAPTERS = [p for p in NOTEBOOKS if re.match(r"(0\d|1\d)_", p.name)]
WARNING = re.compile(r"\b\w*Warning\b|\bWARNING\b|\bwarn\(|^\s*warning:", re.M | re.I)


def _cells(nb: Path) -> list:
    return json.loads(nb.read_text())["cells"]


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_prose_number_is_printed_or_marked(nb):
    bad = prose.check_notebook(nb)
    assert not bad, f"{len(bad)} numbers in the prose are neither printed nor marked [^source]:\n" + "\n".join(
        map(str, bad)
    )


def _notebook(md: str, printed: str) -> dict:
    return {
        "cells": [
            {"cell_type": "code", "source": "", "outputs": [{"output_type": "stream", "text": printed}]},
            {"cell_type": "markdown", "source": md},
        ]
    }


@pytest.mark.parametrize(
    "md, printed",
    [
        (
            "Recursion gains +0.002, a paired win.",
            "over-fit one batch: loss 7.608 -> 1.927",
        ),  # 06_rdt quoting an old run
        # 05_loss vs the README
        ("The run takes about 4 minutes.", "trained in 480 s (8.0 minutes)"),
        ("The ablation runs 1,500 steps per row, the same budget.", "main run: 3,000 steps"),  # 07_rqvae
        ("Try 4-step problems.", "max_problem_steps = 3"),  # 09_tow_sft
        ("x0.99 here, x0.78 in an earlier run", "2 processes: x0.99"),  # 10_ddp
        # 08_retrieval
        ("over the 15-minute budget", "took 586 s"),
        # unmarked reference
        ("1.88 in the paper", "val loss 1.909"),
        # the sign flipped
        ("Recursion gains +0.0021 over one pass.", "gain over one pass: -0.0021"),
        # after a reference
        ("In chapter 4, 1.85 was the loss.", "val loss 1.909"),
        # a comparison, not a tag
        ("the loss < 2 so RDT wins by 0.35 <details>", "val loss 1.909"),
        # not a citation year
        ("(batch 2048)", "batch 64"),
        # a marker with no source
        ("nanoGPT's 1.88[^ng] is lower.", "val loss 1.909"),
        # a marker covers its number only
        ("We got 0.412 against nanoGPT's 1.88[^ng].\n\n[^ng]: nanoGPT's README.", "val loss 1.909"),
    ],
)
def test_checker_catches_drift(tmp_path, md, printed):
    f = tmp_path / "nb.ipynb"
    f.write_text(json.dumps(_notebook(md, printed)))
    assert prose.check_notebook(f, results={}), f"not caught: {md!r}"


@pytest.mark.parametrize(
    "md",
    [
        "val loss 1.91 against 1.909 printed",  # rounds to a printed number
        "usage 97.3% of the codes",  # a printed share, as a percentage
        "1,003,854 tokens",  # thousands separators
        "nanoGPT's 1.88[^ng] is lower.\n\n[^ng]: nanoGPT's README.",  # a marked published figure
        "gate steps 2.4 / 7.6 / 13.8[^rdt]\n\n[^rdt]: the RDT guide.",  # a footnote covers its phrase
        "as in chapter 4, section 3; set `n_layer=6`; see $\\ln 65$; bf16 and GPT-2; (Kang and McAuley, 2018)",
        "with a 95% bootstrap interval",
        # bold, or a label before the marker
        "a loss of **1.88**[^ng] and 1.88 (nanoGPT)[^ng]\n\n[^ng]: nanoGPT's README.",
        "a gain of +0.060 and a loss of -1.909",  # signs as printed
        "1.0M tokens, 1,003.854k characters",  # k and M scale the number
        "chapters 3-4 and section 5",
    ],
)
def test_checker_accepts_traced_numbers(tmp_path, md):
    f = tmp_path / "nb.ipynb"
    f.write_text(json.dumps(_notebook(md, "val loss 1.909, usage 0.9727, tokens 1003854, diff +0.0600, delta -1.909")))
    assert not prose.check_notebook(f, results={}), prose.check_notebook(f, results={})


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_outputs_carry_no_warnings(nb):
    for i, c in enumerate(_cells(nb)):
        for o in c.get("outputs", []):
            text = "".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
            if o.get("output_type") == "error":
                pytest.fail(f"{nb.name} cell {i}: an error in the committed outputs")
            assert not WARNING.search(text), f"{nb.name} cell {i}: a warning in the committed outputs: {text[:200]!r}"


def exercises(nb: Path) -> tuple[list[int], list[int]]:
    "The numbers of the exercises a notebook's `## Exercises` cell lists, and of its `# Solution to exercise N` cells."
    cells = _cells(nb)
    asked, solved = [], []
    for c in cells:
        src = "".join(c["source"])
        if c["cell_type"] == "markdown" and re.search(r"^#+ Exercises", src, re.M):
            body = src[re.search(r"^#+ Exercises", src, re.M).end() :]
            asked += [int(n) for n in re.findall(r"^(\d+)\. ", body, re.M)]
        if c["cell_type"] == "code":
            solved += [int(n) for n in re.findall(r"^# Solution to exercise (\d+)", src, re.M)]
    return asked, solved


@pytest.mark.parametrize("nb", CHAPTERS, ids=lambda p: p.stem)
def test_every_chapter_has_exercises_with_solutions_that_run(nb):
    asked, solved = exercises(nb)
    assert len(asked) >= 2, f"{nb.name}: {len(asked)} exercises under '## Exercises' (expected at least 2)"
    assert sorted(solved) == sorted(asked), f"{nb.name}: exercises {asked} but solution cells for {solved}"
    for c in _cells(nb):  # solutions fold in the docs, check themselves, and run with the notebook at the CI tier
        src = "".join(c["source"])
        if c["cell_type"] == "code" and "# Solution to exercise" in src:
            assert "#| code-fold: true" in src, f"{nb.name}: a solution cell without `#| code-fold: true`"
            assert re.search(r"\bassert\b|test_eq|test_close", src), f"{nb.name}: a solution that checks nothing"


def test_run_time_in_prose_matches_the_committed_run(tmp_path):
    f = tmp_path / "nb.ipynb"
    f.write_text(json.dumps(_notebook("**Run time.** About nine minutes on two CPU cores.", "trained in 167s")))
    assert prose.check_notebook(f, results={"nb": {"seconds": 425, "metrics": {}}}), "nine minutes for a 7-minute run"
    f.write_text(json.dumps(_notebook("**Run time.** About 7 minutes on two CPU cores.", "trained in 167s")))
    assert not prose.check_notebook(f, results={"nb": {"seconds": 425, "metrics": {}}})
