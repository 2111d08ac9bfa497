#!/usr/bin/python3
"""Expected fp32 -> fp16/bf16 conversions (round to nearest even) for tests/test_st.c.

Run with /usr/bin/python3 (numpy + torch); writes tests/data/st/half_table.txt.
Each line: f32_bits f16_bits bf16_bits (hex). f16 comes from torch and is checked
against numpy (they agree except NaN payloads, where torch gives sign|0x7e00);
bf16 from torch (NaN -> 0x7fc0). Inputs: hand-picked edge cases (subnormals, the
smallest/largest normals, overflow thresholds, exact rounding ties in both
directions, inf, nan, signed zero) plus splitmix64 bit patterns.
"""
import os
import struct

import numpy as np
import torch

MASK = (1 << 64) - 1


def splitmix64(state):
    state = (state + 0x9E3779B97F4A7C15) & MASK
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return state, z ^ (z >> 31)


def bits(f):
    return struct.unpack("<I", struct.pack("<f", f))[0]


edge = [
    0x00000000, 0x80000000, 0x3F800000, 0xBF800000,  # +-0, +-1
    0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000, 0x7F800001,  # inf, nan
    0x477FE000, 0x477FEFFF, 0x477FF000, 0x477FF001, 0x47800000, 0x7F7FFFFF,  # 65504, overflow edge
    0x38800000, 0x387FFFFF, 0x387FE000, 0x387FF000,  # smallest f16 normal and below
    0x33800000, 0x33000000, 0x33000001, 0x32FFFFFF, 0x33C00000, 0x33A00000,  # f16 subnormal 2^-24, ties
    0x34000000, 0x34200000, 0x34600000, 0x00000001, 0x00800000, 0x80800000,  # more subnormal ties, f32 denormals
    0x3F801000, 0x3F803000, 0x3F801001, 0x3F802FFF,  # f16 ties at 1.0 (even down, odd up)
    0x3F808000, 0x3F818000, 0x3F808001, 0x3F817FFF, 0x3F80FFFF,  # bf16 ties at 1.0
    0x7F7F8000, 0x7F7F7FFF, 0xFF7F8000,  # bf16 overflow to inf
    0x0000FFFF, 0x00008000, 0x00018000, 0x80018000,  # bf16 of f32 denormals
]
vals = [bits(v) for v in (0.1, -0.1, 3.14159265, 1e-3, 6.1e-5, 1e-7, 65519.0, 65520.0, 1e30, -2.5e-6)]
state = 20261124
rand = []
for _ in range(160):
    state, z = splitmix64(state)
    u = z & 0xFFFFFFFF
    # keep exponents mostly in and around the f16 range so rounding is exercised
    e = 100 + (u >> 24) % 45
    rand.append((u & 0x807FFFFF) | (e << 23))
for _ in range(40):
    state, z = splitmix64(state)
    rand.append(z & 0xFFFFFFFF)

allbits = edge + vals + rand
arr = np.array(allbits, dtype=np.uint32).view(np.float32)
t = torch.from_numpy(arr.copy())
f16_t = t.half().numpy().view(np.uint16)
with np.errstate(over="ignore", invalid="ignore"):
    f16_np = arr.astype(np.float16).view(np.uint16)
bf16 = t.bfloat16().view(torch.int16).numpy().view(np.uint16)
for i, b in enumerate(allbits):
    if not np.isnan(arr[i]):
        assert f16_t[i] == f16_np[i], (hex(b), hex(f16_t[i]), hex(f16_np[i]))

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "st", "half_table.txt")
with open(out, "w") as f:
    f.write("# f32_bits f16_bits bf16_bits  (tests/reference/gen_half_table.py, torch %s)\n" % torch.__version__)
    for i, b in enumerate(allbits):
        f.write("%08x %04x %04x\n" % (b, f16_t[i], bf16[i]))
print("wrote", out, len(allbits), "rows")
