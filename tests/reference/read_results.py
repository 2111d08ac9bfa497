#!/usr/bin/python3
"""Reads a wisp classify results file with h5py and pandas, the way users will.

    /usr/bin/python3 tests/reference/read_results.py OUT.h5 [--check]

pandas.read_hdf cannot read plain HDF5 layouts (it expects PyTables'), so the
documented recipe is one DataFrame column per 1-D dataset:

    with h5py.File("OUT.h5", "r") as f:
        df = pd.DataFrame({k: f[k][:] for k in f if f[k].ndim == 1
                           and f[k].shape[0] == f.attrs["n_rows"]})
        classes = [c.decode() for c in f["classes"][:]]
        probs = f["probs"][:]          # (N, C) numpy array, row i = manifest item i

String datasets (path, error, classes) come back as bytes (UTF-8); decode them.
With --check, the file's invariants are verified (exit status 1 on a violation):
label/score agree with probs on ok rows, error rows carry a message and NaN
values, and the stored accuracy / confusion / precision / recall agree with the
rows. A dev tool, not run in CI.
"""
import json
import sys

import h5py
import numpy as np
import pandas as pd


def load(path):
    """Returns (DataFrame of the per-row columns, dict of the rest)."""
    with h5py.File(path, "r") as f:
        n = int(f.attrs["n_rows"])
        cols = {}
        for k in f:
            d = f[k]
            if d.ndim == 1 and d.shape[0] == n:
                v = d[:]
                if v.dtype.kind == "O":
                    v = [s.decode("utf-8") for s in v]
                cols[k] = v
        df = pd.DataFrame(cols)
        extra = {
            "classes": [c.decode("utf-8") for c in f["classes"][:]],
            "attrs": {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()},
        }
        for k in ("probs", "logits", "embedding", "confusion", "precision", "recall"):
            if k in f:
                extra[k] = f[k][:]
    return df, extra


def check(df, x):
    bad = []
    probs, logits = x["probs"], x["logits"]
    ok = (df["status"] == 0).to_numpy()
    n_classes = len(x["classes"])
    if probs.shape != (len(df), n_classes):
        bad.append(f"probs shape {probs.shape}")
    if ok.any():
        if not np.array_equal(df["label"].to_numpy()[ok], probs[ok].argmax(1)):
            bad.append("label != argmax(probs) on ok rows")
        if not np.allclose(df["score"].to_numpy()[ok], probs[ok].max(1)):
            bad.append("score != max(probs) on ok rows")
        if not np.allclose(probs[ok].sum(1), 1, atol=1e-5):
            bad.append("probs rows do not sum to 1")
    err = ~ok
    if err.any():
        if (df["label"].to_numpy()[err] != -1).any():
            bad.append("error rows with a label")
        if not np.isnan(probs[err]).all() or not np.isnan(logits[err]).all():
            bad.append("error rows with values")
        if (df["error"].to_numpy()[err] == "").any():
            bad.append("error rows without a message")
    if (df["error"].to_numpy()[ok] != "").any():
        bad.append("ok rows with an error message")
    a = x["attrs"]
    if int(a["n_ok"]) != int(ok.sum()):
        bad.append(f"n_ok {a['n_ok']} != {ok.sum()}")
    if "true_label" in df:
        ev = ok & (df["true_label"].to_numpy() >= 0)
        t, p = df["true_label"].to_numpy()[ev], df["label"].to_numpy()[ev]
        conf = np.zeros((n_classes, n_classes), np.int64)
        np.add.at(conf, (t, p), 1)
        if not np.array_equal(conf, x["confusion"]):
            bad.append("confusion differs from the rows")
        acc = float((t == p).mean()) if len(t) else float("nan")
        if not np.isclose(acc, a["accuracy"], equal_nan=True):
            bad.append(f"accuracy {a['accuracy']} != {acc}")
        tp = np.diag(conf).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            prec = np.nan_to_num(tp / conf.sum(0))
            rec = np.nan_to_num(tp / conf.sum(1))
        if not np.allclose(prec, x["precision"], atol=1e-6):
            bad.append("precision differs")
        if not np.allclose(rec, x["recall"], atol=1e-6):
            bad.append("recall differs")
    return bad


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    df, x = load(argv[1])
    pd.set_option("display.width", 120)
    print(f"{argv[1]}: {len(df)} rows, classes {x['classes']}")
    print(df.head(8).to_string())
    print("dtypes:", ", ".join(f"{k}={v}" for k, v in df.dtypes.items()))
    print("probs", x["probs"].shape, x["probs"].dtype,
          "embedding", x["embedding"].shape if "embedding" in x else None)
    keep = ("n_rows", "n_ok", "n_error", "n_missing", "accuracy", "n_evaluated",
            "model_sha256", "wisp_version", "created", "finished", "n_resumes")
    print("attrs:", json.dumps({k: (v.item() if hasattr(v, "item") else v)
                                for k, v in x["attrs"].items() if k in keep}))
    if "confusion" in x:
        print("confusion (rows true, cols predicted):")
        print(pd.DataFrame(x["confusion"], index=x["classes"], columns=x["classes"]).to_string())
        print("precision", np.round(x["precision"], 4), "recall", np.round(x["recall"], 4))
    if "--check" in argv:
        bad = check(df, x)
        print("check:", "ok" if not bad else "; ".join(bad))
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
