"""Training throughput of nanoGPT's CPU recipe (4 layers x 128 wide, 64-token context, batch 12).

    python benchmarks/bench_train.py [--steps 200] [--device cpu]

Prints a table: tokens per second over timed steps (after warm-up steps that are not counted).
"""

import argparse
import time
import torch
from rdtcourse.core import get_device, seed_everything
from rdtcourse.gpt import GPT
from rdtcourse.core import make_optimizer, replace_config
from rdtcourse.training import TrainConfig


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200, help="timed steps")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps first")
    p.add_argument("--device", default=None)
    a = p.parse_args()
    dev = get_device(a.device)
    seed_everything(0)
    rows = []
    for name, cfg in [
        (
            "CPU recipe 4x128, T=64, B=12",
            replace_config(
                TrainConfig(), block_size=64, batch_size=12, n_layer=4, n_head=4, n_embd=128, dropout=0.0, lr=1e-3
            ),
        ),
        ("brief 6x384, T=256, B=16", TrainConfig()),
    ]:
        model = GPT(cfg.model_config(65)).to(dev)
        o = cfg.optim
        opt = make_optimizer(model, o.lr, o.weight_decay, (o.beta1, o.beta2))
        x = torch.randint(65, (cfg.batch_size, cfg.block_size), device=dev)
        steps = a.steps if "CPU" in name else max(10, a.steps // 20)
        for i in range(a.warmup + steps):
            if i == a.warmup:
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
            _, loss = model(x, x)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        rows.append((name, steps, dt / steps * 1000, steps * cfg.batch_size * cfg.block_size / dt))
    print(f"device: {dev}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print("| model | steps | ms/step | tokens/s |\n|---|---|---|---|")
    for name, n, ms, tps in rows:
        print(f"| {name} | {n} | {ms:.1f} | {tps:,.0f} |")


if __name__ == "__main__":
    main()
