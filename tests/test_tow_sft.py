"""Chapter 9: the ToW data, prompt masking, new token rows, accumulation, exact resume, save/reload, two processes,
the CLI."""

import os
import subprocess
import sys
from pathlib import Path
import pytest
import torch
from transformers import AutoModelForCausalLM
from rdtcourse.core import ConfigError, load_checkpoint, replace_config
from rdtcourse.tow_sft import (
    FlatArguments,
    PromptBoundaryError,
    add_tow_tokens,
    check_operands,
    encode_with_ToW,
    error_breakdown,
    final_answer,
    generate_completions,
    load_model_and_tokenizer,
    make_base_model,
    make_problem,
    make_tow_data,
    read_jsonl,
    strip_thoughts,
    thought_error,
    token_loss_sum,
    train_sft,
    write_jsonl,
)
from conftest import TORCHRUN

CLI = str(Path(sys.executable).parent / "rdtcourse")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    "A tiny base model and a small ToW data set, shared by the tests of this module."
    out = tmp_path_factory.mktemp("sft")
    base = make_base_model(
        out / "base", steps=20, vocab_size=400, n_layer=1, n_head=2, n_embd=32, block_size=128, bar=False
    )
    train_rows, val_rows, test_rows = make_tow_data(64, 16, 16, max_steps=2, seed=0)
    files = {k: write_jsonl(train_rows, out / f"{k}.jsonl", k) for k in ("tow", "plain")}
    files["val"] = write_jsonl(val_rows, out / "val.jsonl", "tow")
    files["test"] = write_jsonl(test_rows, out / "test.jsonl", "tow")
    return out, base, files, train_rows, test_rows


def _args(setup, name, **kw):
    out, base, files, _, _ = setup
    return replace_config(  # the brief's flat names (output_dir, learning_rate...) are aliases of optim.*
        FlatArguments(),
        {
            **dict(
                model_name_or_path=str(base),
                train_file=str(files["tow"]),
                output_dir=str(out / name),
                per_device_train_batch_size=4,
                max_train_steps=4,
                learning_rate=3e-3,
                device="cpu",
                max_seq_length=0,
            ),
            **kw,
        },
    )


def _weights(folder) -> dict:
    return AutoModelForCausalLM.from_pretrained(folder).state_dict()


def test_held_out_problems_share_no_arithmetic_with_training():
    train, val, test = make_tow_data(2000, 300, 300, max_steps=4, max_operand=20, seed=1)
    keys = {tuple(r["operands"]) for r in train}
    val_keys = {tuple(r["operands"]) for r in val}
    assert not any(tuple(r["operands"]) in keys or tuple(r["operands"]) in val_keys for r in test)
    assert not any(k in keys for k in val_keys)
    assert {r["steps"] for r in test} == {1, 2, 3, 4}
    for r in train[:200]:
        assert final_answer(r["tow"]) == final_answer(r["plain"]) == r["answer"] >= 0
        assert strip_thoughts(r["tow"]).replace("  ", " ") == r["plain"]


def test_thought_formats_write_the_same_computation():
    import numpy as np

    a, b = (make_problem(np.random.default_rng(3), 3, thought=t) for t in ("compact", "spaced"))
    assert a["operands"] == b["operands"] and a["answer"] == b["answer"]
    assert a["tow"].replace(" ", "") == b["tow"].replace(" ", "") and len(a["tow"]) < len(b["tow"])
    with pytest.raises(ConfigError, match="thought='wordy'"):
        make_problem(np.random.default_rng(3), 1, thought="wordy")


def test_training_step_weights_leave_the_held_out_splits_uniform():
    from collections import Counter

    train, _, test = make_tow_data(3000, 300, 300, max_steps=3, seed=0, train_step_weights=(1, 2, 3))
    c, t = Counter(r["steps"] for r in train), Counter(r["steps"] for r in test)
    assert c[1] < c[2] < c[3] and abs(c[3] / c[1] - 3) < 0.6  # about 1:2:3
    assert max(t.values()) < 1.5 * min(t.values())  # held out: about equally often
    for bad in ((1, 2), (1, float("nan"), 1), (0, 0, 0)):
        with pytest.raises(ConfigError, match="train_step_weights"):
            make_tow_data(10, 2, 2, max_steps=3, train_step_weights=bad)
    # the held-out problems do not depend on the training mix
    _, _, same = make_tow_data(3000, 300, 300, max_steps=3, seed=0)
    assert [r["prompt"] for r in same] == [r["prompt"] for r in test]


def test_thought_error_names_the_first_wrong_operation():
    ops, answer = [5, "+", 3, "-", 1], 7  # 5+3=8, 8-1=7
    cases = {
        "Ana has <ToW>5+3=8, 8-1=7</ToW> 7 apples.": "right",
        "Ana has <ToW>5+3=8, 8-1=7</ToW> 8 apples.": "wrong copy",
        "Ana has <ToW>5+3=9, 9-1=8</ToW> 8 apples.": "wrong arithmetic",
        "Ana has <ToW>5+4=9, 9-1=8</ToW> 8 apples.": "misread operand",  # the second sentence's number
        "Ana has <ToW>5+3=8, 7-1=6</ToW> 6 apples.": "misread operand",  # did not start from the last result
        "Ana has <ToW>5 + 3 = 8</ToW> 8 apples.": "step missing or extra",  # the spaced form reads too
        "Ana has <ToW>5+3=8, 8-1=7, 7+1=8</ToW> 8 apples.": "step missing or extra",
        "Ana has 6 apples.": "no thought",
        "Ana has <ToW>5+3=8, 8-1=": "step missing or extra",  # cut off: the second operation cannot be read
    }
    assert {c: thought_error(c, ops, answer) for c in cases} == cases
    assert thought_error("Ana has <ToW>5+3=8</ToW> 8 apples.", [5], 5) == "step missing or extra"  # nothing to do
    assert check_operands(ops) and not any(map(check_operands, ([5, "+"], [5, "*", 3], "5+3", [5, "+", True])))
    rows = [{"operands": ops, "answer": answer}] * len(cases)
    counts = error_breakdown(list(cases), rows)
    assert sum(counts.values()) == len(cases) and counts["right"] == 1 and counts["step missing or extra"] == 3


def test_read_jsonl_names_the_missing_field(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "c"}\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl:2 has no 'completion'"):
        read_jsonl(p)
    with pytest.raises(ConfigError, match="does not exist"):
        read_jsonl(tmp_path / "none.jsonl")


def test_prompt_labels_are_masked_and_do_not_count(setup):
    _, base, _, train_rows, _ = setup
    model, tok = load_model_and_tokenizer(str(base))
    add_tow_tokens(model, tok)
    r = train_rows[0]
    ex = encode_with_ToW({"prompt": [r["prompt"]], "completion": [r["tow"]]}, tok, 128)
    ids, labels = torch.tensor(ex["input_ids"]), torch.tensor(ex["labels"])
    n_prompt = len(tok(r["prompt"], add_special_tokens=False)["input_ids"])
    assert (labels[0, :n_prompt] == -100).all() and torch.equal(labels[0, n_prompt:], ids[0, n_prompt:])
    logits = model(input_ids=ids).logits
    loss, n = token_loss_sum(logits, labels)
    # by hand: only positions n_prompt-1 .. end-1 predict completion tokens
    lp = torch.log_softmax(logits[0].float(), -1)
    by_hand = -sum(lp[t - 1, ids[0, t]] for t in range(n_prompt, ids.size(1)))
    assert n == ids.size(1) - n_prompt and torch.allclose(loss, by_hand, atol=1e-4)
    changed = labels.clone()
    changed[0, 3] = 7  # a prompt position, if it were not masked
    assert not torch.allclose(token_loss_sum(logits, changed)[0], loss)


def test_the_prefix_check_fires_on_a_merge_across_the_join():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    bpe = models.BPE({"x": 0, " ": 1, "y": 2, "x ": 3, "x y": 4, "<e>": 5}, [("x", " "), ("x ", "y")])
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(bpe), eos_token="<e>")
    with pytest.raises(PromptBoundaryError, match="not a prefix"):
        encode_with_ToW({"prompt": ["x"], "completion": ["y"]}, tok, 16)


def test_new_rows_start_at_the_source_tokens_mean(setup):
    _, base, _, _, _ = setup
    model, tok = load_model_and_tokenizer(str(base))
    n = len(tok)
    new = add_tow_tokens(model, tok, "---")
    src = tok.encode("---", add_special_tokens=False)
    w = model.get_input_embeddings().weight
    assert new == [n, n + 1] and w.shape[0] == n + 2
    assert torch.equal(w[new[0]], w[src].mean(0)) and torch.equal(w[new[1]], w[src].mean(0))
    assert add_tow_tokens(model, tok) == new and len(tok) == n + 2  # idempotent


def test_k_micro_batches_equal_one_big_batch(setup):
    runs = {}
    for b, k in ((4, 1), (2, 2), (1, 4)):
        train_sft(
            _args(
                setup, f"acc_b{b}k{k}", per_device_train_batch_size=b, gradient_accumulation_steps=k, max_train_steps=2
            ),
            bar=False,
        )
        runs[(b, k)] = _weights(setup[0] / f"acc_b{b}k{k}")
    for other in ((2, 2), (1, 4)):
        for name, w in runs[(4, 1)].items():
            assert torch.allclose(w, runs[other][name], atol=1e-5), name


def test_resume_ends_with_the_uninterrupted_weights_and_the_model_reloads(setup):
    straight = _args(setup, "straight", max_train_steps=6, checkpointing_steps=3)
    train_sft(straight, bar=False)
    split = _args(setup, "split", max_train_steps=6, checkpointing_steps=3, stop_after_steps=3)
    s = train_sft(split, bar=False)
    assert (
        s["step"] == 3
        and (setup[0] / "split" / "ckpt_step_3.pt").is_file()
        and not (setup[0] / "split" / "model.safetensors").exists()
    )
    train_sft(_args(setup, "split", max_train_steps=6, checkpointing_steps=3), bar=False)  # running again resumes
    a, b = _weights(setup[0] / "straight"), _weights(setup[0] / "split")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the saved folder reloads through the Auto classes and writes what the last training state writes
    model, tok = load_model_and_tokenizer(str(setup[0] / "straight"))
    twin, twin_tok = load_model_and_tokenizer(str(setup[1]))  # the base, grown by the same two tokens...
    add_tow_tokens(twin, twin_tok)
    # ...then the final training state
    twin.load_state_dict(load_checkpoint(setup[0] / "straight" / "ckpt_step_6.pt")["model"])
    twin.tie_weights()
    prompts = [r["prompt"] for r in setup[3][:3]]
    assert generate_completions(model, tok, prompts, 12) == generate_completions(twin, tok, prompts, 12)
    # left padding is harmless
    assert generate_completions(model, tok, prompts, 12, batch_size=1) == generate_completions(model, tok, prompts, 12)


def test_validation_picks_the_saved_model(setup):
    out, _, files, _, _ = setup
    args = _args(
        setup,
        "val",
        max_train_steps=6,
        validation_file=str(files["val"]),
        eval_interval=2,
        lr_scheduler_type="cosine",
        keep_last_n_checkpoints=0,
    )
    s = train_sft(args, bar=False)
    assert [st for st, _ in s["val_curve"]] == [2, 4, 6]
    best = max(s["val_curve"], key=lambda p: p[1])  # the first of the best scores
    assert s["best_step"] == best[0]
    saved = _weights(out / "val")
    chosen = load_checkpoint(out / "val" / f"ckpt_step_{best[0]}.pt")["model"]
    assert all(torch.equal(saved[k], chosen[k]) for k in saved)
    for bad in ("wobbly", "reduce_lr_on_plateau"):  # the second needs a metric get_scheduler is never given
        with pytest.raises(ConfigError, match=f"lr_scheduler_type='{bad}'"):
            _args(setup, "x", lr_scheduler_type=bad)
    long = write_jsonl([{"prompt": "Q: " + "Ana has 5 apples. " * 60 + "\nA:", "answer": 5}], out / "long.jsonl")
    with pytest.raises(ConfigError, match="has a prompt of"):  # refused before any step, and nothing written
        train_sft(_args(setup, "long", validation_file=str(long)), bar=False)
    assert not (out / "long").exists()
    with pytest.raises(ConfigError, match="eval_interval=2 is not used"):
        _args(setup, "x", eval_interval=2)


def test_keep_last_n_checkpoints(setup):
    train_sft(_args(setup, "keep", max_train_steps=6, checkpointing_steps=2, keep_last_n_checkpoints=2), bar=False)
    assert sorted(p.name for p in (setup[0] / "keep").glob("ckpt_step_*")) == ["ckpt_step_4.pt", "ckpt_step_6.pt"]


@pytest.mark.torchrun
def test_two_processes_match_one_at_the_same_global_batch(setup):
    out = setup[0]
    one = _args(setup, "one_proc", per_device_train_batch_size=4, max_train_steps=3)
    train_sft(one, bar=False)
    sets = [
        f"--set={k}={v}"
        for k, v in dict(
            model_name_or_path=one.model_name_or_path,
            train_file=one.train_file,
            output_dir=out / "two_procs",
            per_device_train_batch_size=2,
            max_train_steps=3,
            learning_rate=one.optim.lr,
            device="cpu",
        ).items()
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "rdtcourse", "sft", "train", *sets],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "2 process(es)" in r.stdout
    a, b = _weights(out / "one_proc"), _weights(out / "two_procs")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k


def _cli(*args):
    return subprocess.run(
        [CLI, "sft", *args], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )


def test_cli_errors_are_one_line_and_leave_output_alone(setup, tmp_path):
    out, base, files, _, _ = setup
    dest = tmp_path / "run"
    dest.mkdir()
    (dest / "config.yaml").write_text("keep me\n")
    bad_data = tmp_path / "qa.jsonl"
    bad_data.write_text('{"question": "a", "answer": "b"}\n')
    cases = [
        (["train", f"--set=model_name_or_path={tmp_path / 'nothing'}", f"--set=output_dir={dest}"], "does not exist"),
        (
            ["train", f"--set=model_name_or_path={base}", f"--set=train_file={bad_data}", f"--set=output_dir={dest}"],
            "has no 'prompt'",
        ),
        (
            [
                "train",
                f"--set=model_name_or_path={base}",
                f"--set=train_file={files['tow']}",
                "--set=max_seq_length=5",
                f"--set=output_dir={dest}",
            ],
            "max_seq_length=5",
        ),
        (["train", "--set=no_such_option=1"], "unknown key 'no_such_option'"),
        (["generate", "--model", str(tmp_path / "nothing"), "--prompt", "hi"], "does not exist"),
    ]
    for argv, msg in cases:
        r = _cli(*argv)
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, (argv, r.stderr)
    assert (dest / "config.yaml").read_text() == "keep me\n" and sorted(p.name for p in dest.iterdir()) == [
        "config.yaml"
    ]


def test_cli_generate_and_eval(setup):
    out, base, files, _, test_rows = setup
    r = _cli("eval", "--model", str(base), "--data", str(files["test"]))
    assert r.returncode == 0 and "exact match" in r.stdout, r.stderr
    steps = sorted({r["steps"] for r in test_rows})
    assert all(f"  {s} step(s): " in r.stdout for s in steps), r.stdout
    bad = write_jsonl([{"prompt": "Q: x?\nA:", "answer": 1, "operands": [1, "*", 2]}], out / "bad_ops.jsonl")
    r = _cli("eval", "--model", str(base), "--data", str(bad))
    assert r.returncode == 2 and "operands=[1, '*', 2]" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    # the data command's options: the spaced form, and training step counts by weight
    common = ("--train", "40", "--test", "8", "--max-steps", "2")
    assert _cli("data", "--out-dir", str(out / "data2"), *common).returncode == 0
    r = _cli("data", "--out-dir", str(out / "data3"), *common, "--thought", "spaced", "--train-step-weights", "0,1")
    assert r.returncode == 0, r.stderr
    rows = read_jsonl(out / "data3" / "tow_train.jsonl")
    assert all(row["steps"] == 2 and (" + " in row["completion"] or " - " in row["completion"]) for row in rows)
    held_out = [[row["prompt"] for row in read_jsonl(out / d / "test.jsonl")] for d in ("data2", "data3")]
    assert (
        held_out[0] == held_out[1]
    )  # the same test problems, whatever the training mix == (out / "data4" / "test.jsonl").read_text()
    r = _cli("generate", "--model", str(base), "--prompt", test_rows[0]["prompt"], "--max-new-tokens", "5")
    assert r.returncode == 0 and r.stdout.strip(), r.stderr
