#!/usr/bin/python3
"""PyTorch counterpart of bench_model: the reference model (tests/reference/ref_model.py)
forward per 30 s clip (padded, T = 1500) at whisper-tiny and whisper-base dims with
random weights, 1 and 2 threads, and a seq_bn training step (forward + backward + AdamW).
Prints ref_* key=value lines. Usage: model_ref.py [--quick]"""
import os
import sys
import time

import numpy as np
import torch

from torch_threads import set_threads

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "reference"))
import ref_model as R  # noqa: E402
import gen_model_golden as G  # noqa: E402

SIZES = {"tiny": dict(d_model=384, encoder_layers=4, encoder_attention_heads=6,
                      encoder_ffn_dim=1536),
         "base": dict(d_model=512, encoder_layers=6, encoder_attention_heads=8,
                      encoder_ffn_dim=2048)}


def model(size, adapter):
    cfg = dict(SIZES[size], num_mel_bins=80, max_source_positions=1500,
               classifier_proj_size=256, num_labels=10)
    rng = np.random.default_rng(1)
    acfg = G.adapter_cfg("seq_bn") if adapter else None
    w = {}
    shapes = dict(G.base_shapes(cfg))
    shapes.update(G.head_shapes(cfg, 1))
    shapes.update(R.adapter_param_shapes(acfg, cfg["d_model"], cfg["encoder_ffn_dim"],
                                         cfg["encoder_layers"], G.ANAME))
    for n, s in shapes.items():
        scale, offset = G.gen_rule(n, s, False)
        w[n] = (offset + scale * (2 * rng.random(s, dtype=np.float32) - 1)).astype(np.float32)
    return R.RefModel(cfg, w, acfg, G.ANAME, {"use_weighted_layer_sum": 1})


def best(fn, reps):
    """Best wall time and best process CPU time (all threads) over reps runs."""
    fn()
    t = c = 1e30
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        t = min(t, time.perf_counter() - t0)
        c = min(c, time.process_time() - c0)
    return t, c


def main():
    reps = 1 if "--quick" in sys.argv else 2
    mel = torch.tensor(np.random.default_rng(7).random((1, 80, 3000), dtype=np.float32) * 2 - 1)
    mel1s = mel[:, :, :100].contiguous()
    for size in ("tiny", "base"):
        m = model(size, False)
        for th in (1, 2):
            set_threads(th)
            with torch.no_grad():
                t, c = best(lambda: m.forward(mel), reps)
                print(f"ref_forward_{size}_{th}t_s={t:.4f}")
                if th == 1:  # torch threads spin too: CPU time is meaningful at 1t
                    print(f"ref_forward_{size}_{th}t_cpu_s={c:.4f}")
                if th == 2:
                    tt, _ = best(lambda: m.forward(mel1s), reps)
                    print(f"ref_forward_{size}_trunc1s_2t_s={tt:.5f}")
        mt = model(size, True)
        params = mt.params()
        opt = torch.optim.AdamW(params, lr=1e-4)
        for th in (1, 2):
            set_threads(th)

            def step():
                for p in params:
                    p.grad = None
                logits = mt.forward(mel)
                loss, _ = R.ce_loss(logits, [1])
                loss.backward()
                opt.step()
            t, c = best(step, reps)
            print(f"ref_train_step_{size}_{th}t_s={t:.4f}")
            if th == 1:
                print(f"ref_train_step_{size}_{th}t_cpu_s={c:.4f}")


if __name__ == "__main__":
    main()
