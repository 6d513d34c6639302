"""Generation speed with and without the KV cache: 500 new tokens from the brief's 6-layer, 384-wide GPT.

    python benchmarks/bench_generate.py [--new-tokens 500] [--device cpu]

The model's context is 512 tokens here (the brief's is 256) so that all 500 new tokens fit in it: past the
context the cache cannot be used (positions would shift), and both paths recompute the window.
"""

import argparse
import time
import torch
from rdtcourse.core import get_device, seed_everything
from rdtcourse.gpt import GPT, GPTConfig, generate


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--new-tokens", type=int, default=500)
    p.add_argument("--vocab", type=int, default=24_000)
    p.add_argument("--device", default=None)
    a = p.parse_args()
    dev = get_device(a.device)
    seed_everything(0)
    model = (
        GPT(GPTConfig(vocab_size=a.vocab, block_size=512, n_layer=6, n_head=6, n_embd=384, dropout=0.0)).to(dev).eval()
    )
    prompt = torch.randint(a.vocab, (1, 8), device=dev)
    generate(model, prompt, 8)  # warm-up
    res, outs = {}, {}
    for use_cache in (True, False):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        outs[use_cache] = generate(
            model,
            prompt,
            a.new_tokens,
            temperature=1.0,
            top_k=50,
            use_cache=use_cache,
            generator=torch.Generator(device=dev).manual_seed(0),
        )
        if dev.type == "cuda":
            torch.cuda.synchronize()
        res[use_cache] = a.new_tokens / (time.perf_counter() - t0)
    same = torch.equal(outs[True], outs[False])
    print(
        f"device: {dev}, torch {torch.__version__}, threads {torch.get_num_threads()}; model 6x384, vocab {a.vocab:,}"
    )
    print("| generation | tokens/s |\n|---|---|")
    print(f"| with KV cache | {res[True]:,.1f} |\n| without | {res[False]:,.1f} |")
    print(f"speed-up: {res[True] / res[False]:.1f}x; same tokens: {same}")


if __name__ == "__main__":
    main()
