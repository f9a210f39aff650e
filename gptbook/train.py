"""Training: AdamW, warmup + cosine decay, clipping, accumulation, autocast, exact resume, DDP under torchrun.

`train(cfg)` is what notebook 06 calls; `python -m gptbook.train --help` (console script `gptbook-train`) wraps it.
"""

import argparse
import contextlib
import ctypes
import dataclasses
import hashlib
import json
import math
import os
import signal
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from gptbook.data import check_length, get_batch, load_tokens, train_val_split
from gptbook.model import GPT, GPTConfig
from gptbook.sampling import check_sampling_args, generate
from gptbook.tokenizer import decode, encode

CKPT_NAME = "ckpt.pt"
HISTORY_NAME = "history.json"  # the same history as in the checkpoint, for plotting
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# to resume, these must match the checkpoint: they fix the shapes of the parameters
MODEL_KEYS = ("block_size", "n_layer", "n_head", "n_embd", "bias", "pos_emb")
# choices about this run, not the training: on --resume they come from the command line, never from the checkpoint
RUNTIME_KEYS = ("out_dir", "resume", "device", "dtype", "compile", "chunked_loss", "print_digest")
RUNTIME_KEYS += ("prompt", "max_new_tokens", "temperature", "top_k", "top_p", "min_p")
OutOfMemoryError = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def arg(default, help: str, **kw):
    """A TrainConfig field that is also a command-line flag: help text, optional type and choices."""
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    """Every flag of `python -m gptbook.train`, with defaults for a CPU: 2000 steps in a few minutes."""

    # data and checkpoints
    data: str = arg("the-verdict.txt", "UTF-8 text file to train on: first 90%% for training, last 10%% to validate")
    out_dir: str | None = arg("checkpoints", f"folder for {CKPT_NAME} and {HISTORY_NAME}")  # None (Python): no files
    resume: bool = arg(False, f"continue from OUT_DIR/{CKPT_NAME}; flags not given come from the checkpoint")
    # model (GPTConfig)
    block_size: int = arg(32, "context length in tokens (short: on CPU every token costs a 50257-way softmax)")
    n_layer: int = arg(4, "Transformer blocks")
    n_head: int = arg(4, "attention heads per block")
    n_embd: int = arg(64, "embedding width, divisible by n_head (the 50257 x n_embd embedding is most of the model)")
    dropout: float = arg(0.2, "dropout probability; high because 4.6k training tokens are soon memorised")
    bias: bool = arg(True, "biases in Linear and LayerNorm layers, as in GPT-2")
    pos_emb: str = arg("learned", "position information: learned table (GPT-2) or rotary", choices=("learned", "rope"))
    attn_impl: str = arg("sdpa", "attention: fused SDPA kernel or the explicit math", choices=("sdpa", "explicit"))
    chunked_loss: bool = arg(False, "faster, leaner: LM head + cross-entropy in chunks, no (B*T, vocab) logits")
    # optimisation
    batch_size: int = arg(4, "sequences per micro-batch (small: 2000 steps are already 55 passes over the data)")
    grad_accum_steps: int = arg(1, "micro-batches per optimizer step (tokens/step = batch x block x this x processes)")
    max_iters: int = arg(2000, "optimizer steps in total; with --resume, the step to stop at")
    lr: float = arg(5e-4, "peak learning rate; higher ones overfit sooner on this tiny corpus")
    min_lr: float = arg(5e-5, "learning rate at the end of the cosine decay (lr / 10)")
    # the schedule does not depend on max_iters, so N steps + --resume to 2N = 2N steps in one run
    warmup_iters: int = arg(100, "steps of linear warmup from 0 to lr")
    lr_decay_iters: int = arg(2000, "step where the cosine decay reaches min_lr, constant after (~ max_iters)")
    weight_decay: float = arg(0.1, "AdamW weight decay, on weight matrices only")
    beta1: float = arg(0.9, "AdamW beta1")
    beta2: float = arg(0.99, "AdamW beta2 (0.99, not 0.999: each step sees few tokens, so average over fewer)")
    grad_clip: float = arg(1.0, "clip the global gradient norm to this (0: no clipping); the norm is logged")
    # evaluation
    eval_interval: int = arg(100, "every this many steps: mean train/val loss, perplexity, one log line, checkpoint")
    eval_iters: int = arg(10, "batches per split in each evaluation (the same batches every time)")
    # system
    device: str = arg("auto", "auto: cuda, else mps, else cpu", choices=("auto", "cpu", "cuda", "mps"))
    dtype: str = arg("float32", "autocast dtype; float16 only on CUDA (with a GradScaler)", choices=tuple(DTYPES))
    compile: bool = arg(False, "torch.compile the model (a slow start; pays off on long GPU runs)")
    seed: int = arg(1337, "seed for the initial weights, the batches, dropout and the sample")
    print_digest: bool = arg(False, "print a sha256 of the final parameters on every process (do DDP ranks agree?)")
    # the sample printed after training
    prompt: str = arg("I had always thought", "text to continue after training")
    max_new_tokens: int = arg(100, "tokens to sample after training (0: no sample)")
    temperature: float = arg(0.8, "sampling temperature (0: greedy)")
    top_k: int | None = arg(None, "sample among the k most likely tokens only", type=int)
    top_p: float | None = arg(None, "nucleus sampling: the smallest set of tokens with probability >= p", type=float)
    min_p: float | None = arg(None, "drop tokens less likely than min_p x the top token's probability", type=float)

    def __post_init__(self):
        self.data = str(self.data)  # a Path would not load back with weights_only=True
        self.out_dir = None if self.out_dir is None else str(self.out_dir)
        sizes = ("block_size", "n_layer", "n_head", "n_embd", "batch_size", "grad_accum_steps", "eval_interval")
        for name in (*sizes, "eval_iters"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_iters", "min_lr", "weight_decay", "grad_clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"--lr must be > 0, got {self.lr}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"--{name} must be in [0, 1), got {getattr(self, name)}")
        if self.warmup_iters < 0:
            raise ValueError(f"--warmup_iters must be >= 0, got {self.warmup_iters}")
        if self.lr_decay_iters < self.warmup_iters:
            raise ValueError(
                f"--lr_decay_iters ({self.lr_decay_iters}) must be >= --warmup_iters ({self.warmup_iters})"
            )
        model_config(self)  # GPTConfig's own checks: n_embd % n_head, dropout in [0, 1), ...
        check_sampling_args(self.temperature, self.top_k, self.top_p, self.min_p, self.max_new_tokens)


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def model_config(cfg: TrainConfig) -> GPTConfig:
    return GPTConfig(
        block_size=cfg.block_size,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        n_embd=cfg.n_embd,
        dropout=cfg.dropout,
        bias=cfg.bias,
        attn_impl=cfg.attn_impl,
        chunked_loss=cfg.chunked_loss,
        pos_emb=cfg.pos_emb,
    )


class TrainingDiverged(Exception):
    """The loss became NaN or infinite; the last checkpoint on disk is left as it was."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) stopped training after a full step; a checkpoint of that step was saved."""


# ---------------------------------------------------------------- the pieces of a training step


def get_lr(step: int, cfg: TrainConfig) -> float:
    """Learning rate for `step` (0-based): linear warmup to cfg.lr, cosine decay to cfg.min_lr, then constant."""
    if step < cfg.warmup_iters:
        return cfg.lr * (step + 1) / (cfg.warmup_iters + 1)
    if step >= cfg.lr_decay_iters:
        return cfg.min_lr
    ratio = (step - cfg.warmup_iters) / (cfg.lr_decay_iters - cfg.warmup_iters)  # 0 -> 1
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.lr - cfg.min_lr)


def configure_optimizer(model: nn.Module, weight_decay: float, lr: float, betas=(0.9, 0.99)):
    """AdamW that decays weight matrices only: no decay on biases, LayerNorm gains and embeddings.

    The token embedding is also lm_head's weight (tying); parameters() yields it once, in the no-decay group.
    """
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2 and id(p) not in embeddings]
    no_decay = [p for p in params if p.dim() < 2 or id(p) in embeddings]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    try:  # fused: one kernel for all parameters (CUDA; CPU since torch 2.4), several times faster than a loop
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), fused=True)
    except (RuntimeError, ValueError):  # this device or torch version has no fused AdamW
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas))


@torch.no_grad()
def estimate_loss(model, splits: dict, cfg: TrainConfig, device="cpu", autocast=None) -> dict:
    """Mean loss over cfg.eval_iters batches of each split; the batches are the same at every evaluation."""
    autocast = autocast or contextlib.nullcontext
    was_training = model.training
    model.eval()
    out = {}
    for name, ids in splits.items():
        g = torch.Generator().manual_seed(cfg.seed + 1)  # its own generator: evaluating never moves training's RNG
        losses = []
        for _ in range(cfg.eval_iters):
            x, y = get_batch(ids, model.config.block_size, cfg.batch_size, g, device)
            with autocast():
                losses.append(model(x, y)[1].float())
        out[name] = torch.stack(losses).mean().item()
    model.train(was_training)
    return out


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


def keep_freed_memory() -> None:
    """Linux/glibc: keep freed memory in the heap for reuse instead of returning it to the system.

    The (B, T, vocab) logits and their gradients are tens of MB, so glibc hands them to the system when freed and
    page-faults fresh zeroed memory back in at the next step: on CPU that doubled the step time. Affects this
    process only; the cost is a slightly higher peak RSS.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-4, 0)  # M_MMAP_MAX: no mmap'd blocks, big ones come from the heap too
        libc.mallopt(-1, 2**30)  # M_TRIM_THRESHOLD: keep up to 1 GiB of free heap
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        pass


def check_writable(out_dir) -> None:
    """Fail before training, not at the first checkpoint, when out_dir cannot be written."""
    try:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir):
            pass
    except OSError as e:
        raise OSError(f"--out_dir {out_dir} is not writable: {e.strerror or e}") from None


# ---------------------------------------------------------------- checkpoints


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
    model = GPT(GPTConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    return model


def param_digest(model: nn.Module) -> str:
    """sha256 of every parameter's bytes, in state_dict order: equal digests = identical models."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def one_line(e: BaseException, limit: int = 300) -> str:
    lines = str(e).strip().splitlines() or [type(e).__name__]
    return lines[0][:limit]


class _StopOnSignal:
    """First Ctrl-C (SIGINT) or SIGTERM: finish the current step, save, stop. A second Ctrl-C stops at once."""

    def __init__(self):
        self.requested, self.previous = False, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread only
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


# ---------------------------------------------------------------- the trainer


def train(cfg: TrainConfig, model: GPT | None = None, log=print, progress: bool = True, checkpoint: dict | None = None):
    """Train for steps checkpoint-step .. cfg.max_iters; returns (model, history).

    model: a GPT built elsewhere (its config replaces cfg's model fields), or None to build one from cfg.
    log: called with one string per event (start, every evaluation, end); None for silence.
    progress: a tqdm bar (on a terminal only). checkpoint: an already loaded checkpoint for cfg.resume.
    history: one dict per step: step (steps done), lr, loss, grad_norm, tokens_per_s, and train_loss, val_loss, ppl
    (None except at evaluations; the first evaluation, step 0, has lr, loss, grad_norm and tokens_per_s None).
    """
    log = log or (lambda msg: None)
    ddp = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if ddp else (0, 1)
    master = rank == 0
    device = resolve_device(cfg.device)
    if ddp and device == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    device_type = device.split(":")[0]
    check_dtype(cfg.dtype, device_type)
    if device_type == "cpu":
        keep_freed_memory()
    if model is not None:  # its shape wins; cfg keeps the rest (and records the shape in the checkpoint)
        own = (*MODEL_KEYS, "dropout", "attn_impl", "chunked_loss")
        cfg = dataclasses.replace(cfg, **{k: getattr(model.config, k) for k in own})

    train_ids, val_ids = train_val_split(load_tokens(cfg.data))
    check_length(train_ids, cfg.block_size, f"{cfg.data}: the training split (90%)")
    check_length(val_ids, cfg.block_size, f"{cfg.data}: the validation split (10%)")
    ckpt_path = Path(cfg.out_dir) / CKPT_NAME if cfg.out_dir is not None else None
    if cfg.resume:
        if ckpt_path is None:
            raise ValueError("resume needs an out_dir to resume from")
        if checkpoint is None:
            if not ckpt_path.exists():
                raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}; train without --resume first")
            checkpoint = load_checkpoint(ckpt_path)
        saved = checkpoint["model_config"]
        wrong = [f"--{k} {getattr(cfg, k)}" for k in MODEL_KEYS if k in saved and saved[k] != getattr(cfg, k)]
        if wrong:
            have = ", ".join(f"{k} {saved[k]}" for k in MODEL_KEYS if k in saved)
            verb = "disagrees" if len(wrong) == 1 else "disagree"
            raise ValueError(f"{' '.join(wrong)} {verb} with the checkpoint {ckpt_path} ({have}); drop the flag")
    if ckpt_path is not None and master:
        check_writable(cfg.out_dir)

    torch.manual_seed(cfg.seed)  # the same initial weights on every process
    model = model if model is not None else GPT(model_config(cfg))
    model.to(device)
    optimizer = configure_optimizer(model, cfg.weight_decay, cfg.lr, (cfg.beta1, cfg.beta2))
    scaler = torch.amp.GradScaler(device_type, enabled=cfg.dtype == "float16")
    data_gen = torch.Generator().manual_seed(cfg.seed + rank)  # each process draws its own batches
    step, best_val, history = 0, float("inf"), []
    if cfg.resume:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if scaler.is_enabled() and checkpoint.get("scaler"):
            scaler.load_state_dict(checkpoint["scaler"])
        step, best_val = checkpoint["step"], checkpoint.get("best_val_loss", best_val)
        history = list(checkpoint.get("history", []))
        rng = checkpoint.get("rng")
        if rng and world == 1:  # exact: the batches and dropout masks continue as if never stopped
            torch.set_rng_state(rng["torch"])
            data_gen.set_state(rng["data"])
            if device_type == "cuda" and rng.get("cuda") is not None:
                torch.cuda.set_rng_state(rng["cuda"], device)
        else:  # several processes: fresh streams, different on each process and from the first run's
            torch.manual_seed(cfg.seed + 1000 * step + rank)
            data_gen.manual_seed(cfg.seed + 1000 * step + rank + 1)
    raw_model = model
    if cfg.compile:
        model = torch.compile(model)
    if ddp:
        model = DDP(model, device_ids=[torch.device(device).index] if device_type == "cuda" else None)
    if DTYPES[cfg.dtype] == torch.float32:
        autocast = contextlib.nullcontext
    else:
        autocast = lambda: torch.autocast(device_type, dtype=DTYPES[cfg.dtype])  # noqa: E731
    splits = {"train": train_ids, "val": val_ids}
    tokens_per_step = cfg.batch_size * cfg.block_size * cfg.grad_accum_steps * world
    saved_step = checkpoint["step"] if cfg.resume else None

    def state():
        rng = {
            "torch": torch.get_rng_state(),
            "data": data_gen.get_state(),
            "cuda": torch.cuda.get_rng_state(device) if device_type == "cuda" else None,
        }
        return {
            "model": raw_model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "step": step,
            "config": asdict(cfg),
            "model_config": asdict(raw_model.config),
            "best_val_loss": best_val,
            "rng": rng,
            "history": history,
        }

    def save():
        nonlocal saved_step
        if master and ckpt_path is not None and saved_step != step:
            save_checkpoint(ckpt_path, state())
            saved_step = step

    def evaluate(entry):
        nonlocal best_val
        losses = estimate_loss(raw_model, splits, cfg, device, autocast)
        entry.update(train_loss=losses["train"], val_loss=losses["val"], ppl=math.exp(min(losses["val"], 700)))
        best_val = min(best_val, losses["val"])
        lr = f" | lr {entry['lr']:.2e}" if entry["lr"] is not None else ""
        emit(
            f"step {step:>{len(str(cfg.max_iters))}}/{cfg.max_iters} | train {losses['train']:.4f} | "
            f"val {losses['val']:.4f} | ppl {entry['ppl']:.1f}{lr}"
        )

    bar = None

    def emit(msg):
        if bar is None:
            log(msg)
        else:
            with bar.external_write_mode():
                log(msg)

    n_params, n_body = raw_model.num_params(), raw_model.num_params(non_embedding=True)
    emit(
        f"{n_params / 1e6:.2f}M parameters ({n_body / 1e6:.2f}M without embeddings) | {device} {cfg.dtype} | "
        f"{len(train_ids)} train / {len(val_ids)} val tokens | {tokens_per_step} tokens per step"
    )
    if cfg.resume:
        emit(f"resumed from {ckpt_path} at step {step}")
    if step >= cfg.max_iters and cfg.resume:
        emit(f"the checkpoint is at step {step}, max_iters is {cfg.max_iters}: nothing to train")
    if not history and master:  # a first evaluation at step 0: where the loss curve starts
        entry = dict(step=0, lr=None, loss=None, grad_norm=None, tokens_per_s=None)
        evaluate(entry)
        history.append(entry)

    model.train()
    bar_off = not (progress and master) or step >= cfg.max_iters
    bar = tqdm(total=cfg.max_iters, initial=step, desc="train", unit="step", disable=True if bar_off else None)
    if bar.disable:
        bar = None
    try:
        with _StopOnSignal() as stop:
            while step < cfg.max_iters:
                t0 = time.perf_counter()
                lr = get_lr(step, cfg)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss_sum = torch.zeros((), device=device)
                for micro in range(cfg.grad_accum_steps):
                    x, y = get_batch(train_ids, cfg.block_size, cfg.batch_size, data_gen, device)
                    last = micro == cfg.grad_accum_steps - 1
                    with model.no_sync() if ddp and not last else contextlib.nullcontext():  # all-reduce once
                        with autocast():
                            _, loss = model(x, y)
                        loss = loss / cfg.grad_accum_steps  # mean over micro-batches, as one big batch would
                        scaler.scale(loss).backward()
                    loss_sum += loss.detach().float()
                stats = torch.stack([loss_sum, torch.tensor(float(stop.requested), device=device)])
                if ddp:  # every process sees the same loss and stops at the same step
                    dist.all_reduce(stats)
                    stats[0] /= world
                loss_val, stop_all = stats[0].item(), stats[1].item() > 0
                scaler.unscale_(optimizer)  # no-op unless float16
                clip = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
                grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), clip).item()  # pre-clip norm
                if not math.isfinite(loss_val) or (not scaler.is_enabled() and not math.isfinite(grad_norm)):
                    kept = (
                        f"the last good checkpoint, {ckpt_path} (step {saved_step}), is untouched"
                        if saved_step is not None
                        else "no checkpoint was written"
                    )
                    hint = "a lower --lr" + (" or --grad_clip 1.0" if cfg.grad_clip == 0 else "")
                    raise TrainingDiverged(
                        f"loss is {loss_val} at step {step + 1} (grad norm {grad_norm}): training diverged and "
                        f"stopped; {kept}. Try {hint}"
                    )
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                dt = time.perf_counter() - t0
                entry = dict(step=step, lr=lr, loss=loss_val, grad_norm=grad_norm, tokens_per_s=tokens_per_step / dt)
                entry.update(train_loss=None, val_loss=None, ppl=None)
                history.append(entry)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss_val:.4f}", refresh=False)
                if master and (step % cfg.eval_interval == 0 or step == cfg.max_iters):
                    evaluate(entry)
                    save()
                if stop_all:
                    save()
                    where = f"checkpoint saved to {ckpt_path} (resume with --resume)" if ckpt_path else "nothing saved"
                    err = TrainingInterrupted(f"stopped at step {step}; {where}")
                    err.model, err.history = raw_model, history
                    raise err
            save()
    finally:
        if bar is not None:
            bar.close()
    if history and history[-1]["val_loss"] is not None and master:
        emit(f"done: step {step}, best val loss {best_val:.4f}")
    return raw_model, history


# ---------------------------------------------------------------- sampling (both CLIs)


def prompt_ids(prompt: str, block_size: int, note=None) -> torch.Tensor:
    """The prompt as (1, T) token ids; longer than block_size: its last block_size tokens, with a note."""
    if not prompt:
        raise ValueError("--prompt is empty; give some text to continue")
    try:
        ids = encode(prompt)
    except ValueError:
        raise ValueError("--prompt contains <|endoftext|>, the special end-of-document token; remove it") from None
    if len(ids) > block_size:
        if note:
            note(f"note: the prompt is {len(ids)} tokens > block_size {block_size}: keeping its last {block_size}")
        ids = ids[-block_size:]
    return torch.tensor([ids], dtype=torch.long)


def sample_text(model, ids, max_new_tokens, temperature=1.0, top_k=None, top_p=None, min_p=None, seed=1337) -> str:
    """Prompt ids (1, T) + max_new_tokens sampled with the KV cache, decoded to text."""
    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    out = generate(model, ids.to(device), max_new_tokens, temperature, top_k, top_p, min_p, generator=g)
    return decode(out[0].tolist())


# ---------------------------------------------------------------- command line


class CliParser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage + error
        print(f"error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def add_config_args(parser, exclude=(), suppress=True):
    """One flag per TrainConfig field. suppress: flags not given are absent from the result (for --resume)."""
    for f in dataclasses.fields(TrainConfig):
        if f.name in exclude:
            continue
        help = f.metadata["help"]
        help += "" if "(default:" in help else f" (default: {f.default})"
        kw = dict(default=argparse.SUPPRESS if suppress else f.default, help=help)
        if f.name == "resume":
            parser.add_argument("--resume", action="store_true", **kw)
        elif isinstance(f.default, bool):
            parser.add_argument(f"--{f.name}", action=argparse.BooleanOptionalAction, **kw)
        else:
            typ = f.metadata.get("type") or type(f.default)
            parser.add_argument(f"--{f.name}", type=typ, choices=f.metadata.get("choices"), **kw)
    return parser


def build_parser():
    p = CliParser(
        prog="python -m gptbook.train",
        description="Train a small GPT on a text file; print a sample when done. Ctrl-C saves a checkpoint and stops.",
        epilog="Multi-process: torchrun --standalone --nproc_per_node=2 -m gptbook.train ... "
        "Set GPTBOOK_DEBUG=1 to see tracebacks instead of one-line errors.",
    )
    return add_config_args(p)


def config_from_args(passed: dict) -> tuple[TrainConfig, dict | None]:
    """A fresh config from the flags given; with --resume, the checkpoint's config updated by the flags given."""
    if not passed.get("resume"):
        return TrainConfig(**passed), None
    path = Path(passed.get("out_dir", FIELDS["out_dir"].default)) / CKPT_NAME
    if not path.exists():
        raise FileNotFoundError(f"--resume: no checkpoint at {path}; train without --resume first")
    ckpt = load_checkpoint(path)
    saved = {k: v for k, v in ckpt["config"].items() if k in FIELDS and k not in RUNTIME_KEYS}
    return TrainConfig(**{**saved, **passed}), ckpt


@contextlib.contextmanager
def distributed(device: str):
    """Under torchrun (RANK set): a process group, gloo on CPU, nccl on CUDA; yields (rank, world_size)."""
    if "RANK" not in os.environ:
        yield 0, 1
        return
    if device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if device == "cuda" else "gloo")
    try:
        yield dist.get_rank(), dist.get_world_size()
    finally:
        dist.destroy_process_group()


def run_cli(body, argv=None) -> int:
    """Run a CLI body: expected failures become one line on stderr and an exit code, never a traceback."""
    rank = os.environ.get("RANK", "0")
    who = "" if rank == "0" else f"[rank {rank}] "
    try:
        return body(argv) or 0
    except SystemExit as e:  # argparse: --help (0) or a bad flag (2)
        return e.code if isinstance(e.code, int) else 2
    except TrainingInterrupted as e:
        if rank == "0":  # the process that saved
            print(f"interrupted: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"{who}interrupted: stopped at once, nothing saved", file=sys.stderr)
        return 130
    except (TrainingDiverged, ValueError, OSError, OutOfMemoryError) as e:
        if os.environ.get("GPTBOOK_DEBUG"):
            raise
        print(f"{who}error: {one_line(e, 1000)}", file=sys.stderr)
        return 1 if isinstance(e, TrainingDiverged) else 2


def _main(argv):
    cfg, ckpt = config_from_args(vars(build_parser().parse_args(argv)))
    note = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    ids = prompt_ids(cfg.prompt, cfg.block_size, note) if cfg.max_new_tokens > 0 else None  # fail early
    with distributed(resolve_device(cfg.device)) as (rank, world):
        t0, start = time.perf_counter(), ckpt["step"] if ckpt else 0
        model, history = train(cfg, log=print if rank == 0 else None, checkpoint=ckpt)
        steps = max(0, history[-1]["step"] - start) if history else 0
        if rank == 0 and steps:
            dt = time.perf_counter() - t0
            tokens = steps * cfg.batch_size * cfg.block_size * cfg.grad_accum_steps * world
            print(f"{steps} steps in {dt:.1f} s ({tokens / dt:,.0f} tokens/s)")
        if cfg.print_digest:
            print(f"rank {rank} parameter sha256 {param_digest(model)}", flush=True)
        if rank == 0 and ids is not None:
            text = sample_text(
                model, ids, cfg.max_new_tokens, cfg.temperature, cfg.top_k, cfg.top_p, cfg.min_p, cfg.seed
            )
            print(f"--- sample ---\n{text}")


def main(argv=None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
