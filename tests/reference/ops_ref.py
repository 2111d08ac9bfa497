#!/usr/bin/python3
"""PyTorch goldens for common/nn/ops.c (tests/test_ops.c reads them).

Inputs are generated deterministically with splitmix64 -> 24-bit uniform floats in
[-1, 1) (the same stream as wisp_rng_u64 / wisp_rng_uniform in common/base/util.c), so the C
test regenerates them bit-exactly and only the results are stored. Each case writes one
file tests/data/ops/<case>.f32: the float32 results concatenated in the order listed in
CASES below. The loss for every backward is sum(R * out) with R drawn after the inputs,
so the gradient wrt out is R.

Run from the repository root:  /usr/bin/python3 tests/reference/ops_ref.py
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

M64 = (1 << 64) - 1


class Rng:
    def __init__(self, seed):
        self.s = seed & M64

    def u64(self):
        self.s = (self.s + 0x9E3779B97F4A7C15) & M64
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)

    def sym(self, n, scale=1.0):
        """n floats 2u-1 in [-1, 1), times scale (exact in float32)."""
        u = np.array([(self.u64() >> 40) for _ in range(n)], dtype=np.float64) * 2.0**-24
        return (np.float32(2.0) * u.astype(np.float32) - np.float32(1.0)) * np.float32(scale)

    def labels(self, n, nc):
        return np.array([(self.u64() >> 33) % nc for _ in range(n)], dtype=np.int64)


def t(a, shape, grad=True):
    x = torch.tensor(np.asarray(a, dtype=np.float32).reshape(shape), dtype=torch.float32)
    return x.requires_grad_(grad)


def flat(*ts):
    return np.concatenate([np.asarray(x.detach().numpy() if torch.is_tensor(x) else x,
                                      dtype=np.float32).ravel() for x in ts])


def case_linear():
    N, C, OC = 5, 7, 3
    r = Rng(101)
    x, w, b = t(r.sym(N * C), (N, C)), t(r.sym(OC * C), (OC, C)), t(r.sym(OC), (OC,))
    R = t(r.sym(N * OC), (N, OC), False)
    out = F.linear(x, w, b)
    (out * R).sum().backward()
    return flat(out, x.grad, w.grad, b.grad)


def case_layernorm():
    N, C = 4, 9
    r = Rng(102)
    x = t(r.sym(N * C, 2.0), (N, C))
    w, b = t(r.sym(C), (C,)), t(r.sym(C), (C,))
    R = t(r.sym(N * C), (N, C), False)
    out = F.layer_norm(x, (C,), w, b, eps=1e-5)
    (out * R).sum().backward()
    xd = x.detach()
    mean = xd.mean(-1)
    rstd = 1.0 / torch.sqrt(xd.var(-1, unbiased=False) + 1e-5)
    return flat(out, mean, rstd, x.grad, w.grad, b.grad)


ACTS = {
    "identity": lambda x: x,
    "relu": F.relu,
    "silu": F.silu,
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "leakyrelu": lambda x: F.leaky_relu(x, 0.01),
}


def case_act(idx, name):
    n = 64
    r = Rng(200 + idx)
    x = t(r.sym(n, 4.0), (n,))
    R = t(r.sym(n), (n,), False)
    out = ACTS[name](x)
    (out * R).sum().backward()
    return flat(out, x.grad)


def case_conv(stride):
    Tin, Cin, Cout = 9, 4, 5
    r = Rng(300 + stride)
    x = r.sym(Tin * Cin).reshape(Tin, Cin)        # time-major, as the kernel takes it
    w = t(r.sym(Cout * Cin * 3), (Cout, Cin, 3), False)
    b = t(r.sym(Cout), (Cout,), False)
    out = F.conv1d(t(x.T.copy(), (1, Cin, Tin), False), w, b, stride=stride, padding=1)
    return flat(out[0].T)                           # (Tout, Cout)


def case_attention():
    B, T, NH, hd = 2, 11, 2, 4
    C = NH * hd
    r = Rng(400)
    q, k, v = (t(r.sym(B * T * C, 1.5), (B, T, C)) for _ in range(3))
    R = t(r.sym(B * T * C), (B, T, C), False)

    def heads(x):
        return x.view(B, T, NH, hd).transpose(1, 2)  # (B, NH, T, hd)

    s = heads(q) @ heads(k).transpose(-1, -2)
    out = (torch.softmax(s, -1) @ heads(v)).transpose(1, 2).reshape(B, T, C)
    lse = torch.logsumexp(s, -1)                      # (B, NH, T)
    (out * R).sum().backward()
    return flat(out, lse, q.grad, k.grad, v.grad)


def case_softmax():
    N, C = 3, 6
    r = Rng(500)
    x = t(r.sym(N * C, 3.0), (N, C))
    R = t(r.sym(N * C), (N, C), False)
    out = torch.softmax(x, -1)
    (out * R).sum().backward()
    return flat(out, x.grad)


def case_meanpool():
    B, T, C = 2, 5, 3
    r = Rng(600)
    x = t(r.sym(B * T * C), (B, T, C))
    R = t(r.sym(B * C), (B, C), False)
    out = x.mean(1)
    (out * R).sum().backward()
    return flat(out, x.grad)


def case_wsum():
    K, n = 4, 10
    r = Rng(700)
    h = t(r.sym(K * n), (K, n))
    w = t(r.sym(K), (K,))
    R = t(r.sym(n), (n,), False)
    out = (w[:, None] * h).sum(0)
    (out * R).sum().backward()
    return flat(out, h.grad, w.grad)


def case_crossentropy(weighted):
    B, NC = 6, 5
    r = Rng(800 + weighted)
    x = t(r.sym(B * NC, 3.0), (B, NC))
    y = torch.tensor(r.labels(B, NC))
    cw = torch.tensor(r.sym(NC) * np.float32(0.5) + np.float32(1.0)) if weighted else None
    loss = F.cross_entropy(x, y, weight=cw, reduction="sum")
    loss.backward()
    wsum = cw[y].sum() if weighted else torch.tensor(float(B))
    return flat(torch.softmax(x.detach(), -1), loss.reshape(1), wsum.reshape(1), x.grad)


def case_colscale():
    N, C = 4, 5
    r = Rng(900)
    x, s = t(r.sym(N * C), (N, C)), t(r.sym(C), (C,))
    R = t(r.sym(N * C), (N, C), False)
    out = x * s
    (out * R).sum().backward()
    return flat(out, x.grad, s.grad)


CASES = {
    "linear": case_linear,              # out, dinp, dweight, dbias
    "layernorm": case_layernorm,        # out, mean, rstd, dinp, dweight, dbias
    "conv_s1": lambda: case_conv(1),    # out (Tout, Cout)
    "conv_s2": lambda: case_conv(2),
    "attention": case_attention,        # out, lse, dq, dk, dv
    "softmax": case_softmax,            # out, dinp
    "meanpool": case_meanpool,          # out, dinp
    "wsum": case_wsum,                  # out, dhidden, dw
    "ce": lambda: case_crossentropy(0),   # probs, loss, weight_sum, dlogits
    "ce_w": lambda: case_crossentropy(1),
    "colscale": case_colscale,          # out, dinp, ds
}
for i, a in enumerate(ACTS):
    CASES["act_" + a] = (lambda i=i, a=a: case_act(i, a))  # out, dinp


def main():
    torch.manual_seed(0)
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "ops")
    os.makedirs(root, exist_ok=True)
    for name, fn in CASES.items():
        data = fn().astype("<f4")
        data.tofile(os.path.join(root, name + ".f32"))
        print(f"{name}: {data.size} floats", file=sys.stderr)


if __name__ == "__main__":
    main()
