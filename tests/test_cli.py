"""The `rdtcourse` command: help, one-line errors with a non-zero exit, the course runner end to end."""

import re
import subprocess
import sys
from pathlib import Path
import nbformat
import pytest
from conftest import ROOT

RDT = [str(Path(sys.executable).parent / "rdtcourse")]


def run(*args, cwd=ROOT):
    return subprocess.run(RDT + list(args), capture_output=True, text=True, cwd=cwd)


def test_help_lists_subcommands():
    r = run("--help")
    assert r.returncode == 0 and "course" in r.stdout and "data" in r.stdout
    m = subprocess.run([sys.executable, "-m", "rdtcourse", "--help"], capture_output=True, text=True)
    assert m.returncode == 0 and "course" in m.stdout


def test_bad_config_is_one_line_and_nonzero(tmp_path):
    r = run("course", "--set", "tiers=ci")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "tiers" in r.stderr and "Traceback" not in r.stderr
    r = run("course", "--set", "nosuchkey=1")  # the key named once, with the keys that do exist
    assert r.stderr.count("nosuchkey") == 1 and "CourseConfig keys: tier, only, timeout, runs_dir" in r.stderr
    (tmp_path / "c.yaml").write_text("timeout: soon\n")
    r = run("course", "--config", str(tmp_path / "c.yaml"))
    assert r.returncode == 2 and "timeout" in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0


def test_data_list():
    r = run("data", "list")
    assert r.returncode == 0 and "nsmc-sample" in r.stdout and "CC0" in r.stdout
    from rdtcourse.data import CORPORA

    for c in CORPORA.values():
        assert f"license: {c.license}\n" in r.stdout  # licenses whole, never cut


def test_help_gives_every_option_a_default():
    r = run("gpt", "sample", "--help")
    options = r.stdout.split("options:")[1]
    for opt, default in [("--max-new-tokens", "200"), ("--temperature", "0.9"), ("--top-k", "50")]:
        para = re.search(rf"\n  {opt} \S+(.*?)(?=\n  -|$)", options, re.S).group(1)  # the option's help paragraph
        assert f"(default: {default})" in " ".join(para.split()), (opt, para)
    assert "--seed SEED" in r.stdout and "--device DEVICE" in r.stdout and "best available" in r.stdout


def test_both_option_spellings_are_accepted():
    # either reaches the command (then the checkpoint is missing)
    for spelling in ("--max-new-tokens", "--max_new_tokens"):
        r = run("gpt", "sample", "--checkpoint", "missing.pt", spelling, "3")
        assert r.returncode == 2 and "missing.pt" in r.stderr and "unrecognized" not in r.stderr
    for spelling in ("--max_steps", "--max-steps"):
        r = run("rdt", "infer", "--checkpoint", "x.pt", "--text", "a", spelling, "0")
        assert r.returncode == 2 and "0 must be >= 1" in r.stderr


def test_aliases_speak_their_own_name():
    bin_dir = Path(sys.executable).parent
    for alias in ("rdt-infer", "rdt-train"):
        r = subprocess.run([str(bin_dir / alias), "--help"], capture_output=True, text=True)
        assert r.returncode == 0 and r.stdout.startswith(f"usage: {alias} ")
    r = subprocess.run(
        [str(bin_dir / "rdt-infer"), "--checkpoint", "missing.pt", "--text", "a"], capture_output=True, text=True
    )
    assert r.returncode == 2 and r.stderr.startswith("rdt-infer: error:")


def _project(tmp_path):
    (tmp_path / "nbs").mkdir()
    (tmp_path / "pyproject.toml").write_text("[tool.nbdev]\n")
    for name, body in [
        ("01_ok", "from rdtcourse.core import save_metrics\nsave_metrics(out_dir, {'score': n * 2})"),
        ("02_broken", "raise RuntimeError('boom')"),
    ]:
        nb = nbformat.v4.new_notebook()
        p = nbformat.v4.new_code_cell("out_dir = 'x'\nn = 1")
        p.metadata["tags"] = ["parameters"]
        nb.cells = [p, nbformat.v4.new_code_cell(body)]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, tmp_path / "nbs" / f"{name}.ipynb")
    (tmp_path / "tests" / "params").mkdir(parents=True)
    (tmp_path / "tests" / "params" / "01_ok.yaml").write_text("n: 21\n")
    return tmp_path


def test_course_runs_reports_failures_and_gathers_metrics(tmp_path):
    proj = _project(tmp_path)
    r = run("course", "--tier", "ci", cwd=proj)
    assert r.returncode == 1, r.stdout + r.stderr  # one notebook failed
    assert "| 01_ok | score | 42 |" in r.stdout  # ci params were applied, metrics gathered
    assert "FAILED" in r.stdout and "RuntimeError: boom" in r.stdout and "cell 2" in r.stdout
    assert (proj / "_runs" / "ci" / "results.md").exists()
    assert (proj / "_runs" / "ci" / "01_ok.ipynb").exists()
    r = run("course", "--only", "01_ok", cwd=proj)
    assert r.returncode == 0 and "1/1 notebooks ran" in r.stdout
    r = run("course", "--only", "01", cwd=proj)  # a number-like pattern stays a string
    assert r.returncode == 0 and "1/1 notebooks ran" in r.stdout
    r = run("course", "--only", "nothing-matches", cwd=proj)
    assert r.returncode == 2 and "nothing-matches" in r.stderr


# --- the brief's flags: each one reaches its config key -------------------------------------------------------------
from rdtcourse.cli import KR_TRAIN_FLAGS, SFT_TRAIN_FLAGS, config_of  # noqa: E402
from rdtcourse.core import apply_aliases  # noqa: E402

_STRINGS = {"arch": "ffn", "mode": "manual", "mixed_precision": "bf16", "lr_scheduler_type": "cosine"}
# sft flags that are refused without another one (an evaluation interval needs something to evaluate)
_SFT_NEEDS = {"eval_interval": ["--validation_file", "val.jsonl"]}


def _another(key: str, default):
    "A valid value other than the default, for any config key."
    name = key.split(".")[-1]
    if name in _STRINGS:
        return _STRINGS[name]
    if isinstance(default, bool):
        return not default
    if isinstance(default, int):
        return default + 3
    if isinstance(default, float):
        return default / 2 if default >= 0.5 else default + 0.25
    return 4 if default is None else "elsewhere"


def _value(cfg, key):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


@pytest.mark.parametrize(
    "verb, cls, flag",
    [("kr", "KRTrainConfig", f) for f in KR_TRAIN_FLAGS] + [("sft", "FlatArguments", f) for f in SFT_TRAIN_FLAGS],
)
def test_every_brief_flag_sets_its_config_key(verb, cls, flag):
    from rdtcourse import ddp, tow_sft

    job = getattr(ddp if verb == "kr" else tow_sft, cls)
    key = next(iter(apply_aliases(job, {flag: 0}).items()))
    key = key[0] if not isinstance(key[1], dict) else f"{key[0]}.{next(iter(key[1]))}"
    new = _another(key, _value(job(), key))
    for spelling in {f"--{flag}", "--" + flag.replace("_", "-")}:  # the brief's spelling and the kebab-case one
        cfg = config_of([verb, "train", spelling, str(new), *(_SFT_NEEDS.get(flag, []) if verb == "sft" else [])])
        assert _value(cfg, key) == new, (spelling, key)
