"""Where the tensors live: the device to use, autocast's dtype on it, and (CPU) how memory is reused."""

import contextlib
import ctypes
import os
import sys

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str) -> str:
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if mps else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is available (this torch build or machine); use --device cpu")
    if name == "mps" and not mps:
        raise ValueError("--device mps: Apple's MPS backend is not available here; use --device cpu")
    return name


def check_dtype(dtype: str, device_type: str) -> None:
    if dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if dtype == "float16" and device_type != "cuda":
        raise ValueError(
            f"--dtype float16 needs a CUDA GPU (it trains with a GradScaler); on {device_type} use bfloat16 or float32"
        )


def autocast(device_type: str, dtype: str):
    """torch.autocast to dtype ("float32": nothing to do)."""
    if DTYPES[dtype] == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=DTYPES[dtype])


def process_device(name: str, dtype: str) -> str:
    """This process's device: resolve_device(name), one GPU per process under torchrun; dtype checked on it."""
    device = resolve_device(name)
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    check_dtype(dtype, device.split(":")[0])
    return device


def keep_freed_memory() -> None:
    """Linux/glibc: keep freed memory in the heap for reuse instead of returning it to the system.

    The (B, T, vocab) logits and their gradients are tens of MB, so glibc hands them to the system when freed and
    page-faults fresh zeroed memory back in at the next step: on CPU that doubled the step time. Affects this
    process only; the cost is a slightly higher peak RSS. The training CLI calls it; a notebook may too.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-4, 0)  # M_MMAP_MAX: no mmap'd blocks, big ones come from the heap too
        libc.mallopt(-1, 2**30)  # M_TRIM_THRESHOLD: keep up to 1 GiB of free heap
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        pass
