#!/usr/bin/python3
"""Golden values for tests/test_adamw.c from torch.optim.AdamW (torch 1.13),
torch.nn.utils.clip_grad_norm_ and the transformers learning-rate schedules
(their lambdas restated here; LambdaLR applies them).

Inputs are drawn from splitmix64 -> 24-bit uniform floats, bit-exact in C and Python.
Output tests/data/adamw_golden.f32 (float32, little-endian), in this order:
  case A (constant lr 1e-2, torch defaults): params after each of 6 steps   6 x 37
  case B (linear warmup 2 / total 6, base lr 5e-2, wd 0.1, betas (0.8, 0.99),
          eps 1e-6, clip 0.5): per step: total norm before clipping (1), clipped
          grads (37), params after the step (37)                           6 x 75
  schedules, base lr 1, warmup 3, total 10, lr of steps 0..11:
          constant, linear, cosine                                          3 x 12
Run: /usr/bin/python3 tests/reference/adamw_ref.py
"""
import math
import os

import numpy as np
import torch

M64 = (1 << 64) - 1
SIZES = [20, 17]  # two tensors of one flat buffer
N = sum(SIZES)
STEPS = 6


class SplitMix64:
    def __init__(self, seed):
        self.s = seed & M64

    def u64(self):
        self.s = (self.s + 0x9E3779B97F4A7C15) & M64
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)

    def uniform(self):
        return np.float32((self.u64() >> 40) * 2.0**-24)


def sym(seed, n, scale):
    """n floats (2u - 1) * scale in fp32, as the C test makes them."""
    r = SplitMix64(seed)
    return np.array([(np.float32(2.0) * r.uniform() - np.float32(1.0)) * np.float32(scale)
                     for _ in range(n)], dtype=np.float32)


def tensors(flat):
    out, off = [], 0
    for s in SIZES:
        out.append(torch.nn.Parameter(torch.from_numpy(flat[off:off + s].copy())))
        off += s
    return out


def warmup(step, w):
    return float(step) / float(max(1, w))


def lambda_constant(step, w=3):
    return warmup(step, w) if step < w else 1.0


def lambda_linear(step, w=3, total=10):
    if step < w:
        return warmup(step, w)
    return max(0.0, float(total - step) / float(max(1, total - w)))


def lambda_cosine(step, w=3, total=10, cycles=0.5):
    if step < w:
        return warmup(step, w)
    progress = float(step - w) / float(max(1, total - w))
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(cycles) * 2.0 * progress)))


def run(lr, betas, eps, wd, clip, lam):
    ps = tensors(sym(1, N, 1.0))
    opt = torch.optim.AdamW(ps, lr=lr, betas=betas, eps=eps, weight_decay=wd)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lam)
    rows = []
    for s in range(STEPS):
        g = sym(100 + s, N, 0.1 * (s + 1))
        off = 0
        for p, n in zip(ps, SIZES):
            p.grad = torch.from_numpy(g[off:off + n].copy())
            off += n
        row = []
        if clip is not None:
            total = torch.nn.utils.clip_grad_norm_(ps, clip)
            row.append(np.array([total.item()], dtype=np.float32))
            row.append(torch.cat([p.grad for p in ps]).numpy().copy())
        opt.step()
        sched.step()
        row.append(torch.cat([p.detach() for p in ps]).numpy().copy())
        rows.append(np.concatenate(row))
    return np.concatenate(rows)


def schedule_values(lam):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lam)
    vals = []
    for _ in range(12):
        vals.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return np.array(vals, dtype=np.float32)


def main():
    a = run(1e-2, (0.9, 0.999), 1e-8, 0.01, None, lambda s: 1.0)
    b = run(5e-2, (0.8, 0.99), 1e-6, 0.1, 0.5, lambda s: lambda_linear(s, 2, 6))
    sc = np.concatenate([schedule_values(f) for f in (lambda_constant, lambda_linear, lambda_cosine)])
    out = np.concatenate([a, b, sc]).astype("<f4")
    path = os.path.join(os.path.dirname(__file__), "..", "data", "adamw_golden.f32")
    out.tofile(path)
    print(f"wrote {path}: {out.size} floats")


if __name__ == "__main__":
    main()
