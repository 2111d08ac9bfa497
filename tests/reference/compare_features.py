#!/ usr / bin / python3
"""Full-matrix check of `wisp features` against the PyTorch reference (a dev tool; the
committed tests compare summaries, see mel_ref.py).

For every case of tests/data/mel/cases.txt the input is written as a 32-bit float WAV
(exact), run through build/bin/wisp features, and the whole feature matrix is compared
with mel_ref.log_mel; jfk.flac is compared with the sox + soxr reference of
mel_ref.jfk_audio. Prints the max and mean abs difference per case and exits 1 if any
max exceeds 1e-4 (NUMERICS.md section 1):

    /usr/bin/python3 tests/reference/compare_features.py [--shared ../shared]
"""
import argparse
import os
import subprocess
import sys
import tempfile

import h5py
import numpy as np
import scipy.io.wavfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import mel_ref  # noqa: E402

TOL = 1e-4


def wisp_features(paths, n_mels, truncate, out):
    cmd = [os.path.join(ROOT, "build", "bin", "wisp"), "features", "-q", "-m", str(n_mels),
           "-o", out] + (["--truncate"] if truncate else []) + paths
    subprocess.run(cmd, check=True)
    with h5py.File(out, "r") as f:
        return f["features"][...], f["num_frames"][...], f["status"][...]


def report(name, got, want):
    d = np.abs(got.astype(np.float64) - want.astype(np.float64))
    print(f"{name:22s} shape {want.shape}  max abs {d.max():.3e}  mean abs {d.mean():.3e}")
    return d.max() <= TOL


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", default=os.path.join(ROOT, "..", "shared"))
    args = ap.parse_args()
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(ROOT, "tests", "data", "mel", "cases.txt")) as f:
            cases = [line.split() for line in f if line.strip() and not line.startswith("#")]
        for name, kind, seed, n, n_mels, truncate in cases:
            x = mel_ref.make_input(kind, int(seed), int(n))
            wav = os.path.join(tmp, name + ".wav")
            scipy.io.wavfile.write(wav, 16000, x)
            feats, nf, status = wisp_features([wav], int(n_mels), int(truncate),
                                              os.path.join(tmp, name + ".h5"))
            assert status[0] == 0, f"{name}: wisp features failed"
            want = mel_ref.log_mel(x, int(n_mels), int(truncate), args.shared)
            ok &= report(name, feats[0][:, : nf[0]], want)
        jfk = os.path.join(args.shared, "data", "jfk.flac")
        audio, _ = mel_ref.jfk_audio(jfk)
        for n_mels in (80, 128):
            feats, _, status = wisp_features([jfk], n_mels, 0, os.path.join(tmp, "jfk.h5"))
            assert status[0] == 0, "jfk.flac: wisp features failed"
            ok &= report(f"jfk_{n_mels}", feats[0], mel_ref.log_mel(audio, n_mels, 0, args.shared))
    print("ok" if ok else f"FAILED: some max abs difference exceeds {TOL}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
