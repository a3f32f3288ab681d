"""Train ``vit-digits`` (or ``moe-vit-digits`` with ``--moe``) on scikit-learn's 8x8 digits.

Run once to produce ``frontend/weights/<name>.npz``::

    python frontend/training/train_vit_digits.py          # vit-digits
    python frontend/training/train_vit_digits.py --moe    # moe-vit-digits

Deterministic: fixed seeds, single thread, deterministic torch algorithms.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from celosia.frontend.training.common import digits_split, save_weights, seed_everything
from celosia.frontend.training.models import ViTDigits, state_to_numpy

CONFIG = {"dim": 32, "depth": 2, "heads": 4, "hidden": 64, "patch": 2, "classes": 10}
MOE = {"moe_every": 2, "experts": 4, "top_k": 2}


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(-1).numpy() == y).mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--moe", action="store_true", help="MoE MLP in alternate layers (4 experts, top-2)")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    seed_everything(args.seed)
    xtr, xte, ytr, yte = digits_split()
    cfg = dict(CONFIG, **(MOE if args.moe else {}))
    model = ViTDigits(**cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=args.epochs * ((len(xtr) + 63) // 64))
    g = torch.Generator().manual_seed(args.seed)
    xt, yt = torch.from_numpy(xtr), torch.from_numpy(ytr).long()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), 64):
            idx = perm[i:i + 64]
            xb = xt[idx]
            # light augmentation: shift by one pixel at random
            sh = torch.randint(-1, 2, (2,), generator=g)
            xb = torch.roll(xb.view(-1, 8, 8), shifts=(int(sh[0]), int(sh[1])), dims=(1, 2)).reshape(-1, 64)
            loss = F.cross_entropy(model(xb), yt[idx], label_smoothing=0.05)
            if args.moe:  # importance loss (V-MoE): keep the gate from collapsing onto one expert
                imp = torch.stack([b.mlp.last_gates.sum((0, 1)) for b in model.blocks if hasattr(b.mlp, "gate")])
                loss = loss + 0.01 * ((imp.std(-1) / imp.mean(-1)) ** 2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        if epoch % 20 == 19 or epoch == args.epochs - 1:
            model.eval()
            print(f"epoch {epoch + 1}: loss {loss.item():.3f} test acc {accuracy(model, xte, yte):.4f}", flush=True)
    model.eval()
    acc = accuracy(model, xte, yte)
    name = "moe-vit-digits" if args.moe else "vit-digits"
    meta = {"model": name, "config": cfg, "float_test_acc": acc, "seed": args.seed, "epochs": args.epochs,
            "test_size": int(len(yte)), "torch": torch.__version__}
    path = save_weights(name, state_to_numpy(model), meta)
    print(f"{name}: float test accuracy {acc:.4f} -> {path}")


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
