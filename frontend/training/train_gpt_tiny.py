"""Train ``gpt-tiny``, a character model, on the public-domain text in ``frontend/data``.

Run once to produce ``frontend/weights/gpt-tiny.npz``::

    python frontend/training/train_gpt_tiny.py

Deterministic: fixed seeds, single thread, deterministic torch algorithms.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from celosia.frontend.training.common import save_weights, seed_everything, text_corpus
from celosia.frontend.training.models import GPTTiny, state_to_numpy

CONFIG = {"ctx": 32, "dim": 64, "depth": 2, "heads": 4, "kv_heads": 2, "hidden": 128}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    seed_everything(args.seed)
    text, vocab = text_corpus()
    ids = torch.tensor([vocab.index(c) for c in text])
    ctx = CONFIG["ctx"]
    model = GPTTiny(len(vocab), **CONFIG)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=args.steps)
    g = torch.Generator().manual_seed(args.seed)
    for step in range(args.steps):
        model.train()
        start = torch.randint(0, len(ids) - ctx - 1, (32,), generator=g)
        xb = torch.stack([ids[s:s + ctx] for s in start])
        yb = torch.stack([ids[s + 1:s + ctx + 1] for s in start])
        loss = F.cross_entropy(model(xb).reshape(-1, len(vocab)), yb.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 500 == 499:
            print(f"step {step + 1}: loss {loss.item():.3f}", flush=True)
    model.eval()
    with torch.no_grad():
        n = (len(ids) - 1) // ctx
        x = ids[: n * ctx].view(n, ctx)
        y = ids[1: n * ctx + 1].view(n, ctx)
        acc = float((model(x).argmax(-1) == y).float().mean())
    meta = {"model": "gpt-tiny", "config": dict(CONFIG, vocab=len(vocab)), "vocab": "".join(vocab),
            "train_next_char_acc": acc, "seed": args.seed, "steps": args.steps, "torch": torch.__version__}
    path = save_weights("gpt-tiny", state_to_numpy(model), meta)
    print(f"gpt-tiny: next-character accuracy on the text {acc:.4f} -> {path}")


if __name__ == "__main__":
    main()
