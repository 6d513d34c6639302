"""Training: the loss falls, a stopped run resumes to exactly the weights of an uninterrupted one,
the CLI works end to end."""

import subprocess
import sys
from pathlib import Path
import pytest
import torch
from rdtcourse.core import ConfigError, load_checkpoint, make_scheduler, read_log, replace_config
from rdtcourse.training import (
    PrepareConfig,
    TrainConfig,
    bits_per_char,
    load_model,
    prepare,
    sample,
    train,
)

RDT = str(Path(sys.executable).parent / "rdtcourse")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return prepare(
        PrepareConfig(corpus="tinyshakespeare", tokenizer="char", data_dir=str(tmp_path_factory.mktemp("d")))
    )


def cfg(data, out, **kw):
    base = dict(
        train_bin=data["train_bin"],
        val_bin=data["val_bin"],
        tok_path=data["tok_path"],
        out_dir=str(out),
        block_size=32,
        batch_size=8,
        n_layer=2,
        n_head=2,
        n_embd=32,
        dropout=0.1,
        lr=3e-3,
        min_lr=3e-4,
        warmup_steps=5,
        max_steps=40,
        eval_interval=20,
        eval_iters=4,
        sample_max_new_tokens=20,
        device="cpu",
        tensorboard=False,
        log_interval=5,
    )
    return replace_config(TrainConfig(), {**base, **kw})  # the flat names are aliases of optim.*


def test_prepare_writes_bins_and_tokenizer(data):
    assert data["vocab_size"] == 65 and data["train_tokens"] + data["val_tokens"] == 1_115_394
    assert Path(data["tok_path"]).exists()


def test_loss_falls(data, tmp_path):
    s = train(cfg(data, tmp_path, max_steps=60, eval_interval=30), bar=False)
    first = load_checkpoint(tmp_path / "ckpt_step_30.pt")["metrics"]["val_loss"]
    assert s["val_loss"] < 3.3  # well below ln(65) = 4.17, the loss of a uniform guess
    assert s["val_loss"] <= first
    assert s["tokens_per_second"] > 0 and s["steps_run"] == 60


@pytest.mark.parametrize("stop_at", [20, 13])  # on an evaluation step, and between two
def test_resume_matches_uninterrupted(data, tmp_path, stop_at):
    train(cfg(data, tmp_path / "straight"), bar=False)
    train(cfg(data, tmp_path / "split", stop_at=stop_at), bar=False)  # "interrupted" after step stop_at
    s = train(cfg(data, tmp_path / "split"), bar=False)  # the same command again resumes
    assert s["steps_run"] == 40 - stop_at
    a = load_checkpoint(tmp_path / "straight" / "ckpt_step_40.pt")
    b = load_checkpoint(tmp_path / "split" / "ckpt_step_40.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["metrics"] == b["metrics"]
    assert train(cfg(data, tmp_path / "split"), bar=False)["steps_run"] == 0  # nothing left to do


def test_stop_at_between_evaluations_loses_nothing(data, tmp_path):
    s = train(cfg(data, tmp_path, stop_at=7, eval_interval=5), bar=False)
    assert s["step"] == 7 and (tmp_path / "ckpt_step_7.pt").exists()
    s = train(cfg(data, tmp_path, stop_at=12, eval_interval=5), bar=False)
    assert s["steps_run"] == 5
    steps = [r["step"] for r in read_log(tmp_path) if "train/loss" in r]
    assert steps == sorted(set(steps))  # no step logged twice across the resume


def test_resume_refuses_other_dimensions_and_follows_a_longer_schedule(data, tmp_path):
    train(cfg(data, tmp_path, max_steps=20), bar=False)
    with pytest.raises(ConfigError, match="n_layer 2 -> 3"):
        train(cfg(data, tmp_path, max_steps=20, n_layer=3), bar=False)
    s = train(cfg(data, tmp_path, max_steps=40), bar=False)  # continue: the schedule now spans 40 steps
    assert s["steps_run"] == 20
    lrs = [r["lr"] for r in read_log(tmp_path) if "lr" in r and r["step"] > 20]
    assert lrs == sorted(lrs, reverse=True) and max(lrs) < 3e-3  # still decaying, not warming up again


@pytest.mark.parametrize(
    "bad, key",
    [
        ({"log_interval": 0}, "log_interval"),
        ({"grad_accum": 0}, "grad_accum"),
        ({"eval_iters": 0}, "eval_iters"),
        ({"warmup_steps": 50, "max_steps": 40}, "max_steps"),
    ],
)
def test_config_validation(data, tmp_path, bad, key):
    with pytest.raises(ValueError, match=key):
        cfg(data, tmp_path, **bad)


def test_sample_from_checkpoint(data, tmp_path):
    train(cfg(data, tmp_path, max_steps=20, eval_interval=20, sample_every_eval=False), bar=False)
    m, tok, c = load_model(tmp_path / "best.pt")
    assert c.optim.max_steps == 20 and c.n_layer == 2  # the loader's third value: the run's config
    text = sample(m, tok, "ROMEO:", max_new_tokens=15, seed=0)
    assert text.startswith("ROMEO:") and len(text) == len("ROMEO:") + 15
    assert text == sample(m, tok, "ROMEO:", max_new_tokens=15, seed=0)


def test_schedule_and_bits():
    opt = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters(), lr=1.0)
    with pytest.raises(ValueError, match="max_steps"):
        make_scheduler(opt, 10, 10, 0.1, 1.0)
    assert bits_per_char(2 * 0.6931471805599453, 10, 20) == pytest.approx(1.0)


def test_cli_prepare_train_sample(tmp_path):
    d = tmp_path / "data"
    r = subprocess.run(
        [
            RDT,
            "gpt",
            "prepare",
            "--set",
            "corpus=ko-chatbot",
            "--set",
            "tokenizer=bpe",
            "--set",
            "vocab_size=300",
            "--set",
            f"data_dir={d}",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert (d / "train.bin").exists() and "tokens" in r.stdout
    common = [
        "--set",
        f"train_bin={d}/train.bin",
        "--set",
        f"val_bin={d}/val.bin",
        "--set",
        f"tok_path={d}/tokenizer.json",
        "--set",
        f"out_dir={tmp_path}/out",
        "--set",
        "max_steps=6",
        "--set",
        "eval_interval=3",
        "--set",
        "eval_iters=2",
        "--set",
        "warmup_steps=1",
        "--set",
        "n_layer=1",
        "--set",
        "n_embd=16",
        "--set",
        "n_head=2",
        "--set",
        "block_size=16",
        "--set",
        "batch_size=2",
        "--set",
        "sample_max_new_tokens=5",
    ]
    r = subprocess.run(
        [RDT, "gpt", "train", "--preset", "gpt-cpu", "--device", "cpu", *common], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert "trained steps 0->6" in r.stdout and (tmp_path / "out" / "best.pt").exists()
    assert (tmp_path / "out" / "config.yaml").read_text().count("n_layer: 1") == 1
    r = subprocess.run([RDT, "gpt", "train", "--preset", "gpt-cpu", *common], capture_output=True, text=True)
    assert r.returncode == 0 and "resuming from step 6" in r.stdout and "nothing to do" in r.stdout
    r = subprocess.run(
        [
            RDT,
            "gpt",
            "sample",
            "--checkpoint",
            f"{tmp_path}/out/best.pt",
            "--prompt",
            "안녕",
            "--max-new-tokens",
            "5",
            "--seed",
            "0",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0 and r.stdout.startswith("안녕"), r.stderr


@pytest.mark.parametrize(
    "args, needle",
    [
        (["gpt", "train", "--set", "n_layerz=2"], "n_layerz"),
        (["gpt", "train", "--set", "lr=fast"], "lr"),
        (["gpt", "train", "--preset", "gpt-huge"], "gpt-huge"),
        (["gpt", "train", "--set", "train_bin=/nope/train.bin"], "/nope/train.bin"),
        (["gpt", "prepare", "--set", "corpus=shakespear"], "shakespear"),
        (["gpt", "sample", "--checkpoint", "/nope.pt"], "/nope.pt"),
        (["gpt", "sample", "--checkpoint", "/etc/hostname"], "/etc/hostname"),
        (["gpt", "prepare", "--set", "tokenizer=/etc/hostname"], "/etc/hostname"),
        (["gpt", "train", "--set", "[x=1"], "[x=1"),
        (["gpt", "train", "--device", "cpu:x"], "cpu:x"),
        (["gpt", "train", "--set", "log_interval=0"], "log_interval"),
        (["course", "--set", "timeout=-1"], "timeout"),
    ],
)
def test_cli_errors_are_one_line(args, needle):
    r = subprocess.run([RDT, *args], capture_output=True, text=True)
    assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0, r.stderr
