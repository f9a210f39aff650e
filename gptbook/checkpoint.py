"""Checkpoints: written atomically, loaded with weights_only=True, turned back into a model."""

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch

from gptbook.model import GPT, GPTConfig
from gptbook.rng import derive_seed

CKPT_NAME = "ckpt.pt"
HISTORY_NAME = "history.json"  # the same history as in the checkpoint, for plotting
# model fields that may change on resume: no parameter's shape depends on them
FREE_MODEL_KEYS = ("dropout", "attn_impl", "chunked_loss")


def one_line(e: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    lines = str(e).strip().splitlines() or [type(e).__name__]
    return lines[0][:limit]


def save_checkpoint(path, state: dict) -> None:
    """torch.save to a temporary file, then rename: a crash mid-write never leaves a half checkpoint."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if state.get("history") is not None:
        tmp = path.with_name(HISTORY_NAME + ".tmp")
        tmp.write_text(json.dumps(state["history"]))
        os.replace(tmp, path.with_name(HISTORY_NAME))


def load_checkpoint(path, map_location="cpu") -> dict:
    """A checkpoint dict, loaded with weights_only=True (tensors and plain Python values only, no code)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, random bytes, a pickle with code in it, ...
        raise ValueError(f"checkpoint {path} is truncated or corrupt ({one_line(e)})") from None
    missing = {"model", "model_config", "config", "step"} - set(ckpt if isinstance(ckpt, dict) else ())
    if missing:
        raise ValueError(f"{path} is not a gptbook checkpoint (missing {', '.join(sorted(missing))})")
    return ckpt


def model_from_checkpoint(ckpt: dict) -> GPT:
    """The trained GPT of a loaded checkpoint."""
    model = GPT(GPTConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    return model


def param_digest(model: torch.nn.Module) -> str:
    """sha256 of every parameter's bytes, in state_dict order: equal digests = identical models."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_writable(out_dir) -> None:
    """Fail before training, not at the first checkpoint, when out_dir cannot be written."""
    try:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir):
            pass
    except OSError as e:
        raise OSError(f"--out_dir {out_dir} is not writable: {e.strerror or e}") from None


def check_resumable(ckpt: dict, config: GPTConfig, path) -> None:
    """The checkpoint's model has config's shape; else a ValueError naming the flags that disagree."""
    saved = ckpt["model_config"]
    keys = [k for k in saved if k not in FREE_MODEL_KEYS]
    wrong = [f"--{k} {getattr(config, k)}" for k in keys if saved[k] != getattr(config, k)]
    if wrong:
        have = ", ".join(f"{k} {saved[k]}" for k in keys if k != "vocab_size")
        verb = "disagrees" if len(wrong) == 1 else "disagree"
        raise ValueError(f"{' '.join(wrong)} {verb} with the checkpoint {path} ({have}); drop the flag")


def trainer_state(t) -> dict:
    """What a checkpoint holds: everything a gptbook.train.Trainer needs to continue bit for bit."""
    return {
        "model": t.model.state_dict(),
        "optimizer": t.optimizer.state_dict(),
        "scaler": t.scaler.state_dict() if t.scaler.is_enabled() else None,
        "step": t.step,
        "config": dataclasses.asdict(t.cfg),
        "model_config": dataclasses.asdict(t.model.config),
        "best_val_loss": t.best_val,
        "rng": {name: g.get_state() for name, g in t.rngs.items()},
        "history": t.history,
    }


def resume_trainer(t, ckpt: dict | None = None) -> None:
    """Put a checkpoint (loaded from the trainer's out_dir if not given) back into a Trainer of the same shape."""
    if t.ckpt_path is None:
        raise ValueError("resume needs an out_dir to resume from")
    if ckpt is None:
        if not t.ckpt_path.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {t.ckpt_path}; train without --resume first")
        ckpt = load_checkpoint(t.ckpt_path)
    check_resumable(ckpt, t.model.config, t.ckpt_path)
    t.model.load_state_dict(ckpt["model"])
    t.optimizer.load_state_dict(ckpt["optimizer"])
    if t.scaler.is_enabled() and ckpt.get("scaler"):
        t.scaler.load_state_dict(ckpt["scaler"])
    t.step, t.best_val = ckpt["step"], ckpt.get("best_val_loss", t.best_val)
    t.history, t.saved_step = list(ckpt.get("history", [])), t.step
    for name, g in t.rngs.items():
        if t.world == 1:  # exact: the batches and dropout masks continue as if never stopped
            g.set_state(ckpt["rng"][name])
        else:  # several processes: fresh streams, different on each and from the first run's
            g.manual_seed(derive_seed(t.cfg.seed, f"{name}@{t.step}", t.rank))
