#!/usr/bin/python3
"""Where the int8 path's error comes from: a PyTorch simulation of nn/qlinear's
arithmetic on bench_int8's model and clips (not run by `make bench`).

The encoder is tests/reference/ref_model.py's, with each frozen linear optionally
replaced by its quantised version: per-output-channel symmetric weights (8 or 7 bits),
per-token asymmetric u8 inputs (255 or 127 levels), and optionally the per-clip mean
correction (y += mu W^T + b - mean of the rows). The integer products are done in
float32 on integer-valued tensors (not bit-exact: an analysis, not a golden). For each
configuration it prints the top-1 agreement with fp32, the logits' relative RMS and the
fp32 top-1/top-2 margins of the clips that flipped.

Usage:
  WISP_BENCH_INT8_KEEP=1 build/bench/bench_int8     # prints "# kept DIR"
  bench/int8_error_sim.py DIR [--clips N] [--build build]
  rm -rf DIR
"""
import argparse
import os
import subprocess
import sys

import h5py
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "reference"))
import ref_model as R  # noqa: E402

ALL = ("q", "k", "v", "out", "fc1", "fc2")
CONFIGS = [  # name, kwargs of Quant
    ("8-bit weights and inputs (before the mean correction)", {}),
    ("7-bit inputs", {"xlev": 127}),
    ("7-bit weights", {"wbits": 7}),
] + [("%s in fp32" % op, {"ops": tuple(o for o in ALL if o != op)}) for op in ALL] + [
    ("mean correction, 8-bit inputs", {"mc": True}),
    ("mean correction, 7-bit inputs (CPUs without VNNI)", {"mc": True, "xlev": 127}),
]


def quant_weights(W, bits):
    qmax = 2 ** (bits - 1) - 1
    m = W.abs().amax(dim=1, keepdim=True)
    inv = torch.where(m > 0, qmax / m, torch.zeros_like(m))
    return torch.clamp(torch.round(W * inv), -qmax, qmax) * (m / qmax)


def quant_rows(x, levels):
    lo = torch.clamp(x.amin(dim=-1, keepdim=True), max=0)
    hi = torch.clamp(x.amax(dim=-1, keepdim=True), min=0)
    s = (hi - lo) / levels
    inv = torch.where(s > 0, 1 / s, torch.zeros_like(s))
    z = torch.clamp(torch.round(-lo * inv), max=levels)
    return (torch.clamp(torch.round(x * inv) + z, 0, levels) - z) * s


class Quant:
    def __init__(self, wbits=8, xlev=255, ops=ALL, mc=False, fp32=False):
        self.wbits, self.xlev, self.ops, self.mc, self.fp32 = wbits, xlev, set(ops), mc, fp32
        self.cache = {}

    def linear(self, z, W, b, key):
        if self.fp32 or key[1] not in self.ops:
            y = z @ W.t()
        else:
            if key not in self.cache:
                self.cache[key] = quant_weights(W, self.wbits)
            y = quant_rows(z, self.xlev) @ self.cache[key].t()
            if self.mc:  # one clip per call here (batch 1)
                y = y + (z.mean(dim=-2, keepdim=True) @ W.t() - y.mean(dim=-2, keepdim=True))
        return y + b if b is not None else y


def forward(m, mel, q):
    w, d, H = m.w, m.d, m.H
    hd = d // H
    x = F.gelu(F.conv1d(mel, w["encoder.conv1.weight"], w["encoder.conv1.bias"], padding=1))
    x = F.gelu(F.conv1d(x, w["encoder.conv2.weight"], w["encoder.conv2.bias"], stride=2,
                        padding=1))
    x = x.transpose(1, 2)
    T = x.shape[1]
    x = x + w["encoder.embed_positions.weight"][:T]
    hidden = [x]

    def lin(z, i, name, op, bias=True):
        p = "encoder.layers.%d.%s." % (i, name)
        return q.linear(z, w[p + "weight"], w[p + "bias"] if bias else None, (i, op))

    def heads(t):
        return t.view(1, T, H, hd).transpose(1, 2)

    for i in range(m.L):
        p = "encoder.layers.%d." % i
        z = m._ln(x, p + "self_attn_layer_norm")
        qq = heads(lin(z, i, "self_attn.q_proj", "q") * hd ** -0.5)
        k = heads(lin(z, i, "self_attn.k_proj", "k", bias=False))
        v = heads(lin(z, i, "self_attn.v_proj", "v"))
        att = (torch.softmax(qq @ k.transpose(-1, -2), -1) @ v).transpose(1, 2).reshape(1, T, d)
        h = lin(att, i, "self_attn.out_proj", "out") + x
        z2 = m._ln(h, p + "final_layer_norm")
        x = lin(F.gelu(lin(z2, i, "fc1", "fc1")), i, "fc2", "fc2") + h
        hidden.append(x)
    hidden[-1] = m._ln(x, "encoder.layer_norm")
    sw = torch.softmax(w["layer_weights"], -1)
    Hs = sum(sw[k] * hidden[k] for k in range(len(hidden)))
    P = Hs @ w["projector.weight"].t() + w["projector.bias"]
    return P.mean(1) @ w["classifier.weight"].t() + w["classifier.bias"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", help="the directory bench_int8 kept (model, head, data)")
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--build", default="build")
    args = ap.parse_args()
    torch.set_num_threads(1)
    feats = os.path.join(args.dir, "feats.h5")
    if not os.path.exists(feats):  # truncated log-mel of the clips, as classify computes it
        with open(os.path.join(args.dir, "data", "all.csv")) as f:
            rows = [ln.split(",")[0] for ln in f.read().splitlines()[1:] if ln]
        paths = [os.path.join(args.dir, "data", r) for r in rows[:args.clips]]
        subprocess.check_call([os.path.join(args.build, "bin", "wisp"), "features", "--truncate",
                               "-q", "-o", feats] + paths)
    m = R.load_dirs(os.path.join(args.dir, "model"), None, os.path.join(args.dir, "head"))
    with h5py.File(feats, "r") as f:
        nf = f["num_frames"][:]
        n = min(args.clips, len(nf))
        mels = [torch.tensor(f["features"][i, :, :nf[i]][None].astype(np.float32))
                for i in range(n)]

    def run(q):
        with torch.no_grad():
            return torch.cat([forward(m, mel, q) for mel in mels]).numpy().astype(np.float64)

    l32 = run(Quant(fp32=True))
    top2 = np.sort(l32, 1)
    margin = top2[:, -1] - top2[:, -2]
    rms = np.sqrt((l32 ** 2).mean())
    print("%d clips; fp32 logits RMS %.4f; top-1/top-2 margin percentiles 1/5/50: %s"
          % (n, rms, np.round(np.percentile(margin, [1, 5, 50]), 5).tolist()))
    for name, kw in CONFIGS:
        l8 = run(Quant(**kw))
        same = l8.argmax(1) == l32.argmax(1)
        rel = np.sqrt(((l8 - l32) ** 2).sum() / (l32 ** 2).sum())
        print("%-55s top-1 %d/%d, logits relative RMS %.5f, flipped margins %s"
              % (name, same.sum(), n, rel, np.round(margin[~same], 5).tolist()), flush=True)


if __name__ == "__main__":
    sys.exit(main())
