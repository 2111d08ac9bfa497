#!/usr/bin/python3
"""PyTorch reference for wisp's log-mel front end (NUMERICS.md section 1) and the
generator of the committed golden fixtures under tests/data/mel/.

Reference path: openai/whisper audio.py's log_mel_spectrogram, i.e. torch.stft
(n_fft 400, hop 160, periodic Hann, center=True with reflect padding), drop the last
frame, |X|^2, Whisper's own filterbank from mel_filters.npz, log10 clamp at 1e-10,
max - 8 floor, (x + 4) / 4. fp32 throughout, like Whisper.

Inputs are generated deterministically with splitmix64 -> 24-bit uniform floats
(bit-exact in C: common/base/util.c wisp_rng_uniform), so only small summaries of the
outputs are committed. Run with /usr/bin/python3 (torch 1.13, numpy, scipy):

    /usr/bin/python3 tests/reference/mel_ref.py [--shared ../shared]

Writes:
  tests/data/mel/cases.txt          one case per line: name kind seed n n_mels truncate
  tests/data/mel/<name>.f32         summary of the reference features (layout below)
  tests/data/mel/filters_<N>.f32    Whisper's mel_<N> table in banded form (below)
  tests/data/mel/jfk_<N>.f32        summary for ../shared/data/jfk.flac (see jfk_audio)

Summary layout (float32 little-endian), for features F of shape (n_mels, frames):
  n_mels, frames, K, sum(F), sum(|F|),            5 header values (sums in float64
                                                  then rounded)
  row_sums[n_mels], frame_sums[frames],           sums over frames / over mel bins
  idx[K], F[:, idx[k]] for k in 0..K-1            K selected full frames
Banded filter layout, per mel row m: lo, len, values[len] (lo/len as exact floats);
every weight outside [lo, lo+len) is exactly zero.
"""
import argparse
import ctypes
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

N_FFT, HOP, N_SAMPLES = 400, 160, 480000
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT_DIR = os.path.join(ROOT, "tests", "data", "mel")

# name, kind, seed, n samples, n_mels, truncate
CASES = [
    ("noise_80_padded", "noise", 1, 117_000, 80, 0),
    ("noise_128_padded", "noise", 2, 160_000, 128, 0),
    ("noise_80_trunc", "noise", 3, 12_345, 80, 1),
    ("noise_128_trunc", "noise", 4, 100, 128, 1),
    ("mix_80_padded", "mix", 5, 250_000, 80, 0),
    ("mix_128_trunc", "mix", 6, 77_777, 128, 1),
    ("silence_80_padded", "silence", 0, 16_000, 80, 0),
    ("silence_128_trunc", "silence", 0, 3_200, 128, 1),
    ("long31_80_padded", "mix", 7, 496_000, 80, 0),
    ("long31_128_trunc", "noise", 8, 496_000, 128, 1),
]


def splitmix64_uniform(seed, n):
    """The n first wisp_rng_uniform() values after wisp_rng_seed(seed): float32 in [0,1)."""
    golden = np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + golden * np.arange(1, n + 1, dtype=np.uint64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -24)


def make_input(kind, seed, n):
    """Deterministic test signals; every step is an exactly rounded fp32 operation, so
    tests/test_mel.c (s_make_input) produces the same bits.
      noise:   full-scale uniform noise 2u - 1
      silence: zeros
      mix:     a 400 Hz square wave of amplitude 0.5 under a 0.5 s sawtooth envelope
               (quiet stretches exercise the max - 8 floor) plus noise at 0.05"""
    if kind == "silence":
        return np.zeros(n, dtype=np.float32)
    u = splitmix64_uniform(seed, n)
    noise = np.float32(2.0) * u - np.float32(1.0)
    if kind == "noise":
        return noise
    i = np.arange(n)
    square = np.where((i // 20) % 2 == 1, np.float32(0.5), np.float32(-0.5)).astype(np.float32)
    env = (i % 8000).astype(np.float32) / np.float32(8000.0)
    return square * env + np.float32(0.05) * noise


def mel_filters(n_mels, shared):
    with np.load(os.path.join(shared, "data", "mel_filters.npz")) as f:
        return torch.from_numpy(f[f"mel_{n_mels}"])


def log_mel(x, n_mels, truncate, shared):
    """x: float32 numpy array at 16 kHz -> (n_mels, frames) float32 numpy array."""
    x = x[:N_SAMPLES]
    if truncate:
        n = max(320, -(-len(x) // 320) * 320)
    else:
        n = N_SAMPLES
    audio = torch.zeros(n, dtype=torch.float32)
    audio[: len(x)] = torch.from_numpy(np.ascontiguousarray(x))
    window = torch.hann_window(N_FFT)
    stft = torch.stft(audio, N_FFT, HOP, window=window, center=True, pad_mode="reflect",
                      return_complex=True)
    magnitudes = stft[..., :-1].abs() ** 2
    mel_spec = mel_filters(n_mels, shared) @ magnitudes
    log_spec = torch.clamp(mel_spec, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).numpy()


def selected_frames(frames):
    """First, middle and last frames plus every 250th: edges are where padding and
    reflection happen, the stride covers the body."""
    pick = {0, 1, 2, frames // 2, frames - 3, frames - 2, frames - 1}
    pick.update(range(125, frames, 250))
    return sorted(t for t in pick if 0 <= t < frames)


def summary(feat):
    n_mels, frames = feat.shape
    f64 = feat.astype(np.float64)
    idx = selected_frames(frames)
    head = [n_mels, frames, len(idx), f64.sum(), np.abs(f64).sum()]
    parts = [np.array(head, dtype=np.float64), f64.sum(axis=1), f64.sum(axis=0),
             np.array(idx, dtype=np.float64), feat[:, idx].T.reshape(-1).astype(np.float64)]
    return np.concatenate(parts).astype("<f4")


def banded_filters(table):
    out = []
    for row in table:
        nz = np.nonzero(row)[0]
        lo, hi = (int(nz[0]), int(nz[-1]) + 1) if len(nz) else (0, 0)
        out += [float(lo), float(hi - lo)] + [float(v) for v in row[lo:hi]]
    return np.array(out, dtype="<f4")


# --- jfk: an independent decode + soxr resampling path -------------------------------
class _IoSpec(ctypes.Structure):
    _fields_ = [("itype", ctypes.c_int), ("otype", ctypes.c_int), ("scale", ctypes.c_double),
                ("e", ctypes.c_void_p), ("flags", ctypes.c_ulong)]


class _QualitySpec(ctypes.Structure):
    _fields_ = [("precision", ctypes.c_double), ("phase_response", ctypes.c_double),
                ("passband_end", ctypes.c_double), ("stopband_begin", ctypes.c_double),
                ("e", ctypes.c_void_p), ("flags", ctypes.c_ulong)]


def soxr_resample(x, in_rate, out_rate):
    """One-shot libsoxr (SOXR_HQ, float32 mono) through ctypes: the same library as
    wisp but its whole-signal API instead of wisp's streaming soxr_process loop."""
    lib = ctypes.CDLL("libsoxr.so.0")
    lib.soxr_io_spec.restype = _IoSpec
    lib.soxr_io_spec.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.soxr_quality_spec.restype = _QualitySpec
    lib.soxr_quality_spec.argtypes = [ctypes.c_ulong, ctypes.c_ulong]
    lib.soxr_oneshot.restype = ctypes.c_char_p
    lib.soxr_oneshot.argtypes = [ctypes.c_double, ctypes.c_double, ctypes.c_uint,
                                 ctypes.c_void_p, ctypes.c_size_t,
                                 ctypes.POINTER(ctypes.c_size_t), ctypes.c_void_p,
                                 ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t),
                                 ctypes.POINTER(_IoSpec), ctypes.POINTER(_QualitySpec),
                                 ctypes.c_void_p]
    soxr_float32_i, soxr_hq = 0, 4
    io = lib.soxr_io_spec(soxr_float32_i, soxr_float32_i)
    q = lib.soxr_quality_spec(soxr_hq, 0)
    x = np.ascontiguousarray(x, dtype=np.float32)
    olen = int(len(x) * out_rate / in_rate + 0.5)
    y = np.zeros(olen, dtype=np.float32)
    idone, odone = ctypes.c_size_t(0), ctypes.c_size_t(0)
    err = lib.soxr_oneshot(float(in_rate), float(out_rate), 1, x.ctypes.data, len(x),
                           ctypes.byref(idone), y.ctypes.data, olen, ctypes.byref(odone),
                           ctypes.byref(io), ctypes.byref(q), None)
    if err:
        raise RuntimeError(f"soxr_oneshot: {err.decode()}")
    return y[: odone.value]


def jfk_audio(path):
    """jfk.flac -> 16 kHz mono float32 without libsndfile: the sox CLI decodes the FLAC
    to 32-bit float WAV at its own rate and channel count (no rate/remix effects, so sox
    only converts 24-bit ints to float, exactly), scipy reads it, numpy averages the
    channels ((l + r) * 0.5 in fp32) and soxr_oneshot (SOXR_HQ) resamples."""
    import scipy.io.wavfile
    with tempfile.TemporaryDirectory() as tmp:
        wav = os.path.join(tmp, "jfk.wav")
        subprocess.run(["sox", path, "-e", "floating-point", "-b", "32", wav], check=True)
        rate, data = scipy.io.wavfile.read(wav)
    data = data.astype(np.float32)
    mono = data if data.ndim == 1 else (data.sum(axis=1, dtype=np.float32) / np.float32(data.shape[1]))
    return soxr_resample(mono.astype(np.float32), rate, 16000), rate


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", default=os.environ.get("WISP_SHARED", os.path.join(ROOT, "..", "shared")))
    ap.add_argument("--dump", help="also write full reference matrices (.npy) here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.makedirs(OUT_DIR, exist_ok=True)
    with open(os.path.join(OUT_DIR, "cases.txt"), "w") as f:
        f.write("# name kind seed n n_mels truncate (generated by tests/reference/mel_ref.py)\n")
        for name, kind, seed, n, n_mels, trunc in CASES:
            f.write(f"{name} {kind} {seed} {n} {n_mels} {trunc}\n")
    for name, kind, seed, n, n_mels, trunc in CASES:
        feat = log_mel(make_input(kind, seed, n), n_mels, trunc, args.shared)
        summary(feat).tofile(os.path.join(OUT_DIR, f"{name}.f32"))
        if args.dump:
            np.save(os.path.join(args.dump, f"{name}.npy"), feat)
    with np.load(os.path.join(args.shared, "data", "mel_filters.npz")) as f:
        for n_mels in (80, 128):
            banded_filters(f[f"mel_{n_mels}"]).tofile(os.path.join(OUT_DIR, f"filters_{n_mels}.f32"))
    jfk = os.path.join(args.shared, "data", "jfk.flac")
    audio, rate = jfk_audio(jfk)
    print(f"jfk: {rate} Hz -> {len(audio)} samples at 16 kHz", file=sys.stderr)
    for n_mels in (80, 128):
        feat = log_mel(audio, n_mels, 0, args.shared)
        summary(feat).tofile(os.path.join(OUT_DIR, f"jfk_{n_mels}.f32"))
        if args.dump:
            np.save(os.path.join(args.dump, f"jfk_{n_mels}.npy"), feat)
    if args.dump:
        np.save(os.path.join(args.dump, "jfk_16k.npy"), audio)
    total = sum(os.path.getsize(os.path.join(OUT_DIR, p)) for p in os.listdir(OUT_DIR))
    print(f"wrote {OUT_DIR} ({total} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
