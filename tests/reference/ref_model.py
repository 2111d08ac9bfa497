#!/usr/bin/python3
"""PyTorch reference of wisp's model (docs/NUMERICS.md sections 2-6), written
from the spec, independent of the C code: Whisper encoder (HF WhisperEncoder), the
adapters library's bottleneck / LoRA / IA3 semantics on Whisper, and the
WhisperForAudioClassification head. Weights are loaded BY NAME from safetensors files,
so the same module checks golden fixtures and wisp-saved adapter/head directories.

Also holds the deterministic generators shared with the C tests:
splitmix64 (common/base/util.c), name-keyed tensors (seed = fnv1a64(name) ^ seed).

CLI (interop check): ref_model.py --model DIR [--adapter DIR] [--head DIR]
                     --mel FILE.f32 --frames N [--batch B] [--out logits.f32]
"""
import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

# ---------------------------------------------------------------- safetensors
_DT = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64,
       "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8}


def bf16_to_f32(u16):
    return (u16.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(x):
    """Round to nearest even, like the C writer."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounding = ((u >> 16) & 1) + 0x7FFF
    return ((u + rounding) >> 16).astype(np.uint16)


def st_load(path):
    """name -> float32 numpy array (F16/BF16 converted)."""
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        buf = raw[base + b: base + e]
        shape = info["shape"]
        if info["dtype"] == "BF16":
            arr = bf16_to_f32(np.frombuffer(buf, dtype=np.uint16))
        else:
            arr = np.frombuffer(buf, dtype=_DT[info["dtype"]]).astype(np.float32)
        out[name] = arr.reshape(shape).copy()
    return out


def st_load_dir(path):
    if os.path.isfile(path):
        return st_load(path)
    single = os.path.join(path, "model.safetensors")
    if os.path.exists(single):
        return st_load(single)
    index = os.path.join(path, "model.safetensors.index.json")
    with open(index) as f:
        wm = json.load(f)["weight_map"]
    out = {}
    for shard in sorted(set(wm.values())):
        out.update(st_load(os.path.join(path, shard)))
    return out


def st_save(path, tensors, dtype="F32", metadata=None):
    """tensors: name -> float array; written sorted by name."""
    header = {}
    blobs = []
    off = 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name], dtype=np.float32)
        if dtype == "F32":
            b = a.tobytes()
        elif dtype == "F16":
            b = a.astype(np.float16).tobytes()
        elif dtype == "BF16":
            b = f32_to_bf16(a).tobytes()
        else:
            raise ValueError(dtype)
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def dequant(a, dtype):
    """The fp32 values a checkpoint of this dtype holds."""
    a = np.asarray(a, dtype=np.float32)
    if dtype == "F16":
        return a.astype(np.float16).astype(np.float32)
    if dtype == "BF16":
        return bf16_to_f32(f32_to_bf16(a)).reshape(a.shape)
    return a


# ---------------------------------------------------------------- generators
M64 = (1 << 64) - 1


def fnv1a64(s):
    h = 0xCBF29CE484222325
    for c in s.encode("utf-8"):
        h ^= c
        h = (h * 0x100000001B3) & M64
    return h


def splitmix_u64(seed, n):
    """The first n outputs of splitmix64 seeded with seed (vectorised, wraps mod 2^64)."""
    with np.errstate(over="ignore"):
        i = np.arange(1, n + 1, dtype=np.uint64)
        z = np.uint64(seed) + i * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def rng_uniform(seed, n):
    """wisp_rng_uniform: 24-bit uniform floats in [0, 1)."""
    return (splitmix_u64(seed, n) >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -24)


def gen_tensor(name, shape, scale, offset=0.0, seed=0):
    """offset + scale * (2u - 1), all in float32 (the C test computes the same bits).
    Generator seed = fnv1a64(name) ^ seed."""
    n = int(np.prod(shape)) if len(shape) else 1
    u = rng_uniform(fnv1a64(name) ^ seed, n)
    v = (np.float32(2.0) * u - np.float32(1.0)) * np.float32(scale)
    if offset:
        v = v + np.float32(offset)
    return v.astype(np.float32).reshape(shape)


# ---------------------------------------------------------------- configs
BOTTLENECK_PRESETS = {
    "seq_bn": dict(mh_adapter=False, output_adapter=True, reduction_factor=16,
                   non_linearity="relu", original_ln_before=True, original_ln_after=True,
                   residual_before_ln=True, is_parallel=False, scaling=1.0, init_weights="bert"),
    "double_seq_bn": dict(mh_adapter=True, output_adapter=True, reduction_factor=16,
                          non_linearity="swish", original_ln_before=False,
                          original_ln_after=True, residual_before_ln=True, is_parallel=False,
                          scaling=1.0, init_weights="bert"),
    "par_bn": dict(mh_adapter=False, output_adapter=True, reduction_factor=2,
                   non_linearity="relu", original_ln_before=False, original_ln_after=True,
                   residual_before_ln=True, is_parallel=True, scaling=4.0,
                   init_weights="mam_adapter"),
}


def rf_for_layer(cfg, i):
    rf = cfg["reduction_factor"]
    if isinstance(rf, dict):
        return rf.get(str(i), rf.get("default"))
    return rf


def act(name, x):
    if name in ("linear", "identity"):
        return x
    if name == "relu":
        return F.relu(x)
    if name in ("swish", "silu"):
        return x * torch.sigmoid(x)
    if name == "gelu":
        return F.gelu(x)
    if name == "gelu_new":
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    if name == "tanh":
        return torch.tanh(x)
    if name == "sigmoid":
        return torch.sigmoid(x)
    if name == "leakyrelu":
        return F.leaky_relu(x, 0.01)
    raise ValueError(name)


# ---------------------------------------------------------------- names
def adapter_param_shapes(acfg, d, F_, L, name):
    """name -> shape of every adapter tensor (save-time names, prefix encoder.layers.{i}.)."""
    out = {}
    if acfg is None:
        return out
    arch = acfg.get("architecture", "bottleneck")
    leave = set(acfg.get("leave_out", []))
    for i in range(L):
        if i in leave:
            continue
        p = f"encoder.layers.{i}."
        if arch == "bottleneck":
            m = max(1, int(math.floor(d / rf_for_layer(acfg, i))))
            sites = []
            if acfg["mh_adapter"]:
                sites.append("attention_adapters")
            if acfg["output_adapter"]:
                sites.append("output_adapters")
            for s in sites:
                q = f"{p}{s}.adapters.{name}."
                out[q + "adapter_down.0.weight"] = (m, d)
                out[q + "adapter_down.0.bias"] = (m,)
                out[q + "adapter_up.weight"] = (d, m)
                out[q + "adapter_up.bias"] = (d,)
        else:
            ia3 = acfg.get("composition_mode", "add") == "scale"
            r = acfg["r"]
            mods = []
            if acfg.get("selfattn_lora", True):
                for mname in acfg["attn_matrices"]:
                    mods.append((f"self_attn.{mname}_proj", d, d))
            if acfg.get("intermediate_lora", False):
                mods.append(("fc1", d, F_))
            if acfg.get("output_lora", False):
                mods.append(("fc2", F_, d))
            for mod, fin, fout in mods:
                q = f"{p}{mod}.loras.{name}."
                if ia3:
                    out[q + "lora_B"] = (fout, 1)
                else:
                    out[q + "lora_A"] = (r, fin)
                    out[q + "lora_B"] = (fout, r)
    return out


# ---------------------------------------------------------------- model
class RefModel:
    """Functional model over a dict of torch tensors (frozen + trainable)."""

    def __init__(self, cfg, weights, acfg=None, aname=None, head=None):
        """cfg: HF config dict; weights: name -> np array (encoder with prefix stripped to
        'encoder.'); acfg: adapters-library config dict or None; head: dict with
        use_weighted_layer_sum, or None when the head tensors come from `weights`."""
        self.cfg = cfg
        self.acfg = acfg
        self.aname = aname
        self.d = cfg["d_model"]
        self.L = cfg["encoder_layers"]
        self.H = cfg["encoder_attention_heads"]
        self.F = cfg["encoder_ffn_dim"]
        self.wsum = bool(head["use_weighted_layer_sum"] if head else cfg.get(
            "use_weighted_layer_sum", False))
        self.w = {}
        for k, v in weights.items():
            if k.startswith("model.encoder."):
                k = k[len("model."):]
            self.w[k] = torch.tensor(np.asarray(v, dtype=np.float32))
        self.trainable = sorted(adapter_param_shapes(acfg, self.d, self.F, self.L, aname)) + \
            ["projector.weight", "projector.bias", "classifier.weight", "classifier.bias"] + \
            (["layer_weights"] if self.wsum else [])
        for k in self.trainable:
            if k not in self.w:
                raise KeyError(f"missing tensor {k}")

    def to(self, dtype):
        for k in self.w:
            self.w[k] = self.w[k].to(dtype)
        return self

    def params(self):
        for k in self.trainable:
            self.w[k].requires_grad_(True)
        return [self.w[k] for k in self.trainable]

    # ---- pieces
    def _lin(self, z, i, mod, weight, bias):
        """Linear with LoRA / IA3 of module `mod` (e.g. self_attn.q_proj, fc1) in layer i."""
        y = z @ weight.t()
        if bias is not None:
            y = y + bias
        a = self.acfg
        if a is None or a.get("architecture", "bottleneck") != "lora":
            return y
        q = f"encoder.layers.{i}.{mod}.loras.{self.aname}."
        if q + "lora_B" not in self.w:
            return y
        if a.get("composition_mode", "add") == "scale":
            return y * (a["alpha"] * self.w[q + "lora_B"].view(-1))
        A, B = self.w[q + "lora_A"], self.w[q + "lora_B"]
        return y + (a["alpha"] / a["r"]) * ((z @ A.t()) @ B.t())

    def _bottleneck(self, z, i, site):
        q = f"encoder.layers.{i}.{site}.adapters.{self.aname}."
        a = self.acfg
        h = act(a["non_linearity"], z @ self.w[q + "adapter_down.0.weight"].t()
                + self.w[q + "adapter_down.0.bias"])
        return a["scaling"] * (h @ self.w[q + "adapter_up.weight"].t() + self.w[q + "adapter_up.bias"])

    def _site(self, f, r, i, site):
        """docs/NUMERICS.md 3: site(f, r)."""
        a = self.acfg
        key = f"encoder.layers.{i}.{site}.adapters.{self.aname}.adapter_up.weight"
        if a is None or key not in self.w:
            return f + r
        if a["is_parallel"]:
            o = self._bottleneck(r, i, site) + f
        else:
            res = f if a["residual_before_ln"] else None
            z = f + r if a["original_ln_before"] else f
            if not a["residual_before_ln"]:
                res = z
            o = self._bottleneck(z, i, site) + res
        if a["original_ln_after"]:
            o = o + r
        return o

    def _ln(self, x, p):
        return F.layer_norm(x, (self.d,), self.w[p + ".weight"], self.w[p + ".bias"], 1e-5)

    def forward(self, mel):
        """mel (B, n_mels, frames) -> logits (B, num_labels)."""
        w = self.w
        x = F.gelu(F.conv1d(mel, w["encoder.conv1.weight"], w["encoder.conv1.bias"], padding=1))
        x = F.gelu(F.conv1d(x, w["encoder.conv2.weight"], w["encoder.conv2.bias"], stride=2,
                            padding=1))
        x = x.transpose(1, 2)
        T = x.shape[1]
        x = x + w["encoder.embed_positions.weight"][:T]
        Bn = x.shape[0]
        hd = self.d // self.H
        hidden = [x]
        for i in range(self.L):
            p = f"encoder.layers.{i}."
            z = self._ln(x, p + "self_attn_layer_norm")
            q = self._lin(z, i, "self_attn.q_proj", w[p + "self_attn.q_proj.weight"],
                          w[p + "self_attn.q_proj.bias"]) * (hd ** -0.5)
            k = self._lin(z, i, "self_attn.k_proj", w[p + "self_attn.k_proj.weight"], None)
            v = self._lin(z, i, "self_attn.v_proj", w[p + "self_attn.v_proj.weight"],
                          w[p + "self_attn.v_proj.bias"])
            q = q.view(Bn, T, self.H, hd).transpose(1, 2)
            k = k.view(Bn, T, self.H, hd).transpose(1, 2)
            v = v.view(Bn, T, self.H, hd).transpose(1, 2)
            att = torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v
            att = att.transpose(1, 2).reshape(Bn, T, self.d)
            a = att @ w[p + "self_attn.out_proj.weight"].t() + w[p + "self_attn.out_proj.bias"]
            h = self._site(a, x, i, "attention_adapters")
            z2 = self._ln(h, p + "final_layer_norm")
            u = self._lin(z2, i, "fc1", w[p + "fc1.weight"], w[p + "fc1.bias"])
            f = self._lin(F.gelu(u), i, "fc2", w[p + "fc2.weight"], w[p + "fc2.bias"])
            x = self._site(f, h, i, "output_adapters")
            hidden.append(x)
        hidden[-1] = self._ln(x, "encoder.layer_norm")
        if self.wsum:
            sw = torch.softmax(w["layer_weights"], dim=-1)
            Hs = sum(sw[k] * hidden[k] for k in range(len(hidden)))
        else:
            Hs = hidden[-1]
        P = Hs @ w["projector.weight"].t() + w["projector.bias"]
        pooled = P.mean(dim=1)
        self.pooled = pooled
        return pooled @ w["classifier.weight"].t() + w["classifier.bias"]


def ce_loss(logits, labels, class_weights=None):
    """sum_b w[y_b] CE_b and sum_b w[y_b] (torch cross_entropy with reduction sum)."""
    lab = torch.tensor(labels, dtype=torch.long)
    wt = None if class_weights is None else torch.tensor(class_weights, dtype=logits.dtype)
    loss = F.cross_entropy(logits, lab, weight=wt, reduction="sum")
    wsum = float(len(labels)) if wt is None else float(wt[lab].sum())
    return loss, wsum


# ---------------------------------------------------------------- CLI
def load_dirs(model_dir, adapter_dir=None, head_dir=None):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    weights = st_load_dir(model_dir)
    weights = {k: v for k, v in weights.items()
               if k.startswith("encoder.") or k.startswith("model.encoder.")
               or k in ("projector.weight", "projector.bias", "classifier.weight",
                        "classifier.bias", "layer_weights")}
    acfg = aname = None
    if adapter_dir:
        with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
            ac = json.load(f)
        acfg, aname = ac["config"], ac["name"]
        for k, v in st_load(os.path.join(adapter_dir, "adapter.safetensors")).items():
            weights[k[len("model."):] if k.startswith("model.") else k] = v
    head = None
    if head_dir:
        with open(os.path.join(head_dir, "head_config.json")) as f:
            head = json.load(f)
        weights.update(st_load(os.path.join(head_dir, "model_head.safetensors")))
    return RefModel(cfg, weights, acfg, aname, head)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--adapter")
    ap.add_argument("--head")
    ap.add_argument("--mel", required=True, help="raw float32 (B, n_mels, frames)")
    ap.add_argument("--frames", type=int, required=True)
    ap.add_argument("--out")
    args = ap.parse_args()
    m = load_dirs(args.model, args.adapter, args.head)
    n_mels = m.cfg["num_mel_bins"]
    mel = np.fromfile(args.mel, dtype=np.float32).reshape(-1, n_mels, args.frames)
    with torch.no_grad():
        logits = m.forward(torch.tensor(mel)).numpy()
    if args.out:
        logits.astype(np.float32).tofile(args.out)
    for b in range(logits.shape[0]):
        print(" ".join(f"{v:.7g}" for v in logits[b]))


if __name__ == "__main__":
    sys.exit(main())
