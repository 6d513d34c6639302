"""Recommendation latency of chapter 8: constrained beam search per user, at beam widths 10 and 20.

    python benchmarks/bench_retrieval.py [--rqvae _runs/learner/07_rqvae/rqvae/rqvae.pt] [--device cpu]

The decoder is the learner-tier shape (2 blocks, width 128, 4 heads; 50-item window) with untrained weights: the
cost of a beam search does not depend on what the weights learned. The semantic IDs are chapter 7's (9,742 movies)
when its run exists, otherwise random unique IDs of the same shape. Contexts are 49 movies, the longest the model
reads. Two ways to serve: one user at a time (an online request), and 64 users per call (offline scoring).
"""

import argparse
import time
from pathlib import Path
import numpy as np
import torch
from rdtcourse.core import get_device, seed_everything
from rdtcourse.retrieval import DecoderRetrievalModel, PrefixTrie, beam_search
from rdtcourse.rqvae import load_rqvae


def corpus(path) -> torch.Tensor:
    if path and Path(path).exists():
        return load_rqvae(path)[0].corpus_ids
    g = torch.Generator().manual_seed(0)
    codes = torch.unique(torch.randint(256, (12_000, 3), generator=g), dim=0)[:9_742]
    return torch.cat([codes, torch.zeros(len(codes), 1, dtype=torch.long)], 1)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--rqvae",
        default="_runs/learner/07_rqvae/rqvae/rqvae.pt",
        help="chapter 7's semantic IDs (default: %(default)s)",
    )
    p.add_argument("--users", type=int, default=128, help="users to time per setting (default: %(default)s)")
    p.add_argument("--device", default=None)
    a = p.parse_args()
    dev = get_device(a.device)
    seed_everything(0)
    ids = corpus(a.rqvae).to(dev)
    K = max(256, int(ids.max()) + 1)
    model = DecoderRetrievalModel(64, 128, 0.0, 4, 2, K, ids.size(1), 50 * ids.size(1)).to(dev).eval()
    trie = PrefixTrie(ids.cpu())
    rng = np.random.default_rng(0)
    contexts = [rng.choice(len(ids), 49, replace=False) for _ in range(a.users)]
    print(f"device {dev}, {torch.get_num_threads()} threads, {len(ids):,} items\n")
    print("| beam width | users per call | ms per user |\n|---|---|---|")
    for w in (10, 20):
        for per_call in (1, 64):
            beam_search(model, contexts[:per_call], ids, w, trie, contexts[:per_call])  # warm-up
            t0 = time.perf_counter()
            for s in range(0, a.users, per_call):
                beam_search(model, contexts[s : s + per_call], ids, w, trie, contexts[s : s + per_call])
            print(f"| {w} | {per_call} | {(time.perf_counter() - t0) / a.users * 1000:.1f} |")


if __name__ == "__main__":
    main()
