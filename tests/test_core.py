"""Core plumbing: configs, checkpoints, RNG, device, metrics."""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
import pytest
import torch
import torch.nn as nn
from rdtcourse.core import (
    ConfigError,
    CheckpointError,
    Checkpointer,
    OptimConfig,
    atomic_path,
    get_device,
    make_optimizer,
    load_checkpoint,
    load_config,
    rng_state,
    save_checkpoint,
    save_config,
    save_metrics,
    seed_everything,
    set_rng_state,
    RunLogger,
    read_log,
)


@dataclass
class Cfg:
    lr: float = 3e-4
    steps: int = 10
    name: str = "run"
    flag: bool = False


def test_config_layers_apply_in_order(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "small.yaml").write_text("steps: 5\nname: preset\n")
    (tmp_path / "a.yaml").write_text("steps: 7\nlr: 1\n")
    (tmp_path / "b.yaml").write_text("name: override\n")
    cfg = load_config(
        Cfg,
        preset="small",
        config=tmp_path / "a.yaml",
        override=tmp_path / "b.yaml",
        sets=["flag=true"],
        presets_dir=tmp_path / "p",
    )
    assert cfg == Cfg(lr=1.0, steps=7, name="override", flag=True)
    assert isinstance(cfg.lr, float)


@pytest.mark.parametrize("sets, key", [(["stesp=3"], "stesp"), (["steps=many"], "steps"), (["steps=2.5"], "steps")])
def test_config_errors_name_the_key_in_one_line(sets, key):
    with pytest.raises(ConfigError) as e:
        load_config(Cfg, sets=sets)
    assert key in str(e.value) and "\n" not in str(e.value)


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Cfg, config=tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("steps: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Cfg, config=tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(Cfg, config=tmp_path / "list.yaml")
    (tmp_path / "unknown.yaml").write_text("lr: 0.1\nwarmup: 3\n")
    with pytest.raises(ConfigError, match="warmup"):
        load_config(Cfg, config=tmp_path / "unknown.yaml")
    with pytest.raises(ConfigError, match="key=value"):
        load_config(Cfg, sets=["steps"])
    with pytest.raises(ConfigError, match="preset 'nope' not found"):
        load_config(Cfg, preset="nope", presets_dir=tmp_path)


def test_saved_config_round_trips(tmp_path):
    cfg = Cfg(lr=0.5, steps=3)
    p = save_config(cfg, tmp_path)
    assert load_config(Cfg, config=p) == cfg


def test_device_choice():
    assert get_device("cpu") == torch.device("cpu")
    assert get_device().type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="not one of"):
        get_device("gpu0")


def test_rng_state_round_trip_through_a_checkpoint(tmp_path):
    seed_everything(3)
    save_checkpoint(tmp_path / "r.pt", {"rng": rng_state()})
    a = torch.rand(4)
    set_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"])
    assert torch.equal(a, torch.rand(4))


def _setup():
    seed_everything(0)
    m = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.3), nn.Linear(8, 1))
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 / (1 + s))
    return m, opt, sched


def _train(m, opt, sched, n):
    for _ in range(n):
        loss = m(torch.randn(8, 4)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def test_resume_matches_uninterrupted_run(tmp_path):
    m, opt, sched = _setup()
    _train(m, opt, sched, 8)
    ref = [p.detach().clone() for p in m.parameters()]

    m, opt, sched = _setup()
    _train(m, opt, sched, 5)
    ck = Checkpointer(tmp_path, keep_last=2)
    ck.save(m, opt, sched, step=5, config=Cfg(), metrics={"val_loss": 1.0})
    m2, opt2, sched2 = _setup()
    torch.rand(100)  # disturb the RNG: resume must restore it
    state = Checkpointer(tmp_path).resume(m2, opt2, sched2)
    assert state["step"] == 5 and state["config"]["name"] == "run"
    assert sched2.last_epoch == 5
    _train(m2, opt2, sched2, 3)
    for a, b in zip(ref, m2.parameters()):
        assert torch.equal(a, b.detach())


def test_keep_last_and_best(tmp_path):
    m = nn.Linear(2, 2)
    ck = Checkpointer(tmp_path, keep_last=2)
    for step, loss in [(10, 3.0), (20, 1.0), (30, 2.0), (40, 2.5)]:
        ck.save(m, step=step, epoch=step // 20, metrics={"val_loss": loss})
    assert [p.name for p in ck.checkpoints()] == ["ckpt_step_30.pt", "ckpt_step_40.pt"]
    assert load_checkpoint(ck.best_path)["step"] == 20 and ck.best_path.name == "best.pt"
    assert load_checkpoint(ck.latest())["epoch"] == 2  # extra fields travel in the state, not in the name
    # a new Checkpointer on the same folder remembers the best value
    assert Checkpointer(tmp_path).best_value == 1.0
    assert Checkpointer(tmp_path / "empty").resume(m) is None


class _FakeDist:
    "Two ranks as `Checkpointer` sees them, played by one process: what each rank does is recorded."

    def __init__(self, rank):
        self.rank, self.enabled, self.calls = rank, True, []

    @property
    def is_main(self):
        return self.rank == 0

    def gather_rng(self):
        self.calls.append("gather_rng")
        return [{"rank": 0}, {"rank": 1}]

    def barrier(self):
        self.calls.append("barrier")

    def restore_rng(self, states, seed, step):
        self.calls.append(("restore_rng", len(states), seed, step))
        return True

    def print(self, *a):
        pass


def test_checkpointer_does_the_multi_process_sequence(tmp_path):
    m = nn.Linear(2, 2)
    main, other = _FakeDist(0), _FakeDist(1)
    assert Checkpointer(tmp_path / "b", dist=other).save(m, step=3) is None  # rank 1 writes nothing
    assert not list((tmp_path / "b").glob("*.pt"))
    path = Checkpointer(tmp_path / "a", dist=main, seed=5).save(m, step=3, metrics={"val_loss": 1.0})
    assert path.name == "ckpt_step_3.pt" and (tmp_path / "a" / "best.pt").exists()
    assert main.calls == other.calls == ["gather_rng", "barrier"]  # every rank takes part in both collectives
    assert load_checkpoint(path)["extra"]["rng_ranks"] == [{"rank": 0}, {"rank": 1}]
    resumer = _FakeDist(1)
    state = Checkpointer(tmp_path / "a", dist=resumer, seed=5).resume(m)
    assert state["step"] == 3 and resumer.calls == [("restore_rng", 2, 5, 3)]


def test_resume_rule_newest_unless_a_checkpoint_is_named(tmp_path):
    m = nn.Linear(2, 2)
    ck = Checkpointer(tmp_path, keep_last=0)
    for step in (1, 2, 3):
        ck.save(m, step=step)
    assert ck.resume(m)["step"] == 3  # the folder's newest by itself
    assert ck.resume(m, path=tmp_path / "ckpt_step_1.pt")["step"] == 1  # --checkpoint overrides


def test_a_save_ends_a_later_branch(tmp_path):
    m = nn.Linear(2, 2)
    ck = Checkpointer(tmp_path, keep_last=0)
    for step in (1, 2, 3):
        ck.save(m, step=step)
    ck.save(m, step=2)  # resumed from step 1 (--checkpoint) and saved again: steps 3 of the old branch go
    assert [p.name for p in ck.checkpoints()] == ["ckpt_step_1.pt", "ckpt_step_2.pt"]
    assert ck.resume(m)["step"] == 2


def test_atomic_path_says_when_nothing_was_written(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing was written"):
        with atomic_path(tmp_path / "out.txt"):
            pass
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_replaces_files_and_folders_whole(tmp_path):
    target = tmp_path / "model"
    for n in (1, 2):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "weights.txt").write_text(str(n))
    assert (target / "weights.txt").read_text() == "2" and sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "weights.txt").write_text("half")
            raise RuntimeError("crash")
    assert (target / "weights.txt").read_text() == "2" and sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@dataclass
class _Job:
    batch_size: int = 16  # a job's own knob
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3, min_lr=1e-4, max_steps=100))


@pytest.mark.parametrize(
    "alias, key, value",
    [
        ("learning_rate", "lr", 0.002),
        ("lr", "lr", 0.002),
        ("max_train_steps", "max_steps", 7),
        ("iterations", "max_steps", 7),
        ("gradient_accumulation_steps", "grad_accum", 3),
        ("max_grad_norm", "grad_clip", 0.5),
        ("clip_grad_norm", "grad_clip", 0.5),
        ("num_epochs", "epochs", 4),
        ("num_train_epochs", "epochs", 4),
        ("checkpoint_dir", "out_dir", "elsewhere"),
        ("output_dir", "out_dir", "elsewhere"),
        ("keep_last_n_checkpoints", "keep_last", 5),
    ],
)
def test_the_briefs_names_are_aliases(alias, key, value):
    cfg = load_config(_Job, sets=[f"{alias}={value}"])
    assert getattr(cfg.optim, key) == value


def test_aliases_leave_real_keys_alone_and_unknown_keys_fail():
    assert load_config(_Job, sets=["batch_size=8"]).batch_size == 8
    with pytest.raises(ConfigError, match="learning_rat"):
        load_config(_Job, sets=["learning_rat=1"])
    with pytest.raises(ConfigError, match="trainin"):  # under a section the job lacks, an alias stays unknown
        load_config(_Job, sets=["trainin.learning_rate=1"])
    with pytest.raises(ConfigError, match="optim.warmup_ratio"):
        load_config(_Job, sets=["warmup_ratio=1.5"])


def test_make_optimizer_decays_matrices_only_or_all():
    net = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    groups = make_optimizer(net, 1e-3, 0.1).param_groups
    assert [(len(g["params"]), g["weight_decay"]) for g in groups] == [(1, 0.1), (3, 0.0)]
    (g,) = make_optimizer(net, 1e-3, 0.1, decay="all").param_groups
    assert len(g["params"]) == 4 and g["weight_decay"] == 0.1
    with pytest.raises(ConfigError, match="decay='some'"):
        make_optimizer(net, 1e-3, decay="some")


def test_crash_mid_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    m = nn.Linear(2, 2)
    ck = Checkpointer(tmp_path)
    good = ck.save(m, step=1)

    def dying_save(obj, f, *a, **k):
        Path(f).write_bytes(b"\x80partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(OSError):
        ck.save(m, step=2)
    monkeypatch.undo()
    assert ck.latest() == good
    assert load_checkpoint(good)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_step_1.pt"]


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_weights_only_refuses_pickled_objects(tmp_path):
    p = tmp_path / "evil.pt"
    torch.save({"model": Evil()}, p)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(p)


@pytest.mark.parametrize("kind", ["missing", "junk", "text", "empty", "folder", "tensor", "list"])
def test_unreadable_checkpoints_raise_checkpoint_error(tmp_path, kind):
    p = tmp_path / "ck.pt"
    if kind == "junk":
        p.write_bytes(b"not a checkpoint")
    elif kind == "text":
        p.write_text("hello, I am a text file\n")
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "folder":
        p.mkdir()
    elif kind == "tensor":
        torch.save(torch.zeros(3), p)
    elif kind == "list":
        torch.save([1, 2], p)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_nan_metric_never_becomes_best(tmp_path):
    m = nn.Linear(2, 2)
    ck = Checkpointer(tmp_path)
    ck.save(m, step=1, metrics={"val_loss": float("nan")})
    assert ck.best_value is None and not ck.best_path.exists()
    ck.save(m, step=2, metrics={"val_loss": 2.0})
    assert ck.best_value == 2.0 and load_checkpoint(ck.best_path)["step"] == 2


@pytest.mark.parametrize("sets", [["[x=1"], ["name=[1"], ["name=${nope}"]])
def test_malformed_set_values_are_config_errors(sets):
    with pytest.raises(ConfigError) as e:
        load_config(Cfg, sets=sets)
    assert "\n" not in str(e.value)


def test_unreadable_config_files(tmp_path):
    with pytest.raises(ConfigError, match="not a file"):
        load_config(Cfg, config=tmp_path)
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ConfigError, match="bin.yaml"):
        load_config(Cfg, config=tmp_path / "bin.yaml")


def test_device_names():
    for bad in ("cpu:x", "cuda0", "gpu"):
        with pytest.raises(ValueError, match="not one of"):
            get_device(bad)


def test_resume_log_has_no_duplicate_steps(tmp_path):
    with RunLogger(tmp_path, bar=False, tensorboard=False) as lg:
        for s in range(1, 8):
            lg.log(s, **{"train/loss": 1.0})
    with RunLogger(tmp_path, initial=5, bar=False, tensorboard=False) as lg:  # resumed from a step-5 checkpoint
        for s in range(6, 9):
            lg.log(s, **{"train/loss": 0.5})
    assert [r["step"] for r in read_log(tmp_path)] == list(range(1, 9))


def test_metrics_must_be_flat_numbers(tmp_path):
    save_metrics(tmp_path, {"loss": 1.5, "steps": 3}, reference={"loss": 1.88})
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"loss": 1.5, "steps": 3}
    with pytest.raises(ValueError, match="not numbers"):
        save_metrics(tmp_path, {"loss": "low"})


def test_run_logger_writes_jsonl_and_tensorboard(tmp_path):
    with RunLogger(tmp_path, total=3, bar=False) as lg:
        for s in (1, 2, 3):
            lg.progress(s, loss=1.0 / s)
            lg.log(s, **{"train/loss": 1.0 / s, "lr": 0.1})
    recs = read_log(tmp_path)
    assert [r["step"] for r in recs] == [1, 2, 3] and recs[-1]["train/loss"] == pytest.approx(1 / 3)
    assert list((tmp_path / "tb").glob("events.out.tfevents*"))


def test_headless_progress_prints_one_final_line(monkeypatch, capsys):
    from rdtcourse.core import progress, FinalLineBar

    monkeypatch.setenv("RDTCOURSE_BAR", "text")
    bar = progress(total=500, desc="steps")
    assert isinstance(bar, FinalLineBar)
    for _ in range(500):
        bar.update(1)
        bar.set_postfix(loss=1.5)
    assert capsys.readouterr().out == ""  # nothing while the loop runs
    bar.close()
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("steps: 100%") and "500/500" in out and "loss=1.5" in out
    for _ in progress(range(10), leave=False):
        pass  # a bar that should vanish leaves nothing
    for _ in progress(range(10), disable=True):
        pass
    assert capsys.readouterr().out == ""
    monkeypatch.delenv("RDTCOURSE_BAR")
    assert not isinstance(progress(range(3)), FinalLineBar)  # live bars in terminals and JupyterLab


def test_show_widget_headless_shows_a_snapshot(monkeypatch):
    import ipywidgets as W
    import IPython.display
    from rdtcourse.core import show_widget

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    monkeypatch.setenv("RDTCOURSE_BAR", "text")
    show_widget(W.IntSlider(), snapshot="<p>state 0</p>")
    assert "<p>state 0</p>" in shown[-1].data and "JupyterLab" in shown[-1].data
    monkeypatch.delenv("RDTCOURSE_BAR")
    w = W.IntSlider()
    show_widget(w)
    assert shown[-1] is w


def test_interval_helpers_agree_with_bootstrap_ci():
    import numpy as np
    from rdtcourse.core import bootstrap_ci, ci_half, fmt_ci, paired_verdict

    v = np.random.default_rng(0).random(500)
    m, lo, hi = bootstrap_ci(v)
    assert lo < m < hi and abs(ci_half(v) - (hi - lo) / 2) < 1e-12
    assert fmt_ci(v) == f"{m:.3f} ±{(hi - lo) / 2:.3f}"
    assert ci_half(np.full(50, 0.3)) == 0  # no spread, no interval
    assert paired_verdict(v + 0.1, v)["verdict"] == "beats" and paired_verdict(v, v + 0.1)["verdict"] == "loses to"


def test_average_grads_keeps_unused_parameters_without_gradients(tmp_path, monkeypatch):
    import torch.distributed as tdist
    from rdtcourse.core import Distributed

    tdist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)  # no network
    try:
        d = Distributed("cpu")
        d.world_size = 2  # as if a second rank sent zeros for every gradient
        used, unused = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
        model = torch.nn.ModuleDict({"used": used, "unused": unused})
        used(torch.ones(1, 3)).sum().backward()
        before = used.weight.grad.clone()
        d.average_grads(model)
        assert torch.equal(used.weight.grad, before / 2) and unused.weight.grad is None and unused.bias.grad is None
    finally:
        tdist.destroy_process_group()


def test_distributed_puts_the_thread_count_back():
    from rdtcourse.core import Distributed

    n = torch.get_num_threads()
    with Distributed("cpu", threads=n + 1):
        assert torch.get_num_threads() == n + 1
    assert torch.get_num_threads() == n
    with pytest.raises(RuntimeError):
        with Distributed("cpu", threads=n + 1):
            raise RuntimeError("a failed run")
    assert torch.get_num_threads() == n  # put back on an error too


def test_a_full_disk_is_an_os_error_naming_the_file_and_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    import errno
    import shutil

    import rdtcourse.core as core

    good = core.save_checkpoint(tmp_path / "ckpt_step_1.pt", {"step": 1})

    def full(*a, **k):  # what torch's zip writer raises when a write comes up short
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(core.torch, "save", full)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9, 0))
    with pytest.raises(OSError) as e:
        core.save_checkpoint(good, {"step": 2})
    assert e.value.errno == errno.ENOSPC and str(good) in str(e.value)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt_step_1.pt"]  # no temp file; the old one intact
    monkeypatch.undo()
    assert core.load_checkpoint(good)["step"] == 1


def test_outputs_follow_the_umask(tmp_path):
    from rdtcourse.core import atomic_write_text, save_checkpoint

    old = os.umask(0o007)
    try:
        save_checkpoint(tmp_path / "c.pt", {"step": 1})
        atomic_write_text(tmp_path / "t.txt", "x")
    finally:
        os.umask(old)
    assert {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()} == {"c.pt": 0o660, "t.txt": 0o660}


def test_a_folder_swap_killed_halfway_is_put_back_at_the_next_start(tmp_path):
    from rdtcourse.core import RunFolder

    # atomic_path moved the old `tokenizer/` aside and was killed before the new one took its place
    aside = tmp_path / ".tokenizer.4242.0a1b2c3d.tmp.old"
    aside.mkdir()
    (aside / "vocab.txt").write_text("the only copy")
    (tmp_path / ".ckpt_step_9.pt.4242.0a1b2c3d.tmp").write_bytes(b"half")  # a file write killed halfway
    with RunFolder(tmp_path, signals=False):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokenizer"]
    assert (tmp_path / "tokenizer" / "vocab.txt").read_text() == "the only copy"


def test_a_failed_start_removes_the_folders_it_made(tmp_path):
    from rdtcourse.core import ConfigError, RunFolder

    with pytest.raises(ConfigError):
        with RunFolder(tmp_path / "a" / "b" / "run", signals=False):
            raise ConfigError("found after the folder was taken")
    assert list(tmp_path.iterdir()) == []
