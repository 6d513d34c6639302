"""Chapter 10: the workflow (load, tokenize, train, validate, predict, test), exact resumes, and what DDP promises:
2 processes = 1 process with twice the batch, accumulation = one big batch, a killed rank stops the job and leaves a
loadable checkpoint, two "nodes" meet through torchrun's rendezvous. Also `gpt train` and `rdt train` under torchrun."""

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
import pytest
import torch
from conftest import TORCHRUN, free_port
from rdtcourse.core import ConfigError, load_checkpoint, replace_config, seed_everything
from rdtcourse.data import load_tokens, read_meta
from rdtcourse.ddp import (
    KRTrainConfig,
    SPLITS,
    build_model,
    model_config,
    evaluate_lm,
    chunk_losses,
    load_kr_model,
    load_reviews,
    ngram_losses,
    read_split,
    split_of,
    steps_per_epoch,
    syllable_tokenizer,
    to_jamo,
    token_dir,
    tokenize_reviews,
    train_kr,
)

CLI = str(Path(sys.executable).parent / "rdtcourse")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("kr")
    load_reviews(d)
    tokenize_reviews(d, model_name="bpe", vocab_size=300, mode="tokenizer")
    tokenize_reviews(d, mode="manual")
    return d


def cfg(data, out, **kw) -> KRTrainConfig:
    base = dict(
        data_dir=str(data),
        model_path=str(Path(out) / "m.pt"),
        chunk_size=16,
        n_embd=16,
        d_ff=32,
        n_layer=1,
        batch_size=4,
        dropout=0.0,
        n_tokens=0.002,
        lr=3e-3,
        tensorboard=False,
        device="cpu",
        save_every=1000,
        val_tokens=0.01,
    )
    return replace_config(KRTrainConfig(), {**base, **kw})  # lr, save_every...: the brief's names, aliases of optim.*


def weights(path) -> dict:
    return load_checkpoint(path)["model"]


def assert_close(a, b, atol=1e-5):
    "Weights equal up to the order of floating-point sums (which Adam can amplify to ~1e-6 where a gradient is near 0)."
    assert a.keys() == b.keys()
    for k in a:
        # atol=0: bit for bit
        same = torch.equal(a[k], b[k]) if atol == 0 else torch.allclose(a[k], b[k], rtol=0, atol=atol)
        assert same, (k, (a[k] - b[k]).abs().max().item())


def torchrun(*args, nproc=2, timeout=300, extra=()):
    return subprocess.run(
        [TORCHRUN, "--standalone", "--nproc_per_node", str(nproc), *extra, "-m", "rdtcourse", *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout,
    )


def flags(c: KRTrainConfig) -> list[str]:
    "`kr train` arguments for a config (every key, so a command line and an in-process run mean the same)."
    keys = {**{k: v for k, v in vars(c).items() if k != "optim"}, **{f"optim.{k}": v for k, v in vars(c.optim).items()}}
    text = lambda v: "null" if v is None else "''" if v == "" else v  # YAML's spellings of None and the empty string
    return [a for k, v in keys.items() for a in ("--set", f"{k}={text(v)}")]


# --- load and tokenize ----------------------------------------------------------------------------------------------


def test_load_writes_per_source_and_merged_splits_by_hash(data, tmp_path):
    names = {p.name for p in data.glob("*.txt")}
    assert {"nsmc_train.txt", "nsmc_val.txt", "nsmc_test.txt", "train.txt", "validation.txt", "test.txt"} <= names
    splits = {s: read_split(data, s) for s in SPLITS}
    assert sum(map(len, splits.values())) == 50_000 and 0.08 < len(splits["validation"]) / 50_000 < 0.12
    assert not set(splits["train"]) & set(splits["validation"]) and not set(splits["train"]) & set(splits["test"])
    assert all("\n" not in r and "\t" not in r and r for r in splits["train"][:1000])
    load_reviews(tmp_path)  # the same split again, byte for byte
    assert (tmp_path / "validation.txt").read_bytes() == (data / "validation.txt").read_bytes()
    assert split_of("굿", 0.1, 0.1) == split_of("굿", 0.1, 0.1)


@pytest.mark.parametrize(
    "kw, needle",
    [
        (dict(val_ratio=0), "val_ratio=0"),
        (dict(val_ratio=0.5, test_ratio=0.5), "sum to less"),
        (dict(sources=["yelp"]), "yelp"),
    ],
)
def test_load_refuses_bad_ratios_and_sources(tmp_path, kw, needle):
    with pytest.raises(ValueError, match=needle):
        load_reviews(tmp_path, **kw)
    assert not list(tmp_path.glob("*.txt"))


def test_syllables_jamo_and_token_files(data):
    tok = syllable_tokenizer(["맛있다 맛있다", "재미"], min_count=2)
    assert (
        tok.decode(tok.encode("맛있다")) == "맛있다" and tok.encode("재")[0] == tok.unk_token_id
    )  # seen once: unknown
    assert len(to_jamo("맛있다")) == 8  # ㅁㅏㅅ ㅇㅣㅆ ㄷㅏ
    for mode, name in (("tokenizer", "bpe"), ("manual", "syllables")):
        meta = read_meta(token_dir(data, mode))
        assert meta["tokenizer"] == name and set(meta["tokens"]) == {f"{s}.bin" for s in SPLITS}
        assert (token_dir(data, mode) / "tokenizer.json").is_file()
    eos = read_meta(token_dir(data, "tokenizer"))["tokens"]["validation.bin"]
    # at least one token per review plus its end-of-text
    assert eos > len(read_split(data, "validation"))


def test_tokenize_errors(data, tmp_path):
    with pytest.raises(FileNotFoundError, match="kr load"):
        tokenize_reviews(tmp_path, model_name="bpe")
    with pytest.raises(ValueError, match="chunk_size=100000000 is larger"):
        tokenize_reviews(data, model_name="bpe", vocab_size=300, chunk_size=10**8)
    with pytest.raises(ValueError, match="mode 'jamo'"):
        tokenize_reviews(data, mode="jamo")


# --- training, evaluation, baselines ----------------------------------------------------------------------------------


def test_loss_falls_below_the_unigram_and_the_model_is_usable(data, tmp_path):
    s = train_kr(cfg(data, tmp_path, n_tokens=0.02, eval_interval=10, dropout=0.1), bar=False)
    d = token_dir(data, "tokenizer")
    ng = ngram_losses(load_tokens(d / "train.bin"), load_tokens(d / "validation.bin"), 16, 300)
    assert ng["bigram"] < ng["unigram"] < ng["chance"] == pytest.approx(math.log(300))
    assert s["val_loss"] < ng["unigram"], (s, ng)
    model, tok, c = load_kr_model(tmp_path / "m.pt")  # every loader: (model, tokenizer, config)
    assert c.arch == "decoder" and len(tok) == 300 and load_checkpoint(tmp_path / "m.pt")["step"] == s["total_steps"]
    val = load_tokens(d / "validation.bin")
    exact = evaluate_lm(model, val, 16, 64)
    assert exact["loss"] == pytest.approx(float(chunk_losses(model, val, 16).mean()), rel=1e-5)
    assert (tmp_path / "m_ckpt" / "summary.json").is_file() and (tmp_path / "m_ckpt" / "config.yaml").is_file()


def test_resume_matches_uninterrupted(data, tmp_path):
    c = dict(dropout=0.1, save_every=5)  # dropout: the random streams must resume too
    train_kr(cfg(data, tmp_path / "straight", **c), bar=False)
    assert train_kr(cfg(data, tmp_path / "split", stop_at=12, **c), bar=False)["step"] == 12
    s = train_kr(cfg(data, tmp_path / "split", **c), bar=False)  # the same command again
    assert s["steps_run"] == s["total_steps"] - 12
    assert_close(weights(tmp_path / "straight" / "m.pt"), weights(tmp_path / "split" / "m.pt"), atol=0)
    assert train_kr(cfg(data, tmp_path / "split", **c), bar=False)["steps_run"] == 0  # nothing left to do
    with pytest.raises(ConfigError, match="n_embd 16 -> 32"):
        train_kr(cfg(data, tmp_path / "split", n_embd=32, **c), bar=False)
    with pytest.raises(ConfigError, match="seed 1337 -> 1"):
        train_kr(cfg(data, tmp_path / "split", seed=1, **c), bar=False)


def test_resume_refuses_another_number_of_processes(data, tmp_path):
    train_kr(cfg(data, tmp_path, stop_at=5, save_every=5), bar=False)
    from rdtcourse.core import save_checkpoint

    ck = tmp_path / "m_ckpt" / "ckpt_step_5.pt"
    state = load_checkpoint(ck)
    state["processes"] = 2
    save_checkpoint(ck, state)  # as if written by 2 processes
    with pytest.raises(ConfigError, match="processes 2 -> 1"):
        train_kr(cfg(data, tmp_path, save_every=5), bar=False)


def test_accumulation_matches_one_big_batch(data, tmp_path):
    big = cfg(data, tmp_path / "big", batch_size=8, stop_at=3, warmup_ratio=0)
    train_kr(big, bar=False)
    train_kr(cfg(data, tmp_path / "acc", batch_size=4, grad_accum=2, stop_at=3, warmup_ratio=0), bar=False)
    a, b = (
        weights(tmp_path / "big" / "m_ckpt" / "ckpt_step_3.pt"),
        weights(tmp_path / "acc" / "m_ckpt" / "ckpt_step_3.pt"),
    )
    assert_close(a, b)
    assert max((a[k] - _init(big)[k]).abs().max().item() for k in a) > 1e-3


def test_steps_per_epoch_and_bad_settings(data, tmp_path):
    c = cfg(data, tmp_path, n_tokens=30)
    assert steps_per_epoch(1000, c, 1) == 1000 // 4 and steps_per_epoch(1000, c, 2) == 500 // 4
    assert steps_per_epoch(1000, cfg(data, tmp_path, n_tokens=0.000640), 1) == 10  # 640 tokens / (4 x 16)
    with pytest.raises(ValueError, match="cannot give 2 process"):
        steps_per_epoch(7, c, 2)
    for bad in (dict(arch="rnn"), dict(mode="jamo"), dict(n_tokens=0), dict(n_embd=30, n_head=4), dict(dropout=1.0)):
        with pytest.raises(ValueError):
            cfg(data, tmp_path, **bad)
    with pytest.raises(FileNotFoundError, match="kr tokenize"):
        train_kr(cfg(tmp_path, tmp_path), bar=False)
    with pytest.raises(ValueError, match="larger than the data"):
        train_kr(cfg(data, tmp_path, chunk_size=10**8), bar=False)
    assert not (tmp_path / "m.pt").exists()


def test_ffn_is_a_bigram_model(data, tmp_path):
    model, _, _ = load_kr_model(_trained(data, tmp_path, arch="ffn"))
    x = torch.randint(0, 300, (2, 16))
    x2 = x.clone()
    x2[:, 0] = (x[:, 0] + 1) % 300
    # nothing flows between positions
    with torch.no_grad():
        assert torch.equal(model(x)[0][:, 1:], model(x2)[0][:, 1:])


def _trained(data, out, **kw) -> Path:
    train_kr(cfg(data, out, **kw), bar=False)
    return Path(out) / "m.pt"


# --- the command line -----------------------------------------------------------------------------------------------


def test_cli_workflow(data, tmp_path):
    d = tmp_path / "d"
    r = subprocess.run([CLI, "kr", "load", "--output_dir", d], capture_output=True, text=True, env=ENV)
    assert r.returncode == 0 and "nsmc: " in r.stdout, r.stderr
    r = subprocess.run(
        [CLI, "kr", "tokenize", "--data-dir", d, "--mode", "manual", "--chunk_size", "32"],
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert r.returncode == 0 and "syllables" in r.stdout, r.stderr
    mp = tmp_path / "out" / "gpt_model_ddp.pt"
    args = [
        "--data_dir",
        d,
        "--mode",
        "manual",
        "--chunk_size",
        32,
        "--d_model",
        16,
        "--d_ffn",
        32,
        "--n_layers",
        1,
        "--batch_size",
        4,
        "--n_tokens",
        0.002,
        "--model_path",
        mp,
        "--tensorboard",
        "false",
    ]
    r = subprocess.run([CLI, "kr", "train", *map(str, args)], capture_output=True, text=True, env=ENV)
    assert r.returncode == 0 and f"model in {mp}" in r.stdout, r.stderr
    r = subprocess.run(
        [CLI, "kr", "validate", "--model_path", mp, "--n_tokens", "0.01"], capture_output=True, text=True, env=ENV
    )
    assert r.returncode == 0 and "perplexity" in r.stdout and "decoder on 9,984 validation tokens" in r.stdout, (
        r.stdout + r.stderr
    )
    r = subprocess.run(
        [CLI, "kr", "predict", "--model_path", mp, "--prompt", "이 영화", "--max_token", "5"],
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert r.returncode == 0 and r.stdout.startswith("이 영화"), r.stderr
    r = subprocess.run(
        [CLI, "kr", "test", "--model_path", mp, "--samples", "2"], capture_output=True, text=True, env=ENV
    )
    assert r.returncode == 0 and "test split" in r.stdout and r.stdout.count(" | model: ") == 2, r.stderr


@pytest.fixture(scope="module")
def decoder(data, tmp_path_factory):
    return _trained(data, tmp_path_factory.mktemp("dec"))


@pytest.mark.parametrize(
    "args, needle",
    [
        (["train", "--arch", "rnn"], "arch 'rnn' must be one of decoder, ffn"),  # the config names the bad value
        (["train", "--mode", "jamo"], "mode 'jamo' must be one of tokenizer, manual"),
        (["train", "--n_layers", "two"], "'n_layer': Value 'two'"),
        (["train", "--data_dir", "/nope"], "no token files in /nope/tokens/tokenizer"),
        (
            ["train", "--data_dir", "DATA", "--chunk_size", "100000000", "--model_path", "OUT/m.pt"],
            "larger than the data",
        ),
        (["validate", "--model_path", "MODEL", "--d_model", "512"], "n_embd 512 (checkpoint: 16)"),
        (["validate", "--model_path", "MODEL", "--arch", "ffn"], "holds a decoder model"),
        (["predict", "--model_path", "MODEL", "--mode", "manual"], "trained on tokenizer tokens"),
        (["test", "--model_path", "OUT/none.pt"], "does not exist"),
        (["test", "--model_path", "MODEL", "--samples", "-1"], "argument --samples: -1 must be >= 0"),
        (["validate", "--model_path", "MODEL", "--data_dir", "OUT"], "run `rdtcourse kr tokenize"),
    ],
)
def test_cli_errors_are_one_line(data, decoder, tmp_path, args, needle):
    args = [
        str(a).replace("DATA", str(data)).replace("OUT", str(tmp_path)).replace("MODEL", str(decoder)) for a in args
    ]
    r = subprocess.run([CLI, "kr", *args], capture_output=True, text=True, env=ENV, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert needle in last and last.startswith("rdtcourse"), r.stderr
    if not needle.startswith("argument"):
        assert r.stderr.strip().count("\n") == 0, r.stderr  # ours: exactly one line
    assert not list(tmp_path.glob("*.pt"))


# --- several processes (torchrun) -------------------------------------------------------------------------------------


@pytest.mark.torchrun
def test_two_processes_match_one_with_twice_the_batch(data, tmp_path):
    one = cfg(data, tmp_path / "one", batch_size=8, stop_at=3, warmup_ratio=0)
    train_kr(one, bar=False)
    two = cfg(data, tmp_path / "two", batch_size=4, stop_at=3, warmup_ratio=0)
    r = torchrun("kr", "train", *flags(two))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "2 process(es) x 4" in r.stdout and r.stdout.count("training decoder") == 1  # rank 0 alone speaks
    a, b = (
        weights(tmp_path / "one" / "m_ckpt" / "ckpt_step_3.pt"),
        weights(tmp_path / "two" / "m_ckpt" / "ckpt_step_3.pt"),
    )
    assert_close(a, b)
    assert max((a[k] - _init(one)[k]).abs().max().item() for k in a) > 1e-3  # and they did move


def _init(c: KRTrainConfig) -> dict:
    "The weights a run of `c` starts from (the trainer seeds with c.seed before building the model)."
    seed_everything(c.optim.seed)
    return build_model(
        c.arch, model_config(300, c.chunk_size, c.n_embd, c.d_ff, c.n_layer, c.n_head, c.dropout)
    ).state_dict()


@pytest.mark.torchrun
def test_killed_rank_stops_the_job_and_leaves_a_loadable_checkpoint(data, tmp_path):
    # thousands of steps: it is still running when killed
    c = cfg(data, tmp_path, n_tokens=30, save_every=2)
    p = subprocess.Popen(
        [TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "rdtcourse", "kr", "train", *flags(c)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    ckpts = tmp_path / "m_ckpt"
    try:
        deadline = time.time() + 120
        while not list(ckpts.glob("ckpt_step_*.pt")) and time.time() < deadline and p.poll() is None:
            time.sleep(0.2)
        assert list(ckpts.glob("ckpt_step_*.pt")), "no checkpoint appeared"
        workers = _workers(str(tmp_path))
        assert len(workers) == 2, workers
        os.kill(workers[-1], signal.SIGKILL)  # one rank dies mid-run
        t0 = time.time()
        p.wait(timeout=60)
        assert p.returncode != 0 and time.time() - t0 < 60
    finally:
        if p.poll() is None:
            p.kill()
        p.communicate()
    assert not _workers(str(tmp_path))  # no rank left behind
    latest = max(ckpts.glob("ckpt_step_*.pt"), key=lambda q: int(q.stem.split("_")[-1]))
    state = load_checkpoint(latest)
    load_kr_model(latest)  # loads as a model too
    assert state["step"] >= 2 and all(torch.isfinite(v).all() for v in state["model"].values())


def _workers(marker: str) -> list[int]:
    """PIDs of the Python processes torchrun started for a run whose command line mentions `marker`
    (not torchrun itself)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        text = [c.decode(errors="replace") for c in cmd]
        if any(marker in c for c in text) and "kr" in text and not any(c.endswith("torchrun") for c in text[:2]):
            pids.append(int(d.name))
    return sorted(pids)


@pytest.mark.torchrun
def test_two_nodes_meet_through_the_rendezvous_and_train_together(data, tmp_path):
    one = cfg(data, tmp_path / "one", batch_size=8, stop_at=3, warmup_ratio=0)
    train_kr(one, bar=False)
    two = cfg(data, tmp_path / "nodes", batch_size=4, stop_at=3, warmup_ratio=0)
    port = free_port()
    node = [
        TORCHRUN,
        "--nnodes",
        "2",
        "--nproc_per_node",
        "1",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"127.0.0.1:{port}",
        "--rdzv-id",
        f"kr-{port}",
        "-m",
        "rdtcourse",
        "kr",
        "train",
        *flags(two),
    ]
    procs = [
        subprocess.Popen(node, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV) for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-1500:] for o in outs]
    assert sum("2 process(es) x 4" in o[0] for o in outs) == 1  # one rank 0 across both "nodes"
    assert_close(
        weights(tmp_path / "one" / "m_ckpt" / "ckpt_step_3.pt"),
        weights(tmp_path / "nodes" / "m_ckpt" / "ckpt_step_3.pt"),
    )


@pytest.mark.torchrun
def test_nproc_larger_than_the_work_fails_on_every_rank_and_is_said_once(data, tmp_path):
    c = cfg(data, tmp_path, chunk_size=150_000, batch_size=16)  # a handful of chunks: not one step for 2 x 16
    r = torchrun("kr", "train", *flags(c), timeout=120)
    # every rank stops (torchrun's report lists the failed ranks); the one line comes from rank 0 alone
    assert r.returncode != 0 and r.stderr.count("cannot give 2 process(es) one step") == 1, r.stderr[-2000:]
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.torchrun
def test_gpt_train_under_torchrun_resumes_exactly(tmp_path):
    d = tmp_path / "d"
    r = subprocess.run(
        [CLI, "gpt", "prepare", "--set", "corpus=tinyshakespeare", "--set", "tokenizer=char", "--set", f"data_dir={d}"],
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert r.returncode == 0, r.stderr
    common = [
        f"--set={k}={v}"
        for k, v in dict(
            train_bin=d / "train.bin",
            val_bin=d / "val.bin",
            tok_path=d / "tokenizer.json",
            max_steps=12,
            eval_interval=6,
            eval_iters=2,
            warmup_steps=2,
            n_layer=1,
            n_embd=32,
            n_head=2,
            block_size=32,
            batch_size=4,
            sample_max_new_tokens=5,
            tensorboard="false",
        ).items()
    ]
    outs = []
    for name, extra in (("straight", []), ("split", ["--set=stop_at=6"]), ("split", [])):
        r = torchrun("gpt", "train", "--device", "cpu", *common, f"--set=out_dir={tmp_path / name}", *extra)
        assert r.returncode == 0, r.stderr[-2000:]
        outs.append(r.stdout)
    assert "2 processes (gloo)" in outs[0] and "resuming from step 6" in outs[2]
    assert_close(
        weights(tmp_path / "straight" / "ckpt_step_12.pt"), weights(tmp_path / "split" / "ckpt_step_12.pt"), atol=0
    )


@pytest.mark.torchrun
def test_rdt_train_under_torchrun_resumes_exactly(tmp_path):
    sets = [
        "model.n_embd=32",
        "model.n_head=2",
        "model.n_encoder_layers=1",
        "model.d_ff=64",
        "model.gate_hidden_dim=16",
        "data.tokenizer=train",
        "data.vocab_size=400",
        "data.max_seq_length=24",
        "training.batch_size=8",
        "training.steps_per_epoch=3",
        "training.num_epochs=2",
        "training.eval_batches=1",
        "training.log_interval=1",
        "training.learning_rate=0.003",
        "training.device=cpu",
        "training.tensorboard=false",
        f"data.data_dir={tmp_path / 'data'}",
        "model.dropout=0.1",
    ]  # dropout: the random streams must resume too
    args = ["rdt", "train", "--preset", "cpu", *[a for s in sets for a in ("--set", s)]]
    r = torchrun(*args, "--set", f"training.checkpoint_dir={tmp_path / 'a'}")
    assert r.returncode == 0 and "2 processes (gloo)" in r.stdout, r.stderr[-2000:]
    r = torchrun(
        *args,
        "--set",
        f"training.checkpoint_dir={tmp_path / 'b'}",
        "--checkpoint",
        tmp_path / "a" / "ckpt_step_3.pt",
    )
    assert r.returncode == 0 and "resuming from step 3" in r.stdout, r.stderr[-2000:]
    assert_close(
        weights(tmp_path / "a" / "ckpt_step_6.pt"),
        weights(tmp_path / "b" / "ckpt_step_6.pt"),
        atol=0,
    )


@pytest.mark.torchrun
def test_under_torchrun_a_bad_value_is_said_once_and_ctrl_c_stops_every_rank_at_one_step(data, tmp_path):
    big = cfg(data, tmp_path / "big", batch_size=100000)
    r = torchrun("kr", "train", *flags(big))
    assert r.returncode != 0 and (r.stdout + r.stderr).count("rdtcourse: error: ") == 1, r.stderr[-3000:]
    assert not (tmp_path / "big").exists()  # nothing written
    # Ctrl-C reaches every process (the terminal signals the whole group); they stop together, one line from rank 0
    c = cfg(data, tmp_path / "int", n_tokens=30, save_every=5)
    with open(tmp_path / "int.log", "w") as log:
        p = subprocess.Popen(
            [TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "rdtcourse", "kr", "train", *flags(c)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=ENV,
            start_new_session=True,  # its own process group, as a terminal's foreground job
        )
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "int" / "m_ckpt").glob("ckpt_step_*.pt")):
        time.sleep(0.1)
    os.killpg(p.pid, signal.SIGINT)
    p.wait(timeout=120)
    out = (tmp_path / "int.log").read_text()
    lines = [line for line in out.splitlines() if "stopped by SIGINT at step" in line]
    assert len(lines) == 1 and lines[0].startswith("rdtcourse: "), out[-3000:]
    step = int(lines[0].split("at step ")[1].split(";")[0])
    assert (tmp_path / "int" / "m_ckpt" / f"ckpt_step_{step}.pt").exists()
    assert load_checkpoint(tmp_path / "int" / "m_ckpt" / f"ckpt_step_{step}.pt")["step"] == step
