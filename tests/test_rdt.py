"""RDT (chapter 6): nested masks, the model's steps and gate, the chain loss, training with checkpoints that resume
exactly, the guide's configs, rdt-infer, the evaluation and the stepper's logic."""

import subprocess
import sys
from pathlib import Path
import numpy as np
import pytest
import torch
from rdtcourse.core import ConfigError, load_checkpoint, read_log
from rdtcourse.rdt import RDT, RDTModelConfig, ChainSettings, MaskingStrategy, chain_loss, mask_predict, mlm_loss
from rdtcourse.rdt import random_mask
from rdtcourse.rdt_train import (
    RDT_PRESETS,
    clean_wikitext,
    denoise,
    denoise_trace,
    evaluate_restoration,
    restoration_scores,
    format_result,
    load_rdt,
    load_rdt_config,
    render_step,
    train_rdt,
)

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.xdist_group("rdt")  # one worker trains the shared tiny model once


def tiny_model(**kw):
    cfg = RDTModelConfig(**{**dict(n_embd=32, n_head=4, n_encoder_layers=2, d_ff=64, dropout=0.0), **kw})
    return RDT(cfg, 50, mask_token_id=4, max_seq_length=16)  # built from its config, like GPT(cfg)


@pytest.mark.parametrize("name", MaskingStrategy.KINDS)
def test_masks_nest_from_clean_to_all(name):
    m = MaskingStrategy(name, total_steps=7).masks(5, 40, torch.Generator().manual_seed(0))
    assert m.shape == (8, 5, 40)
    assert (m[:-1] <= m[1:]).all()  # hidden at level k-1 => hidden at level k
    assert not m[0].any() and m[-1].all()


def test_linear_level_k_hides_k_tenths():
    m = MaskingStrategy("linear", 10).masks(3, 100)
    assert [int(m[k, 0].sum()) for k in range(11)] == [10 * k for k in range(11)]


def test_unknown_strategy_lists_valid_ones():
    with pytest.raises(ValueError, match="'zigzag'.*linear, exponential, random, scheduled"):
        MaskingStrategy("zigzag")


def test_random_mask_exact_count():
    m = random_mask(4, 50, 0.3)
    assert m.sum(1).tolist() == [15] * 4


def test_step_shapes_and_recursion_depth():
    model, x = tiny_model(), torch.randint(5, 50, (3, 16))
    s = model(x)
    assert s.h.shape == (3, 16, 32) and s.logits.shape == (3, 16, 50) and s.gate.shape == (3,)
    assert ((s.gate > 0) & (s.gate < 1)).all()
    chain = model.recursive_forward(x, 5)
    assert len(chain) == 5 and not torch.equal(chain[0].h, chain[1].h)
    assert tiny_model(decoder_type="transformer", n_decoder_layers=2)(x).logits.shape == (3, 16, 50)


def test_parameters_do_not_grow_with_steps():
    a, b = tiny_model(), tiny_model(n_encoder_layers=2)
    assert a.num_params() == b.num_params()  # steps reuse one encoder


def test_inference_keeps_visible_tokens_and_obeys_threshold_and_max_steps():
    model, x = tiny_model(), torch.randint(5, 50, (2, 16))
    xm = x.clone()
    xm[:, ::3] = 4
    once = model.inference(xm, threshold=1.0, max_steps=9)  # every gate value is below 1: stop after one step
    assert once.steps.tolist() == [1, 1] and once.gates.shape == (2, 1)
    never = model.inference(xm, threshold=None, max_steps=6)  # no gate: always max_steps
    assert never.steps.tolist() == [6, 6]
    visible = xm != 4
    assert torch.equal(never.tokens[visible], x[visible]) and not (never.tokens == 4).any()


def test_too_long_input_is_a_clear_error():
    with pytest.raises(ValueError, match="17 tokens is longer than max_seq_length=16"):
        tiny_model()(torch.zeros(1, 17, dtype=torch.long))


def test_model_config_errors():
    with pytest.raises(ValueError, match="'linear' or 'transformer'"):
        RDTModelConfig(decoder_type="lstm")
    with pytest.raises(ValueError, match="divisible"):
        RDTModelConfig(n_embd=100, n_head=8)


def test_chain_loss_trains_every_part_and_falls():
    torch.manual_seed(0)
    model = tiny_model()
    x = torch.randint(5, 50, (8, 16))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    masking, losses = MaskingStrategy("linear", 5), []
    for i in range(60):
        cl = chain_loss(model, x, masking, ChainSettings(max_chain_length=2, max_start=0))
        opt.zero_grad()
        cl.total.backward()
        if i == 0:
            for name in ("encoder.0.attn.c_attn.weight", "tok_emb.weight", "gate_mlp.1.weight"):
                assert dict(model.named_parameters())[name].grad.abs().sum() > 0, name
        opt.step()
        losses.append((cl.recon.item(), cl.gate.item()))
    assert sum(l[0] for l in losses[-10:]) / 10 < sum(l[0] for l in losses[:10]) / 10 - 0.5


def test_chain_loss_levels_and_bad_arguments():
    model, x = tiny_model(), torch.randint(5, 50, (4, 16))
    cl = chain_loss(model, x, MaskingStrategy("linear", 10), level=4, start=1, length=3)
    assert cl.levels.tolist() == [4] * 4 and (cl.start, cl.length) == (1, 3)
    with pytest.raises(ValueError, match="length"):
        chain_loss(model, x, MaskingStrategy("linear", 10), start=9, length=2)
    with pytest.raises(ValueError, match="'revealed' or 'masked'"):
        chain_loss(model, x, MaskingStrategy("linear", 10), ChainSettings(recon_on="all"))
    assert chain_loss(model, x, MaskingStrategy("linear", 10), ChainSettings(recon_on="masked"), 5, 0, 1).recon > 0


def test_clean_wikitext():
    raw = " = Title = \n The <unk> @-@ like 1 @,@ 000 tons , 2 @.@ 5 m . \n \n"
    assert clean_wikitext(raw) == "The [UNK]-like 1,000 tons , 2.5 m ."


# --- configs -------------------------------------------------------------------------------------------------------


def test_guide_configs():
    assert {p.stem for p in RDT_PRESETS.glob("*.yaml")} == {"base", "experiment", "small", "medium", "large", "cpu"}
    base = load_rdt_config(config="base.yaml")  # the packaged file, found by name as in the guide
    assert (base.model.n_embd, base.model.n_encoder_layers, base.model.decoder_type) == (512, 6, "linear")
    assert (base.training.max_chain_length, base.training.total_steps, base.training.batch_size) == (5, 10, 32)
    assert (
        base.optim.lr == 1e-4  # the guide's training.learning_rate, mapped by ALIASES
        and base.data.max_seq_length == 512
        and base.data.dataset_name == "wikitext-2"
    )
    exp = load_rdt_config(config="base.yaml", override="experiment.yaml")
    assert (exp.model.n_embd, exp.model.n_encoder_layers, exp.data.dataset_name) == (768, 12, "wikitext-103")
    assert load_rdt_config("small").model.d_ff == 1024 and load_rdt_config("large").model.n_head == 12


@pytest.mark.parametrize(
    "sets, match",
    [
        (["training.masking=zigzag"], "zigzag"),
        (["model.d_modle=3"], "d_modle"),
        (["training.batch_size=many"], "batch_size"),
        (["training.num_epochs=0"], "epochs"),
        (["optim.save_interval=5"], "not used by rdt-train"),
    ],
)
def test_config_errors_name_the_key(sets, match):
    with pytest.raises((ConfigError, ValueError), match=match):
        load_rdt_config("cpu", sets=sets)


# --- training, checkpoints, resume ----------------------------------------------------------------------------------

TINY = [
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
    "training.keep_last_n_checkpoints=2",
    "training.learning_rate=0.003",
    "training.device=cpu",
    # the preset has none; the resume tests need dropout's random stream to continue exactly too
    "model.dropout=0.1",
]


def tiny_cfg(tmp, data_dir, *more):
    return load_rdt_config("cpu", sets=[*TINY, f"training.checkpoint_dir={tmp}", f"data.data_dir={data_dir}", *more])


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("rdtdata")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("rdtrun")
    summary = train_rdt(tiny_cfg(out, data_dir), bar=False)
    return out, summary


def test_training_writes_the_guides_files(trained):
    out, summary = trained
    assert summary["step"] == 6
    names = {p.name for p in out.iterdir()}
    assert {"best.pt", "ckpt_step_3.pt", "ckpt_step_6.pt", "config.yaml", "tokenizer"} <= names  # every chapter's names
    state = load_checkpoint(out / "ckpt_step_6.pt")
    assert {"epoch", "step", "model", "optimizer", "scheduler", "loss", "config"} <= set(state)
    assert state["epoch"] == 2 and state["step"] == 6
    assert set(state["config"]) == {"model", "training", "data", "optim"}


def test_logged_scalars_are_the_guides(trained):
    keys = set().union(*(r.keys() for r in read_log(trained[0]))) - {"step"}
    assert {"train/total_loss", "train/recon_loss", "train/gate_loss", "train/lr"} <= keys
    assert {k for k in keys if not k.startswith("train/")} == {
        f"val/{k}" for k in ("total_loss", "recon_loss", "gate_loss", "exact_match", "avg_steps")
    }


def test_keep_last_n(tmp_path, data_dir):
    train_rdt(tiny_cfg(tmp_path, data_dir, "training.num_epochs=3", "training.keep_last_n_checkpoints=1"), bar=False)
    assert sorted(p.name for p in tmp_path.glob("ckpt_step_*.pt")) == ["ckpt_step_9.pt"]


def test_running_again_resumes_and_a_finished_run_says_so(tmp_path, data_dir, capsys):
    train_rdt(tiny_cfg(tmp_path, data_dir), bar=False)
    (tmp_path / "ckpt_step_6.pt").unlink()  # as if killed after the first epoch's checkpoint
    s = train_rdt(tiny_cfg(tmp_path, data_dir), bar=False)  # the same command picks up at step 3 by itself
    assert s["step"] == 6 and "resuming from step 3 of 6" in capsys.readouterr().out
    train_rdt(tiny_cfg(tmp_path, data_dir), bar=False)
    assert "nothing to do" in capsys.readouterr().out
    with pytest.raises(ConfigError, match=r"other settings \(optim.epochs 2 -> 3\).*--fresh"):  # not this run
        train_rdt(tiny_cfg(tmp_path, data_dir, "training.num_epochs=3"), bar=False)


def test_resume_continues_exactly(trained, tmp_path, data_dir):
    out, _ = trained
    cfg = tiny_cfg(tmp_path, data_dir)  # same config, another folder
    train_rdt(cfg, checkpoint=out / "ckpt_step_3.pt", bar=False)
    a = load_checkpoint(out / "ckpt_step_6.pt")["model"]
    b = load_checkpoint(tmp_path / "ckpt_step_6.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_another_model(trained, tmp_path, data_dir):
    with pytest.raises(ConfigError, match=r"other settings \(model.n_embd 32 -> 64\)"):
        train_rdt(tiny_cfg(tmp_path, data_dir, "model.n_embd=64"), checkpoint=trained[0] / "best.pt", bar=False)


# --- inference, evaluation, widget logic ----------------------------------------------------------------------------


def test_denoise_and_format(trained):
    model, tok, cfg = load_rdt(trained[0] / "best.pt")
    r = denoise(model, tok, "the [MASK] was built in [MASK] .", max_steps=7)
    assert "[MASK]" in r["input"] and "[MASK]" not in r["output"] and 1 <= r["steps"] <= 7 and r["masked"] == 2
    lines = format_result(r).splitlines()
    assert lines[0].startswith("Input:") and lines[1].startswith("Output:") and lines[2] == f"Steps:  {r['steps']}/7"
    with pytest.raises(ValueError, match="max_seq_length=24"):
        denoise(model, tok, "word " * 40)


def test_evaluation_baselines_are_consistent(trained):
    model, tok, _ = load_rdt(trained[0] / "best.pt")
    seg = torch.randint(5, len(tok), (6, 24))
    res = evaluate_restoration(model, seg, ratios=(0.5,), max_steps=4, unigram_id=7)
    row = res.loc[0.5]
    assert row.masked_tokens == 6 * 12
    assert row.unigram == pytest.approx(float((seg == 7).float().mean()), abs=0.2)
    assert 1 <= row.avg_steps <= 4 and 0 <= row.exact_match <= 1
    m = random_mask(6, 24, 0.5, torch.Generator().manual_seed(0))  # the evaluation's masks (same seed)
    gated = model.inference(torch.where(m, model.mask_token_id, seg), threshold=0.05, max_steps=4)
    # one pass == gated inference
    assert row.exact_match == pytest.approx(float((gated.tokens[m] == seg[m]).float().mean()))
    assert row.avg_steps == pytest.approx(float(gated.steps.float().mean()))
    one = evaluate_restoration(model, seg, ratios=(0.5,), max_steps=1, threshold=None)
    # one step without the gate is the one-shot baseline
    assert one.loc[0.5].exact_match == pytest.approx(row.one_shot)
    const = evaluate_restoration(model, torch.full((2, 24), 7), ratios=(0.5,), max_steps=2, unigram_id=7)
    assert const.loc[0.5].unigram == 1.0


def test_restoration_scores_are_per_segment_and_paired(trained):
    model, tok, _ = load_rdt(trained[0] / "best.pt")
    seg = torch.randint(5, len(tok), (10, 24))
    s = restoration_scores(model, seg, 0.5, max_steps=3, mask_predict_iters=(1, 3), unigram_id=7, batch_size=4)
    assert {"gate", "steps", "pass_1", "pass_3", "mask_predict_1", "mask_predict_3", "unigram"} <= set(s)
    assert all(v.shape == (10,) for v in s.values()) and ((s["pass_2"] >= 0) & (s["pass_2"] <= 1)).all()
    assert (s["mask_predict_1"] == s["pass_1"]).all()  # one iteration of mask-predict is one pass
    again = restoration_scores(model, seg, 0.5, max_steps=3, batch_size=4)
    assert (again["pass_3"] == s["pass_3"]).all()  # the same masks every time
    other = RDT(RDTModelConfig(n_embd=16, n_head=2, n_encoder_layers=1, d_ff=32), len(tok), tok.mask_token_id, 24)
    # and for any model
    assert (
        restoration_scores(other, seg, 0.5, max_steps=2, unigram_id=7, batch_size=4)["unigram"] == s["unigram"]
    ).all()
    m = random_mask(10, 24, 0.5, torch.Generator().manual_seed(0))  # the masks of one batch of 10, seed 0
    guess = model.inference(torch.where(m, tok.mask_token_id, seg), threshold=None, max_steps=1).tokens
    top = int(guess[m].mode().values)  # the token one pass guesses most
    # of the first pass
    shares = restoration_scores(model, seg, 0.5, max_steps=3, unigram_id=top, batch_size=10)["unigram_share"]
    assert np.allclose(shares, ((guess == top) & m).sum(1).numpy() / m.sum(1).numpy()) and shares.max() > 0
    with pytest.raises(ValueError, match="hides no token"):
        restoration_scores(model, seg, 0.01, max_steps=1)


def test_stepper_logic(trained):
    model, tok, _ = load_rdt(trained[0] / "best.pt")
    ids = tok("the city is on the river and it has a port .", add_special_tokens=False)["input_ids"]
    hidden = [i % 2 == 0 for i in range(len(ids))]
    trace = denoise_trace(model, tok, ids, hidden, max_steps=5, threshold=None)
    assert [r["step"] for r in trace] == list(range(6)) and trace[0]["gate"] is None
    assert all(r["ids"][i] == ids[i] for r in trace for i in range(len(ids)) if not hidden[i])
    first, later = render_step(trace, 0, tok, ids, hidden), render_step(trace, 5, tok, ids, hidden)
    assert "[MASK]" in first and "step 0</b> of 5" in first
    assert "[MASK]" not in later and ("green" in later or "red" in later)
    out = model.inference(
        torch.where(torch.tensor([hidden]), model.mask_token_id, torch.tensor([ids])), threshold=None, max_steps=5
    )
    assert trace[-1]["ids"] == out.tokens[0].tolist()


# --- the commands ---------------------------------------------------------------------------------------------------


def run(cmd, *args, stdin=None):
    return subprocess.run([str(BIN / cmd), *args], capture_output=True, text=True, input=stdin, timeout=300)


def test_rdt_infer_prints_input_output_steps(trained):
    p = run(
        "rdt-infer",
        "--checkpoint",
        str(trained[0] / "best.pt"),
        "--text",
        "the [MASK] of the city",
        "--max_steps",
        "9",
    )
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert (
        lines[0].startswith("Input:")
        and lines[1].startswith("Output:")
        and lines[2].startswith("Steps:")
        and lines[2].endswith("/9")
    )


def test_rdt_infer_interactive_until_quit(trained):
    p = run(
        "rdt-infer",
        "--checkpoint",
        str(trained[0] / "best.pt"),
        "--interactive",
        stdin="hello [MASK] world\n\nquit\nnever read\n",
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("Steps:") == 1 and "Enter text to denoise (or 'quit' to exit)" in p.stdout


@pytest.mark.parametrize(
    "args, match",
    [
        (["rdt-infer", "--checkpoint", "nope.pt", "--text", "x"], "nope.pt"),
        (["rdt-infer", "--checkpoint", "x.pt"], "--text TEXT or --interactive"),
        (["rdt-train", "--preset", "cpu", "--set", "training.masking=zigzag"], "zigzag"),
        (["rdt-train", "--config", "missing.yaml"], "missing.yaml"),
        (["rdt-train", "--preset", "cpu", "--device", "tpu"], "tpu"),
    ],
)
def test_command_errors_are_one_line(args, match):
    p = run(*args)
    assert p.returncode == 2 and match in p.stderr and p.stderr.count("\n") == 1, p.stderr


def test_rdt_infer_rejects_a_gpt_checkpoint(tmp_path):
    torch.save({"model": {"lm_head.weight": torch.zeros(2, 2)}, "config": {}}, tmp_path / "gpt.pt")
    p = run("rdt-infer", "--checkpoint", str(tmp_path / "gpt.pt"), "--text", "x")
    assert p.returncode == 2 and "not an RDT checkpoint" in p.stderr


def test_alibi_bias_and_plain_attention():
    from rdtcourse.rdt import alibi_bias

    b = alibi_bias(4, 5)
    assert b.shape == (4, 5, 5) and torch.equal(b, b.transpose(1, 2)) and (b.diagonal(dim1=1, dim2=2) == 0).all()
    assert b[0, 0, 1] < b[3, 0, 1] < 0  # head 0 is the most local
    plain, x = tiny_model(attention_bias="none"), torch.randint(5, 50, (2, 16))
    assert plain.attn_bias is None and plain(x).logits.shape == (2, 16, 50)
    assert "attn_bias" not in tiny_model().state_dict()  # rebuilt from the config, not saved
    with pytest.raises(ValueError, match="'alibi' or 'none'"):
        RDTModelConfig(attention_bias="rope")


def test_chain_start_curriculum():
    from rdtcourse.rdt_train import RDTTrainingConfig, latest_start

    t = RDTTrainingConfig(max_chain_start=6, chain_start_warmup=0.5)
    assert [latest_start(t, s, 100) for s in (0, 25, 49, 50, 99)] == [0, 3, 5, 6, 6]
    assert latest_start(RDTTrainingConfig(max_chain_start=6, chain_start_warmup=0), 0, 100) == 6


def test_level_curriculum():
    from rdtcourse.rdt_train import RDTTrainingConfig, highest_level

    t = RDTTrainingConfig(total_steps=10, level_warmup=0.5)
    assert [highest_level(t, s, 100) for s in (0, 5, 25, 49, 50, 99)] == [1, 1, 5, 9, 10, 10]
    assert highest_level(RDTTrainingConfig(total_steps=10), 0, 100) == 10  # 0: every level from the start
    model, x = tiny_model(), torch.randint(5, 50, (64, 16))
    cl = chain_loss(model, x, MaskingStrategy("linear", 10), ChainSettings(max_level=2, max_start=0), length=1)
    assert set(cl.levels.tolist()) <= {1, 2} and len(set(cl.levels.tolist())) == 2
    with pytest.raises(ValueError, match="max_level"):
        chain_loss(model, x, MaskingStrategy("linear", 10), ChainSettings(max_level=11))
    with pytest.raises(ConfigError, match="level_warmup"):
        load_rdt_config("cpu", sets=["training.level_warmup=1.5"])
    with pytest.raises(ConfigError, match="recon_on='all'"):
        load_rdt_config("cpu", sets=["training.recon_on=all"])


# --- part 2: the mechanisms that make extra passes useful, and the baselines ---------------------------------------

ALL_ON = dict(conditioning="adaln", input_injection=True, self_condition=True, monotone_gate=True, n_input_layers=1)


def test_new_paths_start_switched_off():
    """AdaLN-Zero and self-conditioning start at zero: with the plain model's weights, the first two steps are the plain
    model's (input injection adds E(x) to a zero start, so step 1 is unchanged; it changes step 2 on)."""
    torch.manual_seed(0)
    plain, x = tiny_model(), torch.randint(5, 50, (2, 16))
    x[:, ::2] = 4
    for kw in (dict(conditioning="adaln"), dict(self_condition=True)):
        other = tiny_model(**kw)
        missing, unexpected = other.load_state_dict(plain.state_dict(), strict=False)
        assert not unexpected and all(k.startswith(("level_mlp", "self_cond")) for k in missing), kw
        a, b = plain.recursive_forward(x, 2), other.recursive_forward(x, 2)
        assert all(torch.allclose(p.h, q.h, atol=1e-6) for p, q in zip(a, b)), kw
        assert torch.allclose(a[0].gate, b[0].gate), kw
    inj = tiny_model(input_injection=True)
    inj.load_state_dict(plain.state_dict())
    a, b = plain.recursive_forward(x, 2), inj.recursive_forward(x, 2)
    assert torch.allclose(a[0].h, b[0].h, atol=1e-6) and not torch.allclose(a[1].h, b[1].h, atol=1e-3)


def test_adaln_passes_hear_the_level():
    torch.manual_seed(0)
    model, x = tiny_model(conditioning="adaln"), torch.randint(5, 50, (2, 16))
    torch.nn.init.normal_(model.level_mlp[-1].weight, std=0.05)  # as if trained: the modulation is no longer zero
    e = model.embed(x)
    lo, hi = model.encode(e, torch.full((2,), 0.1)), model.encode(e, torch.full((2,), 0.9))
    assert not torch.allclose(lo, hi, atol=1e-4)
    with pytest.raises(ValueError, match="pass `level`"):
        model.encode(e)
    with pytest.raises(ValueError, match="'none' or 'adaln'"):
        RDTModelConfig(conditioning="film")


def test_monotone_gate_never_rises_and_input_layers_are_not_shared():
    torch.manual_seed(0)
    model, x = tiny_model(monotone_gate=True), torch.randint(5, 50, (3, 16))
    torch.nn.init.normal_(model.gate_mlp[-1].weight, std=1.0)  # a lively gate
    gates = model.inference(torch.where(torch.rand(3, 16) < 0.5, 4, x), threshold=None, max_steps=8).gates
    assert gates.shape == (3, 8) and (gates[:, 1:] <= gates[:, :-1]).all() and (gates > 0).all()
    one = tiny_model(n_input_layers=1)
    assert one.num_params() - tiny_model().num_params() == sum(p.numel() for p in one.input_layers.parameters()) > 0
    with pytest.raises(ValueError, match="n_input_layers"):
        RDTModelConfig(n_input_layers=-1)


def test_self_conditioning_reads_the_previous_guess():
    torch.manual_seed(0)
    model, x = tiny_model(self_condition=True), torch.randint(5, 50, (2, 16))
    x[:, 1::3] = 4
    chain = model.recursive_forward(x, 3)
    assert chain[0].masked_logits.shape == ((x == 4).sum(), 50)  # what step 2 reads
    torch.nn.init.normal_(model.self_cond.weight, std=0.5)
    after = model.recursive_forward(x, 3)
    assert torch.allclose(chain[0].h, after[0].h) and not torch.allclose(chain[1].h, after[1].h, atol=1e-4)
    out = model.inference(x, threshold=None, max_steps=3, keep_steps=True)  # inference reuses the step's read-out
    assert torch.equal(out.history[-1], model.restore(after[-1].h, x, x == 4))


def test_every_mechanism_trains_through_the_chain():
    torch.manual_seed(0)
    model, x = tiny_model(**ALL_ON, decoder_type="transformer"), torch.randint(5, 50, (8, 16))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    masking, losses = MaskingStrategy("linear", 5), []
    for i in range(60):
        cl = chain_loss(model, x, masking, ChainSettings(max_chain_length=3, max_start=1, true_level_share=1 - i / 60))
        opt.zero_grad()
        cl.total.backward()
        if i == 0:
            grads = {n: p.grad for n, p in model.named_parameters()}
            for name in (
                "level_mlp.2.weight",
                "input_layers.0.attn.c_attn.weight",
                "encoder.0.ln_1.weight",
                "gate_mlp.1.weight",
            ):
                assert grads[name] is not None and grads[name].abs().sum() > 0, name
        opt.step()
        losses.append(cl.recon.item())
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 0.5
    assert model.self_cond.weight.abs().sum() > 0  # trained away from zero once step 2 ran


def test_mlm_loss_and_mask_predict():
    torch.manual_seed(0)
    model, x = tiny_model(), torch.randint(5, 50, (8, 16))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        cl = mlm_loss(model, x)
        opt.zero_grad()
        cl.total.backward()
        opt.step()
        losses.append(cl.total.item())
        assert (cl.levels >= 1).all() and cl.gate.item() == 0
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 0.5
    xm = x.clone()
    xm[:, ::2] = 4
    steps = mask_predict(model, xm, iterations=4, keep_steps=True)
    assert len(steps) == 4 and torch.equal(steps[-1], mask_predict(model, xm, iterations=4))
    # visible kept, nothing left masked
    for s in steps:
        assert torch.equal(s[:, 1::2], x[:, 1::2]) and not (s == 4).any()
    assert torch.equal(mask_predict(model, xm, iterations=1), model.inference(xm, threshold=None, max_steps=1).tokens)
    with pytest.raises(ValueError, match="iterations=0"):
        mask_predict(model, xm, iterations=0)
    # the schedule: N, then N (I-1-t) // I hidden again after iteration t
    seen, forward = [], model.forward
    model.forward = lambda ids, decode=True: (seen.append((ids == 4).sum(1).tolist()), forward(ids, decode))[1]
    mask_predict(model, xm, iterations=4)
    assert seen == [[8] * 8, [6] * 8, [4] * 8, [2] * 8]  # 16 tokens, 8 hidden: 8, 8*3//4, 8*2//4, 8*1//4


def test_conditioned_passes_hear_the_mixed_level():
    torch.manual_seed(0)
    model, x = tiny_model(conditioning="adaln"), torch.randint(5, 50, (4, 16))
    heard, encode = [], model.encode
    model.encode = lambda h, level=None: (heard.append(level.detach().clone()), encode(h, level))[1]
    chain = model.recursive_forward(
        torch.where(torch.arange(16) < 8, 4, x),
        3,
        true_levels=[torch.full((4,), v) for v in (0.5, 0.4, 0.3)],
        share=0.25,
    )
    assert torch.allclose(heard[0], torch.full((4,), 0.5))  # the first pass: the true level
    # later: 1/4 true, 3/4 the previous gate
    for j in (1, 2):
        assert torch.allclose(heard[j], 0.25 * (0.5 - 0.1 * j) + 0.75 * chain[j - 1].gate.detach())
    heard.clear()
    model.inference(torch.where(torch.arange(16) < 8, 4, x), threshold=None, max_steps=2)
    # inference: the masked fraction, then the gate
    assert torch.allclose(heard[0], torch.full((4,), 0.5))
    with pytest.raises(ValueError, match="must be even"):
        RDTModelConfig(n_embd=33, n_head=3, conditioning="adaln")


def test_resume_refuses_another_vocabulary(trained, tmp_path, data_dir):
    other = tiny_cfg(tmp_path, tmp_path / "data", "data.tokenizer=wikitext2-sample/wordpiece-1000.json")
    with pytest.raises(ConfigError, match="other settings .data.tokenizer 'train' -> 'wikitext2-sample"):
        train_rdt(other, checkpoint=trained[0] / "best.pt", bar=False)
    # the same settings, but the run's saved vocabulary is not the one they give now (a WordPiece trained again:
    # huggingface/tokenizers' WordPiece trainer breaks ties in hash-map order, so it can differ from run to run)
    import shutil

    from rdtcourse.tokenizer import load_tokenizer

    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    shutil.rmtree(run / "tokenizer")
    load_tokenizer("wikitext2-sample/wordpiece-1000.json").save_pretrained(run / "tokenizer")
    with pytest.raises(ConfigError, match="another vocabulary"):
        train_rdt(tiny_cfg(run, data_dir), bar=False)


def test_mlm_objective_trains_the_baseline(tmp_path, data_dir):
    s = train_rdt(tiny_cfg(tmp_path, data_dir, "training.objective=mlm", "training.num_epochs=1"), bar=False)
    assert s["step"] == 3 and s["val_gate_loss"] == 0 and s["val_avg_steps"] == 1  # no chain, no gate: one pass
    state = load_checkpoint(tmp_path / "best.pt")
    assert state["config"]["training"]["objective"] == "mlm"
    p = run(
        "rdt-infer",
        "--checkpoint",
        str(tmp_path / "best.pt"),
        "--text",
        "the [MASK] of the city",
        "--max_steps",
        "9",
    )
    # its gate is untrained: one pass
    assert p.returncode == 0 and p.stdout.splitlines()[2] == "Steps:  1/1", p.stdout + p.stderr
    assert "one-shot masked LM" in p.stderr


def test_cpu_preset_reads_the_shipped_vocabulary():
    from rdtcourse.tokenizer import load_tokenizer

    d = load_rdt_config("cpu").data
    tok = load_tokenizer(d.tokenizer)  # a file in data/, not a fresh training
    assert d.tokenizer.endswith(".json") and len(tok) == d.vocab_size == 8000 and tok.mask_token_id is not None


def test_objective_and_level_share_configs():
    from rdtcourse.rdt_train import RDTTrainingConfig, true_level_share

    t = RDTTrainingConfig(true_level_decay=0.5)
    assert [true_level_share(t, s, 100) for s in (0, 25, 50, 99)] == [1.0, 0.5, 0.0, 0.0]
    with pytest.raises(ConfigError, match="objective='gan'.*chain, mlm"):
        load_rdt_config("cpu", sets=["training.objective=gan"])
