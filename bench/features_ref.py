#!/usr/bin/python3
"""PyTorch reference counterpart of bench/bench_features.c, on one thread.

The reference front end is openai/whisper's: load_audio decodes, mixes and resamples
through a subprocess (whisper runs ffmpeg; Debian here has sox, so `sox ... -t f32 -r
16000 -c 1 -`), then log_mel_spectrogram in torch (tests/reference/mel_ref.py). For 16
kHz WAV the decode is scipy.io.wavfile plus the int16 -> float scaling. Inputs are the
same kind as the C benchmark's (30 s of a speech-like signal: 16 kHz mono 16-bit WAV,
44.1 kHz stereo 24-bit FLAC), written with scipy and sox. Each figure is the best of
several rounds, in CPU time of this process plus its sox children (the one-core cost,
as in the C benchmark); *_wall_ms_per_clip gives wall-clock time. Prints ref_* lines:
    /usr/bin/python3 bench/features_ref.py
"""
import math
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import scipy.io.wavfile
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
import mel_ref  # noqa: E402

SECONDS = 30


def speech_like(rate, channels):
    t = np.arange(rate * SECONDS) / rate
    f0 = 140.0 + 30.0 * np.sin(2 * np.pi * 0.3 * t)
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    v = sum(np.sin(h * phase) / h for h in range(1, 7))
    rng = np.random.default_rng(2024)
    cols = [0.25 * env * v + 0.01 * (rng.random(len(t)) - 0.5) * (c + 1) for c in range(channels)]
    return np.stack(cols, axis=1).astype(np.float32)


def cpu_now():
    """CPU seconds of this process and its waited-for children (the sox decoder), at
    microsecond resolution (os.times() counts 10 ms ticks)."""
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ch.ru_utime + ch.ru_stime


def best_time(fn, rounds, reps):
    """(best CPU seconds, best wall seconds) per call over rounds of reps calls."""
    fn()  # warm-up
    best_cpu = best_wall = math.inf
    for _ in range(rounds):
        c0, t0 = cpu_now(), time.perf_counter()
        for _ in range(reps):
            fn()
        best_cpu = min(best_cpu, (cpu_now() - c0) / reps)
        best_wall = min(best_wall, (time.perf_counter() - t0) / reps)
    return best_cpu, best_wall


def main():
    torch.set_num_threads(1)
    shared = os.environ.get("WISP_SHARED", os.path.join(mel_ref.ROOT, "..", "shared"))
    filters = {80: mel_ref.mel_filters(80, shared)}
    window = torch.hann_window(mel_ref.N_FFT)

    def log_mel(audio):
        x = torch.from_numpy(audio[: mel_ref.N_SAMPLES])
        x = torch.nn.functional.pad(x, (0, mel_ref.N_SAMPLES - len(x)))
        stft = torch.stft(x, mel_ref.N_FFT, mel_ref.HOP, window=window, return_complex=True)
        mag = stft[..., :-1].abs() ** 2
        log_spec = torch.clamp(filters[80] @ mag, min=1e-10).log10()
        log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
        return (log_spec + 4.0) / 4.0

    with tempfile.TemporaryDirectory() as tmp:
        wav = os.path.join(tmp, "clip16k.wav")
        flac = os.path.join(tmp, "clip44k.flac")
        x16 = speech_like(16000, 1)[:, 0]
        scipy.io.wavfile.write(wav, 16000, (np.clip(x16, -1, 1) * 32767).astype(np.int16))
        f44 = os.path.join(tmp, "clip44k.wav")
        scipy.io.wavfile.write(f44, 44100, speech_like(44100, 2))
        subprocess.run(["sox", f44, "-b", "24", flac], check=True)

        def load_wav():
            _, data = scipy.io.wavfile.read(wav)
            return data.astype(np.float32) / 32768.0

        def load_flac():
            out = subprocess.run(["sox", flac, "-t", "f32", "-r", "16000", "-c", "1", "-"],
                                 check=True, capture_output=True).stdout
            return np.frombuffer(out, dtype=np.float32).copy()

        clip = load_wav()
        t_mel = best_time(lambda: log_mel(clip), 5, 10)
        t_wav = best_time(lambda: log_mel(load_wav()), 5, 10)
        t_flac = best_time(lambda: log_mel(load_flac()), 3, 4)
        t_flac_dec = best_time(load_flac, 3, 4)
    print(f"ref_mel_ms_per_clip={t_mel[0] * 1e3:.3f}")
    print(f"ref_mel_clips_per_s={1 / t_mel[0]:.1f}")
    print(f"ref_features_wav16k_ms_per_clip={t_wav[0] * 1e3:.3f}")
    print(f"ref_features_wav16k_clips_per_s={1 / t_wav[0]:.1f}")
    print(f"ref_features_flac44k_ms_per_clip={t_flac[0] * 1e3:.3f}")
    print(f"ref_features_flac44k_clips_per_s={1 / t_flac[0]:.1f}")
    print(f"ref_decode_flac44k_ms_per_clip={t_flac_dec[0] * 1e3:.3f}")
    print(f"ref_mel_wall_ms_per_clip={t_mel[1] * 1e3:.3f}")
    print(f"ref_features_wav16k_wall_ms_per_clip={t_wav[1] * 1e3:.3f}")
    print(f"ref_features_flac44k_wall_ms_per_clip={t_flac[1] * 1e3:.3f}")

if __name__ == "__main__":
    main()
