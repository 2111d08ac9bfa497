#!/usr/bin/python3
"""PyTorch counterpart of bench/bench_train.c: torch.optim.AdamW update and
clip_grad_norm_ per million fp32 parameters (one thread, thread CPU time). Prints key=value lines."""
import time

import torch


def best(f, reps=5):
    t = 1e30
    for _ in range(reps):
        t0 = time.thread_time()
        f()
        t = min(t, time.thread_time() - t0)
    return t


def main():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.rand(1000000) - 0.5)
    p.grad = 0.01 * (torch.rand(1000000) - 0.5)
    opt = torch.optim.AdamW([p], lr=1e-3)
    print(f"ref_adamw_update_ms_1m={best(opt.step) * 1e3:.3f}")
    print(f"ref_clip_grad_norm_ms_1m="
          f"{best(lambda: torch.nn.utils.clip_grad_norm_([p], 1e9)) * 1e3:.3f}")


if __name__ == "__main__":
    main()
