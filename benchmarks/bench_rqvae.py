"""Semantic-ID throughput of chapter 7: movie titles embedded per second, and items encoded to semantic IDs per second.

    python benchmarks/bench_rqvae.py [--items 2000] [--device cpu]

The RQ-VAE is the learner-tier shape (403 -> 512 -> 256 -> 32, 3 levels of 256 codes), with k-means codebooks but
untrained weights: encoding cost does not depend on what the weights learned. Titles are the embedded MovieLens movies.
"""

import argparse
import time
import torch
from rdtcourse.core import get_device, seed_everything
from rdtcourse.data import load_table
from rdtcourse.rqvae import EMBED_MODEL, SemanticIdTokenizer, load_sentence_encoder, movie_texts


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=2000, help="movies to embed (default: %(default)s)")
    p.add_argument("--device", default=None)
    a = p.parse_args()
    dev = get_device(a.device)
    seed_everything(0)
    texts = movie_texts(load_table("movielens-small", "movies"))[: a.items]
    enc = load_sentence_encoder(EMBED_MODEL).to(dev)
    enc.encode(texts[:64], batch_size=64)  # warm-up
    t0 = time.perf_counter()
    emb = enc.encode(texts, batch_size=128, normalize_embeddings=True, convert_to_tensor=True)
    embed_s = time.perf_counter() - t0
    x = torch.cat([emb.float(), torch.rand(len(texts), 19, device=emb.device)], 1).to(dev)
    model = SemanticIdTokenizer(x.size(1), [512, 256], 32, 256, 3).to(dev)
    model.train()
    model.quantizer.init_kmeans(model.encoder(x).detach())
    model.eval()
    big = x.repeat(max(1, 50_000 // len(x)), 1)  # enough rows to time
    model.encode(big[:1024])
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(0, len(big), 4096):
        model.encode(big[i : i + 4096])
    if dev.type == "cuda":
        torch.cuda.synchronize()
    encode_s = time.perf_counter() - t0
    print(f"device {dev}, {torch.get_num_threads()} threads\n")
    print("| step | items | seconds | items/s |\n|---|---|---|---|")
    print(
        f"| embed 'title (year): genres' ({EMBED_MODEL}) | {len(texts):,} | {embed_s:.2f} | "
        f"{len(texts) / embed_s:,.0f} |"
    )
    print(
        f"| features -> semantic ID (RQ-VAE encoder + 3 levels) | {len(big):,} | {encode_s:.2f} | "
        f"{len(big) / encode_s:,.0f} |"
    )


if __name__ == "__main__":
    main()
