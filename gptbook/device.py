"""Where the tensors live: the device to use, and autocast's dtype on it."""

import contextlib
import os

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
