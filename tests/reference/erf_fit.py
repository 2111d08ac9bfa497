#!/usr/bin/python3
"""How the erf coefficients in common/nn/ops.c (s_verf) were obtained (dev tool).

erf(a) = a + a Q(a^2) on [0, 0.875] (Q degree 6) and erfc(a) = exp(R(a)) on
[0.875, 3.92] (R degree 8, a fit of log erfc weighted by erfc so the error is
absolute), both least squares on Chebyshev nodes in double precision, then rounded
to float32. The script evaluates the float32 Horner schemes the way the C code does
(every step rounded to float32, exp perturbed by +-1 ulp) and prints the worst
absolute error against scipy's erf; tests/test_ops.c checks the C code itself.
"""
import numpy as np
from scipy.special import erf, erfc

f32, f64 = np.float32, np.float64
CUT, TOP = 0.875, 3.92


def horner32(c, x):
    acc = np.full_like(x, f32(c[0]))
    for a in c[1:]:
        acc = ((acc * x).astype(f32) + f32(a)).astype(f32)
    return acc


def cheb(a, b, n):
    k = np.arange(n)
    return (a + b) / 2 + (b - a) / 2 * np.cos(np.pi * (k + 0.5) / n)


def main():
    x = cheb(0, 0.9, 4000)
    cs, *_ = np.linalg.lstsq(np.vander(x * x, 7) * x[:, None], (erf(x) / x - 1) * x, rcond=None)
    x = cheb(0.85, TOP, 6000)
    w = erfc(x)
    cl, *_ = np.linalg.lstsq(np.vander(x, 9) * w[:, None], np.log(erfc(x)) * w, rcond=None)
    cs, cl = cs.astype(f32), cl.astype(f32)
    a = np.linspace(0, 6, 3000001).astype(f32)
    sm = ((a * horner32(cs, (a * a).astype(f32))).astype(f32) + a).astype(f32)
    r = horner32(cl, np.clip(a, f32(CUT), f32(TOP)))
    worst = 0.0
    for ulp in (-1, 0, 1):
        e = np.exp(r.astype(f64)).astype(f32)
        e = (e + ulp * np.spacing(e)).astype(f32)
        e[a > TOP] = 0
        erfv = np.where(a < CUT, sm, (f32(1) - e).astype(f32))
        tail = np.where(a < CUT, (f32(1) - sm).astype(f32), e)  # 1 + erf(-a)
        worst = max(worst, np.abs(erfv.astype(f64) - erf(a.astype(f64))).max(),
                    np.abs(tail.astype(f64) - erfc(a.astype(f64))).max())
    print("Q (a^2, highest first):", ", ".join("%.9gf" % v for v in cs))
    print("R (a, highest first):  ", ", ".join("%.9gf" % v for v in cl))
    print("worst abs error:", worst)


if __name__ == "__main__":
    main()
