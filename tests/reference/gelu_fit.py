#!/usr/bin/python3
"""How the GELU table in common/nn/ops.c (s_gelu_tab, the AVX-512 GELU) was obtained
(dev tool).

erfc(a), a = |x| / sqrt(2) in [0, 4), is 16 polynomials of degree 5, one per interval
[0.25 i, 0.25 (i + 1)), in the local variable t = a - (0.25 i + 0.125); each a least
squares fit on 200 Chebyshev nodes in double precision, rounded to float32. Beyond
a = 4, erfc < 1.6e-8 is taken as 0. GELU(x) = 0.5 x c with c = erfc(a) for x < 0 and
2 - erfc(a) otherwise (no cancellation in the negative tail). The script evaluates
that in float32 the way the C code does (Horner with fused multiply-adds, the interval
index truncated) on the dense grid of tests/test_ops.c and prints the worst error as
a fraction of that test's tolerance, then the C table.
"""
import numpy as np
from scipy.special import erfc

f32 = np.float32
NI, W, DEG = 16, 0.25, 5


def fma32(a, b, c):
    return (a.astype(np.float64) * b.astype(np.float64) + c.astype(np.float64)).astype(f32)


def fit():
    tabs = np.zeros((DEG + 1, NI))
    k = np.arange(200)
    t = W / 2 * np.cos(np.pi * (k + 0.5) / 200)
    for i in range(NI):
        tabs[:, i] = np.polyfit(t, erfc(i * W + W / 2 + t), DEG)
    return tabs.astype(f32)


def gelu32(tabs, x):
    a = (np.abs(x) * f32(0.70710678118654752440)).astype(f32)
    idx = np.minimum((a * f32(1 / W)).astype(np.int32), NI - 1)
    t = (a - (idx * W + W / 2).astype(f32)).astype(f32)
    acc = tabs[0][idx]
    for row in tabs[1:]:
        acc = fma32(acc, t, row[idx])
    e = np.where(a >= f32(NI * W), f32(0), acc).astype(f32)
    c = np.where(x < 0, e, (f32(2) - e).astype(f32)).astype(f32)
    return ((f32(0.5) * x).astype(f32) * c).astype(f32)


def main():
    tabs = fit()
    n = 1 << 20
    x = (-12 + 24 * np.arange(n) / (n - 1)).astype(f32)
    xd = x.astype(np.float64)
    want = xd * 0.5 * erfc(-xd / np.sqrt(2))
    tol = 0.5e-7 * np.abs(xd) + 2 * np.spacing(np.abs(want).astype(f32)).astype(np.float64) + 1e-30
    r = np.abs(gelu32(tabs, x).astype(np.float64) - want) / tol
    print(f"worst error / test tolerance: {r.max():.3f} at x = {xd[r.argmax()]:.6g}")
    print("static const float s_gelu_tab[%d][%d] = {" % (DEG + 1, NI))
    for row in tabs:
        print("    {" + ", ".join("%.9g" % v for v in row) + "},")
    print("};")


if __name__ == "__main__":
    main()
