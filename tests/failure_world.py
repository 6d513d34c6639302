"""The tiny trained world the failure table (failure_cases.yaml) runs its commands in: one small run of every trainer,
made through the command line the way a learner would, in a few seconds each."""

import contextlib
import io
import shlex
import sys
from pathlib import Path

from rdtcourse import cli

GPT = (
    "gpt train --set train_bin=gpt/data/train.bin --set val_bin=gpt/data/val.bin --set tok_path=gpt/data/tokenizer.json"
    " --set n_layer=1 --set n_head=2 --set n_embd=16 --set block_size=16 --set batch_size=4 --set eval_iters=2"
    " --set max_steps=4 --set eval_interval=2 --set warmup_steps=0 --set tensorboard=false"
    " --set sample_every_eval=false --device cpu"
)
RDT = (
    "rdt train --preset cpu --set model.n_embd=32 --set model.n_head=2 --set model.n_encoder_layers=1"
    " --set model.d_ff=64 --set model.gate_hidden_dim=16 --set data.tokenizer=wikitext2-sample/wordpiece-1000.json"
    " --set data.max_seq_length=24 --set training.batch_size=8 --set training.steps_per_epoch=2"
    " --set training.num_epochs=1 --set training.eval_batches=1 --set training.tensorboard=false"
    " --set data.data_dir=rdt/data"
    " --device cpu"
)
KR = (
    "kr train --data_dir kr/data --mode manual --chunk_size 16 --n_embd 16 --d_ff 32 --n_layer 1 --batch_size 4"
    " --n_tokens 0.002 --tensorboard false --device cpu"
)
SFT = (
    "sft train --model_name_or_path sft/base/hf --train_file sft/data/tow_train.jsonl --max_train_steps 2"
    " --per_device_train_batch_size 4 --device cpu"
)
RQVAE = (
    "rqvae train --set max_items=300 --set cache_dir=cache --set hidden_dims=[64] --set output_dim=8"
    " --set codebook_size=8 --set steps=30 --set batch_size=64 --set log_every=30"
)
RETRIEVAL = (
    "retrieval train --set ids=rqvae --set rqvae=rqvae/rqvae.pt --set cache_dir=cache --set max_items=300"
    " --set max_users=60"
    " --set max_seq_len=12 --set embedding_dim=8 --set n_embd=16 --set n_head=2 --set n_layer=1 --set batch_size=8"
    " --set warmup_steps=2 --set eval_every=4 --set iterations=8 --set tensorboard=false"
)
# the commands that make the world, with where each writes
BUILD = [
    "gpt prepare --set data_dir=gpt/data",
    GPT + " --set out_dir=gpt/run",
    RDT + " --set training.checkpoint_dir=rdt/run",
    "kr load --output_dir kr/data",
    "kr tokenize --data_dir kr/data --mode manual",
    KR + " --model_path kr/m.pt",
    "sft base --out-dir sft/base --steps 20 --vocab-size 400",
    "sft data --out-dir sft/data --train 64 --test 16",
    SFT + " --output_dir sft/run",
    RQVAE + " --set out_dir=rqvae",
    RETRIEVAL + " --set out_dir=ret",
]
# what a case's command may name: {GPT} is the tiny GPT training command, and so on
SHORTHANDS = {"GPT": GPT, "RDT": RDT, "KR": KR, "SFT": SFT, "RQVAE": RQVAE, "RETRIEVAL": RETRIEVAL}


def run_cli(command: str) -> tuple[int, str]:
    "Run one `rdtcourse` (or `rdt-train` / `rdt-infer`) command line in this process: (exit code, stderr)."
    words = shlex.split(command.format(**SHORTHANDS))
    entry = {"rdt-train": cli.rdt_train, "rdt-infer": cli.rdt_infer}.get(words[0])
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = entry(words[1:]) if entry else cli.main(words[1:] if words[0] == "rdtcourse" else words)
        except SystemExit as e:  # argparse's usage errors
            code = e.code if isinstance(e.code, int) else 1
    return code, err.getvalue()


def build_world(root: Path) -> Path:
    "Make every tiny run in `root` (the current directory must be `root`)."
    for command in BUILD:
        code, err = run_cli(command)
        if code != 0:
            raise RuntimeError(f"building the failure world: {command!r} exited {code}: {err[-2000:]}")
    return root


def snapshot(root: Path) -> dict:
    """Every file and folder under `root` with its size and modification time (folders: None): what a failing
    command must leave as it was."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else None
        for p in sorted(Path(root).rglob("*"))
        if "cache" not in p.relative_to(root).parts[:1]
    }


if __name__ == "__main__":  # python tests/failure_world.py DIR: build it, to try commands by hand
    import os

    root = Path(sys.argv[1]).resolve()
    root.mkdir(parents=True, exist_ok=True)
    os.chdir(root)
    build_world(root)
    print("built", root)


class _RunsCode:
    "Unpickling this runs a shell command that leaves a file named PWNED: what a hostile checkpoint can do."

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def make_props(root: Path) -> Path:
    "The bad files the cases hand to commands, in root/props."
    import json
    import os
    import shutil

    import torch

    props = Path(root) / "props"
    props.mkdir(exist_ok=True)
    marker = Path(root) / "PWNED"
    torch.save({"model": _RunsCode(marker), "step": 1}, props / "evil.pt")
    hf = props / "evil_hf"
    shutil.copytree(Path(root) / "sft" / "base" / "hf", hf, dirs_exist_ok=True)
    for p in hf.glob("*.safetensors"):
        p.unlink()
    torch.save({"lm_head.weight": _RunsCode(marker)}, hf / "pytorch_model.bin")
    acc = props / "accelerate_ckpt"  # the layout accelerate.save_state writes
    acc.mkdir(exist_ok=True)
    torch.save(_RunsCode(marker), acc / "custom_checkpoint_0.pkl")
    (acc / "trainer_state.json").write_text(json.dumps({"step": 1}))
    (props / "random.pt").write_bytes(os.urandom(4096))
    (props / "empty.txt").write_bytes(b"")
    (props / "empty.jsonl").write_bytes(b"")
    (props / "latin1.jsonl").write_bytes(b'{"prompt": "Question: caf\xe9?\\nAnswer:", "completion": " 3"}\n')
    row = {"prompt": "Question: Ana has 5 apples. Ana buys 2 more. How many apples does Ana have now?\nAnswer:"}
    (props / "seven.jsonl").write_text(json.dumps({**row, "answer": "seven"}) + "\n")
    empty = props / "kr_empty"  # a reviews folder whose files hold nothing
    empty.mkdir(exist_ok=True)
    for split in ("train", "validation", "test"):
        (empty / f"{split}.txt").write_text("")
    from rdtcourse.rdt import RDTModelConfig
    from rdtcourse.rdt_sudoku import SolverConfig, save_solver, sudoku_rdt

    cfg = RDTModelConfig(n_embd=16, n_head=2, n_encoder_layers=1, d_ff=32, attention_bias="none", input_injection=True)
    save_solver(sudoku_rdt(cfg), props / "sudoku", SolverConfig(max_passes=3))  # untrained: enough here
    (props / "evil_sudoku").mkdir(exist_ok=True)
    torch.save({"model": _RunsCode(marker), "kind": "rdt-sudoku"}, props / "evil_sudoku" / "model.pt")
    (props / "bad_sudoku").mkdir(exist_ok=True)
    torch.save({"model": {}, "config": {"solver": {}}, "kind": "rdt-sudoku"}, props / "bad_sudoku" / "model.pt")
    puzzle = "3.542.81.4879.15.6.29.5637485.793.416132.8957.74.6528.2413.9.655.867.192.965124.8"
    (props / "sudoku_good.txt").write_text(puzzle + "\n")
    (props / "sudoku_short.txt").write_text(puzzle + "\n" + puzzle[:-1] + "\n")
    (props / "sudoku_letter.txt").write_text(puzzle[:4] + "x" + puzzle[5:] + "\n")
    (props / "sudoku_clash.txt").write_text(puzzle + "\n\n" + "33" + puzzle[2:] + "\n")
    old = props / "old_sft" / "ckpt_step_3"  # an accelerate.save_state folder of an older version
    old.mkdir(parents=True, exist_ok=True)
    torch.save(_RunsCode(marker), old / "custom_checkpoint_0.pkl")
    return props
