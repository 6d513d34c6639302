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


# --- one run per folder, --fresh ------------------------------------------------------------------------------------
def test_a_second_run_into_a_busy_folder_is_refused(world, monkeypatch):
    from failure_world import GPT
    from rdtcourse.core import RunFolder

    monkeypatch.chdir(world)
    before = snapshot(world)
    with RunFolder(world / "gpt" / "run"):  # a run in progress
        code, err = run_cli(GPT + " --set out_dir=gpt/run")
    assert code == 2 and "gpt/run is in use by another run (pid" in err.strip().splitlines()[-1], err
    assert snapshot(world) == before


def test_fresh_starts_over_where_other_settings_were_refused(world, monkeypatch):
    from failure_world import GPT
    from rdtcourse.core import load_checkpoint

    monkeypatch.chdir(world)
    shutil.copytree(world / "gpt" / "run", world / "fresh_gpt")
    (world / "fresh_gpt" / "notes.txt").write_text("mine")  # not the run's: --fresh keeps it
    assert run_cli(GPT + " --set out_dir=fresh_gpt --set n_embd=32")[0] == 2
    code, err = run_cli(GPT + " --set out_dir=fresh_gpt --set n_embd=32 --fresh")
    assert code == 0, err
    assert load_checkpoint(world / "fresh_gpt" / "best.pt")["config"]["n_embd"] == 32
    assert (world / "fresh_gpt" / "notes.txt").read_text() == "mine"
    # --fresh with a value that fails before the run writes anything: the earlier run is put back, untouched
    before = snapshot(world / "fresh_gpt")
    code, err = run_cli(GPT + " --set out_dir=fresh_gpt --set block_size=100000000 --fresh")
    assert code == 2 and "block_size" in err and snapshot(world / "fresh_gpt") == before, err
    shutil.rmtree(world / "fresh_gpt")


# --- a run killed, or stopped by Ctrl-C, resumes bit for bit ---------------------------------------------------------
# each trainer with checkpoints often enough to be caught mid-run: (command, its checkpoint folder, final checkpoint)
KILLED = {
    "gpt": ("{GPT} --set max_steps=300 --set eval_interval=10 --set out_dir={out}", "{out}", "ckpt_step_300.pt"),
    "rdt": (
        "{RDT} --set training.steps_per_epoch=15 --set training.num_epochs=4 --set training.checkpoint_dir={out}",
        "{out}",
        "ckpt_step_60.pt",
    ),
    "kr": ("{KR} --n_tokens 0.01 --save_every 5 --model_path {out}/m.pt", "{out}/m_ckpt", None),
    "retrieval": (
        "{RETRIEVAL} --set iterations=60 --set eval_every=5 --set patience=0 --set out_dir={out}",
        "{out}",
        "ckpt_step_60.pt",
    ),
    "sft": ("{SFT} --max_train_steps 12 --checkpointing_steps 2 --output_dir {out}", "{out}", "ckpt_step_12.pt"),
}


def _cli(world, command: str, out: str, log: str):
    "Start `rdtcourse COMMAND` in the world, its output (both streams) into world/LOG (a pipe could fill and block)."
    import subprocess
    import sys

    from failure_world import SHORTHANDS

    words = command.format(**SHORTHANDS, out=out).split()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    exe = str(Path(sys.executable).parent / "rdtcourse")
    with open(world / log, "w") as f:
        return subprocess.Popen([exe, *words], cwd=world, env=env, stdout=f, stderr=subprocess.STDOUT, text=True)


def _last_checkpoint(folder: Path, final):
    from rdtcourse.core import Checkpointer

    return folder / final if final else Checkpointer(folder, keep_last=0).latest()


@pytest.mark.parametrize("job", KILLED)
def test_a_killed_or_interrupted_run_resumes_to_the_uninterrupted_weights(world, job):
    """SIGKILL (no handler, no goodbye) and SIGINT (Ctrl-C: the run saves at the next step boundary and exits 130)
    once the first checkpoint exists; then the same command again. Both end with the straight run's weights."""
    import signal
    import time

    from rdtcourse.core import load_checkpoint

    command, folder, final = KILLED[job]
    runs = {}
    for name, sig in (("straight", None), ("killed", signal.SIGKILL), ("interrupted", signal.SIGINT)):
        out = f"stop_{job}_{name}"
        p = _cli(world, command, out, f"{out}.log")
        if sig is not None:
            ck = world / folder.replace("{out}", out)
            deadline = time.time() + 300
            while p.poll() is None and time.time() < deadline and not list(ck.glob("ckpt_step_*.pt")):
                time.sleep(0.05)
            p.send_signal(sig)
            code = p.wait()
            last = (world / f"{out}.log").read_text().strip().splitlines()[-1]
            if sig == signal.SIGKILL:
                assert code == -signal.SIGKILL, "the run ended before the kill"
            else:
                assert code == 130 and last.startswith("rdtcourse: stopped by SIGINT at step"), last
            assert list(ck.glob("ckpt_step_*.pt")), "no checkpoint before the stop"
            p = _cli(world, command, out, f"{out}.again.log")  # the same command again resumes
        assert p.wait() == 0, (world / f"{out}.log").read_text()[-3000:]
        if sig is not None:
            assert "resuming" in (world / f"{out}.again.log").read_text(), "it started over instead of resuming"
        runs[name] = load_checkpoint(_last_checkpoint(world / folder.replace("{out}", out), final))
    a = runs["straight"]
    for name in ("killed", "interrupted"):
        b = runs[name]
        assert a["step"] == b["step"] and a["model"].keys() == b["model"].keys(), name
        for k in a["model"]:
            assert (a["model"][k] == b["model"][k]).all(), (name, k)


def test_a_killed_rqvae_run_keeps_the_old_ids_and_the_same_command_gives_the_same_ones(world):
    "The RQ-VAE trains in seconds and writes one file: a kill leaves the previous file whole; running again redoes it."
    import signal
    import time

    from rdtcourse.core import load_checkpoint

    command = "{RQVAE} --set steps=3000 --set log_every=3000 --set out_dir={out}"
    assert _cli(world, command, "rq_straight", "rq_straight.log").wait() == 0
    shutil.copytree(world / "rq_straight", world / "rq_killed")
    old = (world / "rq_killed" / "rqvae.pt").read_bytes()
    p = _cli(world, command.replace("steps=3000", "steps=300000"), "rq_killed", "rq_killed.log")  # a longer run
    deadline = time.monotonic() + 120
    while "rqvae:" not in (world / "rq_killed.log").read_text() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # until its progress bar shows it training (a loaded machine starts Python slowly)
    p.send_signal(signal.SIGKILL)
    assert p.wait() == -signal.SIGKILL
    assert (world / "rq_killed" / "rqvae.pt").read_bytes() == old  # the trained IDs are still there, whole
    # no half-written file; the lock file stays, but the lock died with the process
    assert [q.name for q in (world / "rq_killed").iterdir() if q.name.startswith(".")] == [".lock"]
    assert _cli(world, command, "rq_killed", "rq_killed.again.log").wait() == 0
    a, b = (load_checkpoint(world / d / "rqvae.pt") for d in ("rq_straight", "rq_killed"))
    assert all((a["model"][k] == b["model"][k]).all() for k in a["model"])


def test_ctrl_c_saves_the_step_and_the_same_command_resumes(world):
    import signal
    import time

    from rdtcourse.core import load_checkpoint

    command = "{GPT} --set max_steps=400 --set eval_interval=100 --set log_interval=1 --set out_dir={out}"
    straight = _cli(world, command, "int_straight", "int_straight.log")
    assert straight.wait() == 0
    p = _cli(world, command, "int_split", "int_split.log")
    log, deadline = world / "int_split" / "log.jsonl", time.time() + 300
    while p.poll() is None and time.time() < deadline and not (log.exists() and log.stat().st_size > 2000):
        time.sleep(0.02)
    p.send_signal(signal.SIGINT)  # what Ctrl-C sends
    assert p.wait() == 130, (world / "int_split.log").read_text()[-3000:]
    last = (world / "int_split.log").read_text().strip().splitlines()[-1]
    assert last.startswith("rdtcourse: stopped by SIGINT at step") and "run the same command again" in last, last
    step = int(last.split("at step ")[1].split(";")[0])
    assert 0 < step < 400 and (world / "int_split" / f"ckpt_step_{step}.pt").exists()  # the steps done are kept
    again = _cli(world, command, "int_split", "int_split.again.log")
    assert again.wait() == 0 and f"resuming from step {step}" in (world / "int_split.again.log").read_text()
    a, b = (load_checkpoint(world / d / "ckpt_step_400.pt")["model"] for d in ("int_straight", "int_split"))
    assert all((a[k] == b[k]).all() for k in a)
