#!/usr/bin/python3
"""PyTorch counterpart of bench/bench_ops.c: the same kernels at whisper-base size
(T = 1500, d = 512, NH = 8, hd = 64, F = 2048), printing the same keys with a ref_
prefix. Best of a few repetitions; torch and its OpenBLAS on 1 thread like bench_ops
(which pins OpenBLAS to 1 thread for everything but sgemm_peak_gflops_2t): torch's
set_num_threads does not reach OpenBLAS's pool, so set_threads sets both (before, the
products ran on every core while the calling thread's CPU time was counted, and the
"1-thread" sgemm came out at ~1.6x the core's FMA peak). Single-thread figures are
process CPU time (time.process_time: every thread, so a stray BLAS thread cannot hide),
which a shared machine inflates less than wall time; the 2-thread sgemm is wall time.
FLOPs are counted as bench_ops counts them (2 n^3 for the sgemm).

Usage: /usr/bin/python3 bench/ops_ref.py [reps]
"""
import sys
import time

import torch
import torch.nn.functional as F

from torch_threads import set_threads


def best(fn, reps, clock=time.process_time):
    fn()
    t = 1e30
    for _ in range(reps):
        t0 = clock()
        fn()
        t = min(t, clock() - t0)
    return t


def main():
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    g = torch.Generator().manual_seed(0)
    n = 2048
    a, b = torch.rand(n, n, generator=g), torch.rand(n, n, generator=g)
    print(f"ref_sgemm_size={n}")
    for th in (1, 2):
        set_threads(th)
        t = best(lambda: a @ b.T, reps, time.process_time if th == 1 else time.perf_counter)
        print(f"ref_sgemm_peak_gflops_{th}t={2 * n ** 3 / t * 1e-9:.1f}")
    set_threads(1)

    B, T, NH, hd, F_ = 1, 1500, 8, 64, 2048
    C = NH * hd
    q = ((torch.rand(B, NH, T, hd, generator=g) * 2 - 1) * 0.125).requires_grad_()
    k = (torch.rand(B, NH, T, hd, generator=g) * 2 - 1).requires_grad_()
    v = (torch.rand(B, NH, T, hd, generator=g) * 2 - 1).requires_grad_()
    dout = torch.rand(B, NH, T, hd, generator=g) * 2 - 1

    def fwd():
        with torch.no_grad():
            return torch.softmax(q @ k.transpose(-1, -2), -1) @ v

    # Backward alone: the forward graph is rebuilt outside the timed region.
    tb = 1e30
    for _ in range(reps + 1):
        out = torch.softmax(q @ k.transpose(-1, -2), -1) @ v
        t0 = time.process_time()
        torch.autograd.grad(out, (q, k, v), dout)
        tb = min(tb, time.process_time() - t0)
    tf = best(fwd, reps)
    fl = 2.0 * 2.0 * T * T * hd * NH * B
    print(f"ref_attn_fwd_ms_base={tf * 1e3:.2f}")
    print(f"ref_attn_bwd_ms_base={tb * 1e3:.2f}")
    print(f"ref_attn_fwd_gflops_base={fl / tf * 1e-9:.1f}")
    print(f"ref_attn_bwd_gflops_base={2.5 * fl / tb * 1e-9:.1f}")

    h = ((torch.rand(T, F_, generator=g) * 2 - 1) * 4).requires_grad_()
    dg = torch.rand(T, F_, generator=g) * 2 - 1
    with torch.no_grad():
        tf = best(lambda: F.gelu(h), reps)
    y = F.gelu(h)
    tb = 1e30
    for _ in range(reps):
        y = F.gelu(h)
        t0 = time.process_time()
        torch.autograd.grad(y, h, dg)
        tb = min(tb, time.process_time() - t0)
    print(f"ref_gelu_fwd_ms_base={tf * 1e3:.2f}")
    print(f"ref_gelu_bwd_ms_base={tb * 1e3:.2f}")
    print(f"ref_gelu_fwd_ns_per_elem={tf * 1e9 / (T * F_):.2f}")

    x = (torch.rand(T, C, generator=g) * 2 - 1).requires_grad_()
    w, bias = torch.rand(C, generator=g), torch.rand(C, generator=g)
    dy = torch.rand(T, C, generator=g)
    with torch.no_grad():
        tf = best(lambda: F.layer_norm(x, (C,), w, bias, 1e-5), reps)
    tb = 1e30
    for _ in range(reps):
        y = F.layer_norm(x, (C,), w, bias, 1e-5)
        t0 = time.process_time()
        torch.autograd.grad(y, x, dy)
        tb = min(tb, time.process_time() - t0)
    print(f"ref_layernorm_fwd_ms_base={tf * 1e3:.3f}")
    print(f"ref_layernorm_bwd_ms_base={tb * 1e3:.3f}")

    W1, b1 = torch.rand(F_, C, generator=g) * 0.1, torch.rand(F_, generator=g)
    with torch.no_grad():
        tl = best(lambda: F.linear(x, W1, b1), reps)
    print(f"ref_fc1_fwd_ms_base={tl * 1e3:.2f}")
    print(f"ref_fc1_fwd_gflops_base={2.0 * T * C * F_ / tl * 1e-9:.1f}")

    # One pre-LN encoder layer forward (as bench_ops composes it from the kernels).
    def lin(n_out, n_in):
        return torch.rand(n_out, n_in, generator=g) * 0.1 - 0.05

    Wq, Wk, Wv, Wo, W2 = lin(C, C), lin(C, C), lin(C, C), lin(C, C), lin(C, F_)
    xl = torch.rand(T, C, generator=g) * 2 - 1

    def layer():
        with torch.no_grad():
            z = F.layer_norm(xl, (C,), w, bias, 1e-5)
            qh = (F.linear(z, Wq, bias) * 0.125).view(T, NH, hd).transpose(0, 1)
            kh = F.linear(z, Wk).view(T, NH, hd).transpose(0, 1)
            vh = F.linear(z, Wv, bias).view(T, NH, hd).transpose(0, 1)
            a = (torch.softmax(qh @ kh.transpose(-1, -2), -1) @ vh).transpose(0, 1).reshape(T, C)
            hres = xl + F.linear(a, Wo, bias)
            z = F.layer_norm(hres, (C,), w, bias, 1e-5)
            return hres + F.linear(F.gelu(F.linear(z, W1, b1)), W2, bias)

    tl = best(layer, reps)
    fl = 2.0 * T * C * C * 4 + 2.0 * 2.0 * T * C * F_ + 2.0 * 2.0 * T * T * hd * NH
    print(f"ref_encoder_layer_fwd_ms_base={tl * 1e3:.2f}")
    print(f"ref_encoder_layer_fwd_gflops_base={fl / tl * 1e-9:.1f}")

    xin = torch.rand(1, C, 2 * T, generator=g) * 2 - 1
    Wc = torch.rand(C, C, 3, generator=g) * 0.1 - 0.05
    with torch.no_grad():
        tc = best(lambda: F.conv1d(xin, Wc, bias, stride=2, padding=1), reps)
    print(f"ref_conv2_fwd_ms_base={tc * 1e3:.2f}")
    print(f"ref_conv2_fwd_gflops_base={2.0 * T * C * C * 3 / tc * 1e-9:.1f}")

    # conv1 of the front end: 80 mel bins -> d, stride 1, 3000 frames
    mel = torch.rand(1, 80, 2 * T, generator=g) * 2 - 1
    W1c = torch.rand(C, 80, 3, generator=g) * 0.1 - 0.05
    with torch.no_grad():
        tc = best(lambda: F.conv1d(mel, W1c, bias, stride=1, padding=1), reps)
    print(f"ref_conv1_fwd_ms_base={tc * 1e3:.2f}")
    print(f"ref_conv1_fwd_gflops_base={2.0 * 2 * T * C * 80 * 3 / tc * 1e-9:.1f}")


if __name__ == "__main__":
    main()
