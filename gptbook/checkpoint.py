"""Checkpoints: written atomically, loaded with weights_only=True, turned back into a model."""

import contextlib
import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt

from gptbook.model import GPT, GPTConfig
from gptbook.rng import derive_seed

CKPT_NAME = "ckpt.pt"
HISTORY_NAME = "history.json"  # the same history as in the checkpoint, for plotting
LOCK_NAME = "lock.txt"  # locked (flock) while a run trains into the folder; the lock dies with the process
# model fields that may change on resume: no parameter's shape depends on them
FREE_MODEL_KEYS = ("dropout", "attn_impl", "chunked_loss")
RESUME_KEYS = ("optimizer", "rng", "history", "best_val_loss")  # what training needs beyond the model


def one_line(e: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    lines = str(e).strip().splitlines() or [type(e).__name__]
    return lines[0][:limit]


def write_atomic(path: Path, write) -> None:
    """write(f) into a new temporary file beside path, fsync, then rename it onto path.

    A crash mid-write never leaves a half file; the temporary name is unique and created with O_EXCL (mkstemp), so
    two writers never share it and a file or symlink planted there is never followed.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the file from other users
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def save_checkpoint(path, state: dict) -> None:
    """The checkpoint, then history.json, each written atomically; a failed write raises a one-line OSError."""
    path = Path(path)
    try:
        write_atomic(path, lambda f: torch.save(state, f))
    except (OSError, RuntimeError) as e:  # torch's writer: RuntimeError "unexpected pos" on a full disk
        why = (e.strerror or one_line(e)) if isinstance(e, OSError) else "the write failed: is the disk full?"
        raise OSError(f"could not save the checkpoint {path}: {why}; the previous one, if any, is untouched") from None
    if state.get("history") is not None:
        try:
            write_atomic(path.with_name(HISTORY_NAME), lambda f: f.write(json.dumps(state["history"]).encode()))
        except OSError as e:
            why = e.strerror or one_line(e)
            raise OSError(f"{path} saved (step {state.get('step')}), but {HISTORY_NAME} could not be: {why}") from None


def load_checkpoint(path, map_location="cpu") -> dict:
    """A checkpoint dict, loaded with weights_only=True (tensors and plain Python values only, no code), checked."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, random bytes, a pickle with code in it, ...
        if "Unsupported global" in str(e):  # a class or function to call: what weights_only=True refuses
            raise ValueError(f"{path} holds Python code, not only tensors and numbers: refused (never run)") from None
        raise ValueError(f"checkpoint {path} is truncated or corrupt ({one_line(e)})") from None
    check_checkpoint(ckpt, path)
    return ckpt


def check_checkpoint(ckpt, path, resume: bool = False) -> None:
    """The whole structure, field by field (resume: also what training needs): a ValueError naming the bad one."""

    def need(ok, field: str, why: str):
        if not ok:
            raise ValueError(f"{path} is not a usable gptbook checkpoint: {field} {why}")

    need(isinstance(ckpt, dict), "the file", "does not hold a dict")
    for key in ("model", "model_config", "config", "step") + (RESUME_KEYS if resume else ()):
        need(key in ckpt, key, "is missing")
    need(isinstance(ckpt["model"], dict) and all(map(torch.is_tensor, ckpt["model"].values())), "model", "is no dict")
    need(isinstance(ckpt["config"], dict), "config", f"is {type(ckpt['config']).__name__}, not a dict")
    need(type(ckpt["step"]) is int and ckpt["step"] >= 0, "step", f"must be an integer >= 0, not {ckpt['step']!r}")
    need(isinstance(ckpt.get("history", []), list), "history", "is not a list")
    need(isinstance(ckpt.get("optimizer", {}), dict), "optimizer", "is not a dict")
    need(type(ckpt.get("best_val_loss", 0.0)) in (int, float), "best_val_loss", "is not a number")
    rng = ckpt.get("rng", {})
    need(isinstance(rng, dict) and all(torch.is_tensor(g) for g in rng.values()), "rng", "is not a dict of states")
    mc = ckpt["model_config"]
    need(isinstance(mc, dict), "model_config", f"is {type(mc).__name__}, not a dict")
    vocab = ckpt.get("vocab")
    need(vocab is None or (isinstance(vocab, str) and len(vocab) == mc.get("vocab_size")), "vocab", "does not match "
         "model_config's vocab_size")  # fmt: skip
    try:
        with torch.device("meta"):  # the shapes, no memory
            expected = GPT(GPTConfig(**mc)).state_dict()
    except (TypeError, ValueError) as e:
        need(False, "model_config", f"is invalid ({one_line(e)})")
    shape = ", ".join(f"{k} {mc[k]}" for k in ("vocab_size", "block_size", "n_layer", "n_embd"))
    for name in sorted(expected.keys() | ckpt["model"].keys()):
        t, want = ckpt["model"].get(name), expected.get(name)
        need(t is not None, f"weight {name}", "is missing")
        need(want is not None, f"weight {name}", "is not part of this model")
        need(
            t.shape == want.shape,
            f"weight {name}",
            f"is {list(t.shape)}, model_config ({shape}) needs {list(want.shape)}",
        )
        need(not t.is_floating_point() or bool(torch.isfinite(t).all()), f"weight {name}", "holds NaN or inf")


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
    if (Path(out_dir) / CKPT_NAME).is_dir():
        raise OSError(f"{Path(out_dir) / CKPT_NAME} is a folder: the checkpoint cannot be written there")


@contextlib.contextmanager
def lock_out_dir(out_dir):
    """Hold out_dir (None: nothing) for one run: a second run on it fails at once, in one line."""
    if out_dir is None:
        yield
        return
    check_writable(out_dir)
    with open(Path(out_dir) / LOCK_NAME, "a+") as f:
        try:
            if fcntl is not None:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            else:
                msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
        except (BlockingIOError, PermissionError):  # held by another process
            f.seek(0)
            who = f.read().strip() or "another process"
            raise OSError(f"--out_dir {out_dir} is in use by another run ({who}); wait or pick another") from None
        f.truncate(0)
        f.write(f"pid {os.getpid()}\n")
        f.flush()
        yield


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
        "vocab": t.vocab,
    }


def resume_trainer(t, ckpt: dict | None = None) -> None:
    """Put a checkpoint (loaded from the trainer's out_dir if not given) back into a Trainer of the same shape."""
    if t.ckpt_path is None:
        raise ValueError("resume needs an out_dir to resume from")
    if ckpt is None:
        if not t.ckpt_path.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {t.ckpt_path}; train without --resume first")
        ckpt = load_checkpoint(t.ckpt_path)
    check_checkpoint(ckpt, t.ckpt_path, resume=True)
    check_resumable(ckpt, t.model.config, t.ckpt_path)
    t.model.load_state_dict(ckpt["model"])
    try:
        load_optimizer(t.optimizer, ckpt["optimizer"])
        if t.scaler.is_enabled() and ckpt.get("scaler"):
            t.scaler.load_state_dict(ckpt["scaler"])
        for name, g in t.rngs.items():
            if t.world == 1:  # exact: the batches and dropout masks continue as if never stopped
                g.set_state(ckpt["rng"][name])
            else:  # several processes: fresh streams, different on each and from the first run's
                g.manual_seed(derive_seed(t.cfg.seed, f"{name}@{t.step}", t.rank))
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{t.ckpt_path}: cannot restore the optimizer, scaler or rng state ({one_line(e)})") from None
    t.step, t.best_val = ckpt["step"], ckpt["best_val_loss"]
    t.history, t.saved_step = list(ckpt["history"]), ckpt["step"]


def load_optimizer(optimizer, state: dict) -> None:
    """optimizer.load_state_dict, then a check that each moment has its parameter's shape (torch does not)."""
    optimizer.load_state_dict(state)
    for group in optimizer.param_groups:
        for p in group["params"]:
            for name, v in optimizer.state.get(p, {}).items():
                if torch.is_tensor(v) and v.dim() and v.shape != p.shape:
                    raise ValueError(f"optimizer {name} is {list(v.shape)}, its parameter {list(p.shape)}")
