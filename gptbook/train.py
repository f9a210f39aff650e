"""Training (chapter 06): AdamW, warmup + cosine decay, clipping, accumulation, autocast, exact resume, DDP.

`Trainer` holds a run's state (model, optimizer, scaler, generators, step, history) and its steps;
`train(cfg)` is the loop around them, what notebook 06 calls. The command line is in `gptbook.cli`.
"""

import contextlib
import dataclasses
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from gptbook.checkpoint import CKPT_NAME, check_writable, lock_out_dir, resume_trainer, save_checkpoint, trainer_state
from gptbook.data import get_batch, load_char_splits, load_splits
from gptbook.device import DTYPES, autocast, process_device
from gptbook.model import GPT, GPTConfig
from gptbook.optim import configure_optimizer, get_lr
from gptbook.progress import progress_bar
from gptbook.rng import derive_seed, generator, lend_global_rng
from gptbook.tokenizer import VOCAB_SIZE


def arg(default, help: str, **kw):
    """A TrainConfig field that is also a command-line flag: help text, optional type and choices."""
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig(GPTConfig):
    """The model's fields (GPTConfig) plus the run's, with defaults for a CPU: 2000 steps in a few minutes."""

    # the model: GPTConfig's fields, three with other defaults here
    block_size: int = 32  # short: on CPU every token costs a 50257-way softmax
    n_embd: int = 64  # the 50257 x n_embd embedding is most of the model
    dropout: float = 0.2  # high because 4.6k training tokens are soon memorised
    # data and checkpoints
    data: str = arg("the-verdict.txt", "UTF-8 text file to train on: first 90%% for training, last 10%% to validate")
    tokenizer: str = arg("gpt2", "gpt2: GPT-2's BPE; char: one token per character of --data (vocab_size: their "
                         "number)", choices=("gpt2", "char"))  # fmt: skip
    out_dir: str | None = arg("checkpoints", f"folder for {CKPT_NAME} and history.json")  # None (Python): no files
    resume: bool = arg(False, f"continue from OUT_DIR/{CKPT_NAME}; flags not given come from the checkpoint")
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
    beta2: float = arg(0.99, "AdamW beta2 (0.99: v averages ~100 steps, 0.999: ~1000, too slow for short runs)")
    grad_clip: float = arg(1.0, "clip the global gradient norm to this (0: no clipping); the norm is logged")
    # evaluation
    eval_interval: int = arg(100, "every this many steps: mean train/val loss, perplexity, one log line, checkpoint")
    eval_iters: int = arg(10, "batches per split in each evaluation (the same batches every time)")
    # system
    device: str = arg("auto", "auto: cuda, else mps, else cpu", choices=("auto", "cpu", "cuda", "mps"))
    dtype: str = arg("float32", "autocast dtype; float16 only on CUDA (with a GradScaler)", choices=tuple(DTYPES))
    compile: bool = arg(False, "torch.compile the model (a slow start; pays off on long GPU runs)")
    seed: int = arg(1337, "seed of the initial weights, the batches, dropout and the sample")

    def __post_init__(self):
        super().__post_init__()  # the model's checks: n_embd % n_head, dropout in [0, 1), ...
        self.data = str(self.data)  # a Path would not load back with weights_only=True
        self.out_dir = None if self.out_dir is None else str(self.out_dir)
        for name in ("batch_size", "grad_accum_steps", "eval_interval", "eval_iters"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_iters", "min_lr", "weight_decay", "grad_clip", "warmup_iters"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}")
        if self.tokenizer == "gpt2" and self.vocab_size < VOCAB_SIZE:
            raise ValueError(f"--vocab_size must be >= {VOCAB_SIZE}: GPT-2's token ids go up to {VOCAB_SIZE - 1}")
        if self.lr <= 0:
            raise ValueError(f"--lr must be > 0, got {self.lr}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"--{name} must be in [0, 1), got {getattr(self, name)}")
        if self.lr_decay_iters < self.warmup_iters:
            raise ValueError(f"--lr_decay_iters {self.lr_decay_iters} must be >= --warmup_iters {self.warmup_iters}")


def model_config(cfg: TrainConfig) -> GPTConfig:
    """The GPTConfig part of a TrainConfig."""
    return GPTConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(GPTConfig)})


class TrainingDiverged(Exception):
    """The loss became NaN or infinite; the last checkpoint on disk is left as it was."""


class TrainingInterrupted(KeyboardInterrupt):
    """Stopped on request (Ctrl-C in the command line) after a full step; a checkpoint of that step was saved."""


def init_model(cfg: TrainConfig) -> GPT:
    """A new GPT whose weights depend on cfg.seed only (the same on every process); the global RNG is untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cfg.seed, "init"))
        return GPT(model_config(cfg))


@torch.no_grad()
def estimate_loss(model, splits: dict, cfg: TrainConfig, device="cpu", autocast=contextlib.nullcontext) -> dict:
    """Mean loss over cfg.eval_iters batches of each split; the batches are the same at every evaluation."""
    was_training, out = model.training, {}
    model.eval()
    for name, ids in splits.items():
        g = generator(cfg.seed, "eval")  # its own generator: evaluating never moves training's
        losses = []
        for _ in range(cfg.eval_iters):
            x, y = get_batch(ids, model.config.block_size, cfg.batch_size, g, device)
            with autocast():
                losses.append(model(x, y)[1].float())
        out[name] = torch.stack(losses).mean().item()
    model.train(was_training)
    return out


class Trainer:
    """A training run's state, model, optimizer, scaler, generators, step and history, and the steps on it."""

    def __init__(self, cfg: TrainConfig, model: GPT | None = None, log=None, sample=None):
        self.vocab = None  # characters of a char-level run (its checkpoint keeps them); None: GPT-2's BPE
        if cfg.tokenizer == "char":
            self.splits, chars = load_char_splits(cfg.data, cfg.block_size)
            cfg, self.vocab = dataclasses.replace(cfg, vocab_size=len(chars.chars)), chars.chars
        else:
            self.splits = load_splits(cfg.data, cfg.block_size)
        if model is not None:  # its shape wins; cfg keeps the rest (and records the shape in the checkpoint)
            cfg = dataclasses.replace(cfg, **asdict(model.config))
        ddp = dist.is_available() and dist.is_initialized()
        self.rank, self.world = (dist.get_rank(), dist.get_world_size()) if ddp else (0, 1)
        self.device = device = process_device(cfg.device, cfg.dtype)
        self.device_type = device.split(":")[0]
        self.cfg, self.log, self.sample = cfg, log or (lambda msg: None), sample
        self.ckpt_path = Path(cfg.out_dir) / CKPT_NAME if cfg.out_dir is not None else None
        self.model = (model if model is not None else init_model(cfg)).to(device)
        self.optimizer = configure_optimizer(self.model, cfg.weight_decay, cfg.lr, (cfg.beta1, cfg.beta2))
        self.scaler = torch.amp.GradScaler(self.device_type, enabled=cfg.dtype == "float16")
        self.rngs = {  # one generator per purpose; dropout draws where the model lives
            "data": generator(cfg.seed, "data", self.rank),
            "dropout": generator(cfg.seed, "dropout", self.rank, device if self.device_type == "cuda" else "cpu"),
        }
        self.step, self.best_val, self.history, self.saved_step = 0, float("inf"), [], None
        self.net = torch.compile(self.model) if cfg.compile else self.model  # what forward and backward go through
        if ddp:
            self.net = DDP(self.net, device_ids=[torch.device(device).index] if self.device_type == "cuda" else None)

    @property
    def master(self) -> bool:
        return self.rank == 0

    @property
    def tokens_per_step(self) -> int:
        return self.cfg.batch_size * self.cfg.block_size * self.cfg.grad_accum_steps * self.world

    def autocast(self):
        return autocast(self.device_type, self.cfg.dtype)

    def start(self, checkpoint: dict | None = None) -> None:
        """Resume (cfg.resume) or check that out_dir is writable; log the run; evaluate at step 0 (the curve starts)."""
        cfg, n_params, n_body = self.cfg, self.model.num_params(), self.model.num_params(non_embedding=True)
        if cfg.resume:
            resume_trainer(self, checkpoint)
        elif self.ckpt_path is not None and self.master:
            check_writable(cfg.out_dir)
        self.log(
            f"{n_params / 1e6:.2f}M parameters ({n_body / 1e6:.2f}M without embeddings) | {self.device} {cfg.dtype} | "
            f"{len(self.splits['train'])} train / {len(self.splits['val'])} val tokens | "
            f"{self.tokens_per_step} tokens per step"
        )
        if cfg.resume:
            self.log(f"resumed from {self.ckpt_path} at step {self.step}")
            if self.step >= cfg.max_iters:
                self.log(f"the checkpoint is at step {self.step}, max_iters is {cfg.max_iters}: nothing to train")
        if not self.history and self.master:
            self.history.append(self.evaluate(dict(step=0, lr=None, loss=None, grad_norm=None, tokens_per_s=None)))

    def train_step(self, stop: bool = False) -> tuple[dict, bool]:
        """One optimizer step over grad_accum_steps micro-batches; (its history entry, whether every process stops)."""
        cfg, t0, lr = self.cfg, time.perf_counter(), get_lr(self.step, self.cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), device=self.device)
        for micro in range(cfg.grad_accum_steps):
            x, y = get_batch(self.splits["train"], cfg.block_size, cfg.batch_size, self.rngs["data"], self.device)
            last = micro == cfg.grad_accum_steps - 1
            with self.net.no_sync() if self.world > 1 and not last else contextlib.nullcontext():  # all-reduce once
                with lend_global_rng(self.rngs["dropout"]), self.autocast():
                    _, loss = self.net(x, y)
                loss = loss / cfg.grad_accum_steps  # mean over micro-batches, as one big batch would
                self.scaler.scale(loss).backward()
            loss_sum += loss.detach().float()
        stats = torch.stack([loss_sum, torch.tensor(float(stop), device=self.device)])
        if self.world > 1:  # every process sees the same loss and stops at the same step
            dist.all_reduce(stats)
            stats[0] /= self.world
        loss_val, stop_all = stats[0].item(), stats[1].item() > 0
        self.scaler.unscale_(self.optimizer)  # no-op unless float16
        clip = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip).item()  # pre-clip norm
        if not math.isfinite(loss_val) or (not self.scaler.is_enabled() and not math.isfinite(grad_norm)):
            raise self.diverged(f"loss is {loss_val} at step {self.step + 1} (grad norm {grad_norm})")
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        entry = dict(step=self.step, lr=lr, loss=loss_val, grad_norm=grad_norm)
        entry.update(tokens_per_s=self.tokens_per_step / (time.perf_counter() - t0))
        entry.update(train_loss=None, val_loss=None, ppl=None)
        self.history.append(entry)
        return entry, stop_all

    def diverged(self, what: str) -> TrainingDiverged:
        kept = f"the last good checkpoint, {self.ckpt_path} (step {self.saved_step}), is untouched"
        kept = kept if self.saved_step is not None else "no checkpoint was written"
        hint = "a lower --lr" + (" or --grad_clip 1.0" if self.cfg.grad_clip == 0 else "")
        return TrainingDiverged(f"{what}: training diverged and stopped; {kept}. Try {hint}")

    def evaluate(self, entry: dict) -> dict:
        """Mean train and val loss into the history entry; one log line."""
        losses = estimate_loss(self.model, self.splits, self.cfg, self.device, self.autocast)
        if not all(map(math.isfinite, losses.values())):  # never logged, saved or called good
            raise self.diverged(f"evaluation at step {self.step}: train loss {losses['train']}, val {losses['val']}")
        entry.update(train_loss=losses["train"], val_loss=losses["val"], ppl=math.exp(min(losses["val"], 700)))
        self.best_val = min(self.best_val, losses["val"])
        lr = f" | lr {entry['lr']:.2e}" if entry["lr"] is not None else ""
        width = len(str(self.cfg.max_iters))
        self.log(
            f"step {self.step:>{width}}/{self.cfg.max_iters} | train {losses['train']:.4f} | "
            f"val {losses['val']:.4f} | ppl {entry['ppl']:.{'1f' if entry['ppl'] < 1e7 else '3g'}}{lr}"
        )
        if self.sample is not None:  # what the model writes at this step, kept with the curve
            was_training = self.model.training
            entry["sample"] = self.sample(self.model.eval())
            self.model.train(was_training)
            self.log(f"--- sample at step {self.step} ---\n{entry['sample']}")
        return entry

    def save(self) -> None:
        """Write the checkpoint (process 0, with an out_dir, once per step)."""
        if self.master and self.ckpt_path is not None and self.saved_step != self.step:
            if not all(torch.isfinite(p).all() for p in self.model.parameters()):
                raise self.diverged(f"a parameter is NaN or infinite at step {self.step}")
            save_checkpoint(self.ckpt_path, trainer_state(self))
            self.saved_step = self.step


def train(cfg, model: GPT | None = None, log=print, progress=True, checkpoint=None, stop=None, sample=None):
    """Train from the checkpoint's step (or 0) to cfg.max_iters; returns (model, history).

    model: a GPT built elsewhere (its config replaces cfg's model fields). log: one string per event; None: silence.
    progress: a tqdm bar (terminal, notebook). checkpoint: already loaded, for cfg.resume. stop: asked after each step;
    True: save and raise TrainingInterrupted (Ctrl-C in the CLI). sample: model -> text, at each evaluation (logged).
    history: one dict per step: step, lr, loss, grad_norm, tokens_per_s, and train_loss, val_loss, ppl (None except at
    evaluations; at step 0, only these three), and "sample" at evaluations when sample is given.
    """
    t = Trainer(cfg, model, log, sample)
    with lock_out_dir(t.cfg.out_dir if t.master else None):
        t.start(checkpoint)
        bar = None
        if progress and t.master:
            bar, t.log = progress_bar(t.cfg.max_iters, t.step, t.log)
        try:
            while t.step < t.cfg.max_iters:
                entry, stop_all = t.train_step(bool(stop and stop()))
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{entry['loss']:.4f}", refresh=False)
                if t.master and (t.step % t.cfg.eval_interval == 0 or t.step == t.cfg.max_iters):
                    t.evaluate(entry)
                    t.save()
                if stop_all:
                    t.save()
                    saved = f"checkpoint saved to {t.ckpt_path} (resume with --resume)"
                    raise TrainingInterrupted(f"stopped at step {t.step}; {saved if t.ckpt_path else 'nothing saved'}")
            t.save()
        finally:
            if bar is not None:
                bar.close()
    if t.history and t.history[-1]["val_loss"] is not None and t.master:
        t.log(f"done: step {t.step}, best val loss {t.best_val:.4f}")
    return t.model, t.history


if __name__ == "__main__":  # python -m gptbook.train: the command line lives in gptbook.cli, above this module
    from gptbook.cli import train_main

    raise SystemExit(train_main())
