"""Thread count for the PyTorch references of make bench (ops_ref.py, model_ref.py).

torch.set_num_threads does not reach the pool of the OpenBLAS that Debian's torch calls
(through libblas.so.3): without openblas_set_num_threads every product runs on all
cores, and a "1-thread" figure on the calling thread's CPU time exceeds the core's peak."""
import ctypes

import torch

_BLAS = None


def _openblas():
    """The OpenBLAS this process loaded, or None; loaded by a first product."""
    (torch.ones(8, 8) @ torch.ones(8, 8)).sum()
    libs = [l.split()[-1] for l in open("/proc/self/maps") if "libopenblas" in l]
    return ctypes.CDLL(libs[0]) if libs else None


def set_threads(n):
    """n threads for torch and for its BLAS alike."""
    global _BLAS
    if _BLAS is None:
        _BLAS = _openblas() or False
    torch.set_num_threads(n)
    if _BLAS:
        _BLAS.openblas_set_num_threads(n)
