#!/usr/bin/python3
"""Python interop check (issue 6): wisp's saved adapter + head, loaded BY THEIR SAVED
NAMES into the PyTorch reference model (ref_model.py, written from docs/NUMERICS.md in the
layout of the `adapters` library and WhisperForAudioClassification), reproduce the
logits wisp wrote into a classify results file.

    /usr/bin/python3 tests/reference/check_interop.py demo-out/test_results.h5

reads the model/adapter/head directories and the truncate flag from the file's
`config` attribute, recomputes each ok row's log-mel with `wisp features` (the
front end has its own golden test), runs the reference model on it and compares
logits: max |diff| / max |logit| must be <= 1e-4. Dev tool (needs torch and h5py).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ref_model  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", help="a classify HDF5 file written by wisp")
    ap.add_argument("--wisp", default="build/bin/wisp")
    ap.add_argument("--limit", type=int, default=24, help="rows to check (0: all)")
    ap.add_argument("--rtol", type=float, default=1e-4)
    args = ap.parse_args()

    f = h5py.File(args.results, "r")
    cfg = json.loads(f.attrs["config"])
    ok = np.flatnonzero(f["status"][:] == 0)
    if args.limit:
        ok = ok[: args.limit]
    paths = [f["path"][i].decode() if isinstance(f["path"][i], bytes) else f["path"][i]
             for i in ok]
    want = f["logits"][:][ok]
    truncate = bool(cfg.get("classify", {}).get("truncate", cfg.get("truncate", False)))
    model = ref_model.load_dirs(cfg["model"], cfg.get("adapter"), cfg.get("head"))
    n_mels = model.cfg["num_mel_bins"]

    with tempfile.TemporaryDirectory() as tmp:
        feats = os.path.join(tmp, "feats.h5")
        cmd = [args.wisp, "features", "--n-mels", str(n_mels), "-o", feats] + \
              (["--truncate"] if truncate else []) + paths
        subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)
        g = h5py.File(feats, "r")
        mel, frames = g["features"][:], g["num_frames"][:]

    got = np.zeros_like(want)
    with torch.no_grad():
        for r in range(len(ok)):
            x = torch.tensor(mel[r : r + 1, :, : frames[r]])
            got[r] = model.forward(x).numpy()[0]
    scale = float(np.abs(want).max())
    err = float(np.abs(got - want).max())
    print(f"{len(ok)} rows of {args.results}: adapter {cfg.get('adapter')}, head {cfg.get('head')}, "
          f"truncate={truncate}")
    print(f"max |logit diff| = {err:.3g}, max |logit| = {scale:.3g}, relative {err / scale:.3g} "
          f"(limit {args.rtol:g})")
    return 0 if err <= args.rtol * scale else 1


if __name__ == "__main__":
    sys.exit(main())
