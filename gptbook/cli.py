"""The command lines, `python -m gptbook.train` and `python -m gptbook.generate`: flags, one-line errors, Ctrl-C.

What no chapter builds lives here: argument parsing, the error policy, signal handling, malloc tuning, torchrun.
"""

import argparse
import dataclasses
import os
import signal
import sys
import threading
import time
from pathlib import Path

import torch
import torch.distributed as dist

from gptbook.checkpoint import CKPT_NAME, load_checkpoint, model_from_checkpoint, one_line, param_digest
from gptbook.data import load_text
from gptbook.device import keep_freed_memory, resolve_device
from gptbook.runtime import DDP_TIMEOUT, StopOnSignal, distributed, note
from gptbook.sampling import Sampling, generate, prompt_ids
from gptbook.tokenizer import BPE, CharTokenizer, decode, tokenizer_for
from gptbook.train import TrainConfig, TrainingDiverged, TrainingInterrupted, train

OutOfMemoryError = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
# help for the model's flags (GPTConfig's fields, inherited by TrainConfig)
MODEL_HELP = {
    "vocab_size": "rows of the embedding: GPT-2's 50257 tokens, or more (50304, a multiple of 64, is faster on GPUs)",
    "block_size": "context length in tokens (short: on CPU every token costs a 50257-way softmax)",
    "n_layer": "Transformer blocks",
    "n_head": "attention heads per block",
    "n_embd": "embedding width, divisible by n_head (the 50257 x n_embd embedding is most of the model)",
    "dropout": "dropout probability; high because 4.6k training tokens are soon memorised",
    "bias": "biases in Linear and LayerNorm layers, as in GPT-2",
    "attn_impl": "attention: fused SDPA kernel or the explicit math",
    "pos_emb": "position information: learned table (GPT-2), rotary, or none (only the causal mask)",
    "chunked_loss": "faster, leaner: LM head + cross-entropy in chunks, no (B*T, vocab) logits",
}
CHOICES = {"attn_impl": ("sdpa", "explicit"), "pos_emb": ("learned", "rope", "none")}
# on --resume every other setting comes from the checkpoint unless its flag is given
RUNTIME_KEYS = ("out_dir", "resume")


class CliParser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage + error
        print(f"error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def run_cli(body, argv=None) -> int:
    """Run a CLI body: expected failures become one line on stderr and an exit code, never a traceback."""
    rank = os.environ.get("RANK", "0")
    who = "" if rank == "0" else f"[rank {rank}] "
    if threading.current_thread() is threading.main_thread():  # Ctrl-C: KeyboardInterrupt again (see __init__)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return body(argv) or 0
    except SystemExit as e:  # argparse: --help (0) or a bad flag (2)
        return e.code if isinstance(e.code, int) else 2
    except TrainingInterrupted as e:
        if rank == "0":  # the process that saved
            print(f"interrupted: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"{who}interrupted: stopped at once, nothing saved since the last checkpoint", file=sys.stderr)
        return 130
    except (TrainingDiverged, ValueError, OSError, RuntimeError) as e:  # RuntimeError: out of memory, lost peer only
        oom = isinstance(e, OutOfMemoryError) or "can't allocate memory" in str(e)
        lost = isinstance(e, dist.DistBackendError)  # a collective timed out: a peer froze or died
        if os.environ.get("GPTBOOK_DEBUG") or (isinstance(e, RuntimeError) and not (oom or lost)):
            raise
        why = one_line(e, 1000)
        if oom:
            why = f"out of memory ({one_line(e, 200)}); try a smaller --batch_size or --block_size"
        if lost:
            why = f"another process did not respond within {DDP_TIMEOUT} s ({one_line(e, 200)})"
        print(f"{who}error: {why}", file=sys.stderr)
        return 1 if isinstance(e, TrainingDiverged) else 2


def add_sampling_args(p, prompt=True):
    """--prompt, --max_new_tokens and the Sampling flags, the same for both commands."""
    if prompt:
        p.add_argument("--prompt", default="I had always thought", help="text to continue (default: %(default)s)")
    p.add_argument("--max_new_tokens", type=int, default=100, help="tokens to sample, 0: none (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=0.8, help="softmax temperature, 0: greedy (default: 0.8)")
    p.add_argument("--top_k", type=int, default=None, help="sample among the k most likely tokens only (default: off)")
    p.add_argument("--top_p", type=float, default=None, help="nucleus sampling: the smallest set of tokens with "
                   "probability >= p, p in (0, 1] (default: off)")  # fmt: skip
    p.add_argument("--min_p", type=float, default=None, help="drop tokens less likely than min_p x the top token's "
                   "probability (default: off)")  # fmt: skip


def sampling_from_args(a, seed: int) -> Sampling:
    """The Sampling flags, checked, and the sampler's seed (torch takes 64 bits at most)."""
    if a.max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {a.max_new_tokens}")
    if not 0 <= seed < 2**63:
        raise ValueError(f"--seed must be in [0, 2**63), got {seed}")
    return Sampling(temperature=a.temperature, top_k=a.top_k, top_p=a.top_p, min_p=a.min_p)


def eval_sample(model, ids, max_new_tokens: int, sampling: Sampling, seed: int, stop: StopOnSignal, decode=decode):
    """The sample at an evaluation; Ctrl-C cuts it short at once, and training then stops after this step."""
    stop.interruptible = True
    try:
        return sample_text(model, ids, max_new_tokens, sampling, seed, decode)
    except KeyboardInterrupt:
        return "(interrupted: training stops after this step)"
    finally:
        stop.interruptible = False


def sample_text(model, ids, max_new_tokens: int, sampling: Sampling, seed: int, decode=decode) -> str:
    """Prompt ids (1, T) + max_new_tokens sampled with the KV cache, decoded to text."""
    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    return decode(generate(model, ids.to(device), max_new_tokens, sampling, generator=g)[0].tolist())


def run_tokenizer(cfg: TrainConfig, ckpt: dict | None):
    """A run's tokenizer: BPE, or the characters of --data (those of the checkpoint when resuming)."""
    if cfg.tokenizer != "char":
        return BPE
    return CharTokenizer(ckpt["vocab"]) if ckpt and ckpt.get("vocab") else CharTokenizer.of(load_text(cfg.data))


# ---------------------------------------------------------------- python -m gptbook.train


def train_parser():
    """One flag per TrainConfig field; flags not given are absent from the result (for --resume)."""
    p = CliParser(
        prog="python -m gptbook.train",
        description="Train a small GPT on a text file; print a sample when done. Ctrl-C saves a checkpoint and stops.",
        epilog="Multi-process: torchrun --standalone --nproc_per_node=2 -m gptbook.train ... "
        "Set GPTBOOK_DEBUG=1 to see tracebacks instead of one-line errors.",
    )
    for f in dataclasses.fields(TrainConfig):
        help = f.metadata.get("help") or MODEL_HELP[f.name]
        help += "" if "(default:" in help else f" (default: {f.default})"
        kw = dict(default=argparse.SUPPRESS, help=help)
        if f.name == "resume":
            p.add_argument("--resume", action="store_true", **kw)
        elif isinstance(f.default, bool):
            p.add_argument(f"--{f.name}", action=argparse.BooleanOptionalAction, **kw)
        else:
            choices = f.metadata.get("choices") or CHOICES.get(f.name)
            p.add_argument(f"--{f.name}", type=f.metadata.get("type") or type(f.default), choices=choices, **kw)
    p.add_argument("--print_digest", action="store_true", help="print a sha256 of the final parameters on every "
                   "process (do DDP ranks agree?)")  # fmt: skip
    add_sampling_args(p)
    return p


def config_from_args(passed: dict) -> tuple[TrainConfig, dict | None]:
    """A fresh config from the flags given; with --resume, the checkpoint's config updated by the flags given."""
    if not passed.get("resume"):
        return TrainConfig(**passed), None
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    path = Path(passed.get("out_dir", fields["out_dir"].default)) / CKPT_NAME
    if not path.exists():
        raise FileNotFoundError(f"--resume: no checkpoint at {path}; train without --resume first")
    ckpt = load_checkpoint(path)
    saved = {k: v for k, v in ckpt["config"].items() if k in fields and k not in RUNTIME_KEYS}
    try:
        TrainConfig(**saved)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path} is not a usable gptbook checkpoint: config ({one_line(e)})") from None
    cfg = TrainConfig(**{**saved, **passed})
    if os.environ.get("RANK", "0") == "0":
        given = ", ".join(f"--{k}" for k in passed if k not in RUNTIME_KEYS) or "none"
        print(f"resume: settings from {path} except the flags given ({given}): dtype {cfg.dtype}, device "
              f"{cfg.device}, chunked_loss {cfg.chunked_loss}, compile {cfg.compile}")  # fmt: skip
    return cfg, ckpt


def train_main(argv=None) -> int:
    return run_cli(_train, argv)


def _train(argv):
    a = train_parser().parse_args(argv)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg, ckpt = config_from_args({k: v for k, v in vars(a).items() if k in fields})
    sampling = sampling_from_args(a, cfg.seed)
    tok = run_tokenizer(cfg, ckpt)
    ids = prompt_ids(a.prompt, cfg.block_size, note, tok.encode) if a.max_new_tokens > 0 else None  # fail early
    device = resolve_device(cfg.device)
    if device == "cpu":
        keep_freed_memory()
    with distributed(device) as (rank, world):
        t0, start = time.perf_counter(), ckpt["step"] if ckpt else 0
        with StopOnSignal(grace=5 if world > 1 else None) as stop:
            sample = (
                (lambda m: eval_sample(m, ids, a.max_new_tokens, sampling, cfg.seed, stop, tok.decode))
                if ids is not None
                else None
            )
            log = print if rank == 0 else None
            model, history = train(cfg, log=log, checkpoint=ckpt, stop=stop.asked, sample=sample)
        steps = max(0, history[-1]["step"] - start) if history else 0
        if rank == 0 and steps:
            dt = time.perf_counter() - t0
            tokens = steps * cfg.batch_size * cfg.block_size * cfg.grad_accum_steps * world
            print(f"{steps} steps in {dt:.1f} s ({tokens / dt:,.0f} tokens/s)")
        if a.print_digest:
            print(f"rank {rank} parameter sha256 {param_digest(model)}", flush=True)
        if rank == 0 and ids is not None and not (steps and "sample" in history[-1]):  # unless just printed
            try:
                print(f"--- sample ---\n{sample_text(model, ids, a.max_new_tokens, sampling, cfg.seed, tok.decode)}")
            except KeyboardInterrupt:
                kept = f"{Path(cfg.out_dir) / CKPT_NAME} (step {history[-1]['step']})" if cfg.out_dir else "nothing"
                raise TrainingInterrupted(f"stopped during the sample; training is done and {kept} saved") from None


# ---------------------------------------------------------------- python -m gptbook.generate


def generate_parser():
    p = CliParser(
        prog="python -m gptbook.generate",
        description="Sample text from a checkpoint written by gptbook.train (KV cache on). "
        "Set GPTBOOK_DEBUG=1 to see tracebacks instead of one-line errors.",
    )
    p.add_argument("--ckpt", default="checkpoints/ckpt.pt", help="checkpoint file (default: checkpoints/ckpt.pt)")
    add_sampling_args(p)
    p.add_argument("--num_samples", type=int, default=1, help="independent samples, one after another (default: 1)")
    p.add_argument("--seed", type=int, default=1337, help="seed of the sampler: same seed, same text (default: 1337)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"), help="default: auto")
    return p


def generate_main(argv=None) -> int:
    return run_cli(_generate, argv)


def _generate(argv):
    a = generate_parser().parse_args(argv)
    sampling = sampling_from_args(a, a.seed + a.num_samples)
    if a.num_samples < 1:
        raise ValueError(f"--num_samples must be >= 1, got {a.num_samples}")
    device = resolve_device(a.device)
    ckpt = load_checkpoint(a.ckpt)
    model, tok = model_from_checkpoint(ckpt).to(device), tokenizer_for(ckpt.get("vocab"))
    ids = prompt_ids(a.prompt, model.config.block_size, note, tok.encode)
    for i in range(a.num_samples):
        if a.num_samples > 1:
            print(f"--- sample {i + 1} ---")
        print(sample_text(model, ids, a.max_new_tokens, sampling, a.seed + i, tok.decode))
