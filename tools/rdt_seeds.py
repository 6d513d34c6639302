"""Train chapter 6's ablation rows with several seeds and score each run against one pass and the masked LM.

    python tools/rdt_seeds.py                 # the default rows and seeds 1, 2 and 42 (about 65 minutes on 2 CPU cores)
    python tools/rdt_seeds.py --rows guide injection --seeds 1 2
    python tools/rdt_seeds.py --report tools/rdt_seeds.json   # the committed tables (default: --out's seeds.json)

The results behind `nbs/06_rdt_appendix.ipynb`, which reads the committed `tools/rdt_seeds.json`. Each row adds
mechanisms of `06_rdt` section 5 to a small RDT (one shared layer, the shipped 1,000-piece WordPiece, 900 steps); the
question is whether a verdict (recursion vs one pass, RDT vs the masked LM and mask-predict) holds when only the seed
changes. Every run reads the same vocabulary and data, token for token. The scoring segments are held-out segments
after the first 1,536 (the trainer's 256 validation segments, then 1,280 kept apart for choosing settings).
Results go to `--out`/seeds.json (rewritten after every run, so a stopped sweep keeps what it finished), with every
verdict the tables show; the per-segment scores stay beside each run (`scores_50.npz`, `scores_90.npz`).
"""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from rdtcourse.core import atomic_write_text, paired_verdict
from rdtcourse.rdt_train import (
    fixed_segments,
    load_rdt,
    load_rdt_config,
    prepare_rdt_data,
    restoration_scores,
    train_rdt,
)

ROOT = Path(__file__).resolve().parent.parent
# the rows' shared sizes, and the rows, cumulative: "io" puts input/output layers on top of input injection,
# without self-conditioning ("selfcond" adds self-conditioning to input injection)
COMMON = [
    "optim.max_steps=900",
    "data.max_seq_length=64",
    "data.tokenizer=wikitext2-sample/wordpiece-1000.json",
    "model.n_embd=128",
    "model.d_ff=512",
    "model.n_encoder_layers=1",
    "model.dropout=0",
    "training.tensorboard=false",
]
GUIDE = []
MONOTONE = ["training.recon_on=masked", "model.conditioning=adaln", "model.monotone_gate=true"]
INJECTION = MONOTONE + ["model.input_injection=true"]
SELF_COND = INJECTION + ["model.self_condition=true"]
IO = INJECTION + ["model.n_input_layers=1", "model.decoder_type=transformer", "model.n_decoder_layers=1"]
ROWS = {
    "guide": GUIDE,
    "monotone": MONOTONE,
    "injection": INJECTION,
    "selfcond": SELF_COND,
    "io": IO,
    "mlm": ["training.objective=mlm"],
}
RATIOS = (0.5, 0.9)
SKIP = 256 + 256 + 1024  # the trainer's validation segments, then segments kept apart for choosing settings


def verdict(a, b) -> dict:
    v = paired_verdict(a, b)
    return {k: (round(float(x), 4) if k != "verdict" else x) for k, x in v.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 42])
    p.add_argument("--segments", type=int, default=2048, help="held-out segments scored, after the first %d" % SKIP)
    p.add_argument("--out", default=str(ROOT / "_runs/seeds"))
    p.add_argument(
        "--report",
        nargs="?",
        const="",
        metavar="JSON",
        help="print the tables of a results file (default: --out's seeds.json) and stop",
    )
    a = p.parse_args(argv)
    out = Path(a.out)
    if a.report is not None:
        return report(Path(a.report) if a.report else out / "seeds.json")
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"  # tokenized once, read by every run
    results_path = out / "seeds.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    if results.setdefault("_segments", a.segments) != a.segments:  # finished runs were scored on other segments
        print(
            f"{results_path} holds runs scored on {results['_segments']} segments, not {a.segments}: use another --out",
            file=sys.stderr,
        )
        return 1
    base = load_rdt_config("cpu", sets=[*COMMON, f"data.data_dir={data}"])
    _, train_tokens, held_out = prepare_rdt_data(base.data)
    segments = fixed_segments(held_out, base.data.max_seq_length)[SKIP : SKIP + a.segments]
    if len(segments) < 64:
        print(f"only {len(segments)} held-out segments after the first {SKIP}", file=sys.stderr)
        return 1
    unigram_id = int(np.bincount(np.asarray(train_tokens)).argmax())
    print(f"scoring on {len(segments):,} held-out segments (after the first {SKIP})")
    for seed in a.seeds:
        for row in a.rows:
            key = f"{row}-s{seed}"
            if key in results:
                print(f"{key}: done before")
                continue
            run = out / key
            shutil.rmtree(run, ignore_errors=True)
            cfg = load_rdt_config(
                "cpu",
                sets=[
                    *COMMON,
                    *ROWS[row],
                    f"data.data_dir={data}",
                    f"optim.seed={seed}",
                    f"optim.out_dir={run}",
                ],
            )
            summary = train_rdt(cfg, bar=False)
            model = load_rdt(run / "best.pt")[0]
            mlm = row == "mlm"
            t0 = time.time()
            r = {"params": summary["params"], "train_seconds": round(summary["train_seconds"])}
            for ratio in RATIOS:
                s = restoration_scores(
                    model,
                    segments,
                    ratio,
                    max_steps=1 if mlm else 20,
                    unigram_id=unigram_id,
                    mask_predict_iters=(10,) if mlm else (),
                )
                p_ = int(ratio * 100)
                for k in ("pass_1", "gate", "mask_predict_10", "unigram"):
                    if k in s:
                        r[f"{k}_{p_}"] = round(float(s[k].mean()), 4)
                if not mlm:
                    r[f"steps_{p_}"] = round(float(s["steps"].mean()), 2)
                    r[f"gate_vs_one_pass_{p_}"] = verdict(s["gate"], s["pass_1"])
                    r[f"best_forced_{p_}"] = int(np.argmax([s[f"pass_{n}"].mean() for n in range(1, 21)])) + 1
                # per-segment scores: paired tests across rows later
                np.savez_compressed(run / f"scores_{p_}.npz", **s)
            results[key] = r
            pair_with_baselines(results, out)
            atomic_write_text(results_path, json.dumps(results, indent=1))
            print(
                f"{key}: trained in {r['train_seconds']}s, scored in {time.time() - t0:.0f}s: "
                + ", ".join(
                    f"{k} {v}" for k, v in r.items() if not isinstance(v, dict) and k not in ("params", "train_seconds")
                )
            )
    return 0


def pair_with_baselines(results: dict, out: Path) -> None:
    """Each RDT run's gate against the masked LM of its seed (one pass and mask-predict),
    paired on the saved per-segment scores."""
    for key, r in results.items():
        if key.startswith(("_", "mlm-")) or f"mlm-s{key.rsplit('-s', 1)[1]}" not in results:
            continue
        mlm = out / f"mlm-s{key.rsplit('-s', 1)[1]}"
        for p in (50, 90):
            g, m = np.load(out / key / f"scores_{p}.npz")["gate"], np.load(mlm / f"scores_{p}.npz")
            r[f"gate_vs_mlm_{p}"] = verdict(g, m["pass_1"])
            r[f"gate_vs_mask_predict_{p}"] = verdict(g, m["mask_predict_10"])


def report(path: Path) -> int:
    """Markdown tables of a results file: per seed, each RDT row's gate against its one pass,
    the masked LM and mask-predict."""
    results = json.loads(path.read_text())
    seeds = sorted({int(k.rsplit("-s", 1)[1]) for k in results if not k.startswith("_")})
    rows = [r for r in ROWS if r != "mlm" and any(f"{r}-s{s}" in results for s in seeds)]
    fmt = lambda v: f"{v['diff']:+.4f} [{v['lo']:+.4f}, {v['hi']:+.4f}] {v['verdict']}" if v else ""
    for p in (50, 90):
        print(f"\n### {p}% masked ({results.get('_segments', '?'):,} segments; paired 95% bootstrap intervals)\n")
        print("| row | seed | one pass | gate | steps | gate - one pass | gate - masked LM | gate - mask-predict x10 |")
        print("|---|---|---|---|---|---|---|---|")
        for s in seeds:
            if f"mlm-s{s}" in results:
                m = results[f"mlm-s{s}"]
                print(
                    f"| masked LM | {s} | {m[f'pass_1_{p}']:.4f} | mask-predict {m[f'mask_predict_10_{p}']:.4f} "
                    "| | | | |"
                )
            for r in rows:
                x = results.get(f"{r}-s{s}")
                if x is None:
                    continue
                print(
                    f"| {r} | {s} | {x[f'pass_1_{p}']:.4f} | {x[f'gate_{p}']:.4f} | {x[f'steps_{p}']:.1f} | "
                    f"{fmt(x[f'gate_vs_one_pass_{p}'])} | {fmt(x.get(f'gate_vs_mlm_{p}'))} | "
                    f"{fmt(x.get(f'gate_vs_mask_predict_{p}'))} |"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
