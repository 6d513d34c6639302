"""The failure table (failure_cases.yaml): every command given something it cannot use exits 2 with one line naming
the problem, prints no traceback, runs no code from a file and leaves every output as it was. Plus the runs that
must not happen at once (one run per folder), and a run stopped by a signal."""

import os
import shutil
from pathlib import Path

import pytest
import yaml

from failure_world import build_world, make_props, run_cli, snapshot

CASES = yaml.safe_load((Path(__file__).parent / "failure_cases.yaml").read_text(encoding="utf-8"))
pytestmark = pytest.mark.xdist_group("failures")  # one worker builds the world once


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    here = Path.cwd()
    os.chdir(root)
    try:
        build_world(root)
        make_props(root)
        yield root
    finally:
        os.chdir(here)


def test_the_table_is_large_and_well_formed():
    assert len(CASES) >= 60
    for c in CASES:
        assert set(c) <= {"when", "cmd", "says", "exit"} and c["when"] and c["cmd"] and c["says"], c
    assert len({c["when"] for c in CASES}) == len(CASES), "every case says what happens in its own words"


@pytest.mark.parametrize("case", CASES, ids=[c["when"] for c in CASES])
def test_a_bad_input_is_one_line_and_changes_nothing(world, case, monkeypatch):
    monkeypatch.chdir(world)
    before = snapshot(world)
    code, err = run_cli(case["cmd"])
    after = snapshot(world)
    last = (err.strip().splitlines() or [""])[-1]
    pwned = (world / "PWNED").exists()
    for p in world.glob("new*"):  # where a case was told to write: it must not have, but never leak into the next
        shutil.rmtree(p, ignore_errors=True)
    assert not pwned, "a file ran code"
    assert "Traceback" not in err, err
    assert code == case.get("exit", 2), err
    assert case["says"] in last, last
    assert before == after, sorted(set(before.items()) ^ set(after.items()))
