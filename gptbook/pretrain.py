"""The book's Shakespeare model, the one chapters 06-08 train, sample from and look inside: one recipe, one checkpoint;
and its baseline, the same GPT class on characters for the same time (chapter 06).

`python -m gptbook.pretrain` (or `gptbook-pretrain`) trains it: `python -m gptbook.train` with the recipe's flags, so
a progress bar, a sample at each evaluation, Ctrl-C saves, `--resume` continues. `python -m gptbook.pretrain char`
trains the baseline. Flags given after it change the recipe (`--max_iters 100` for a quick look). The checkpoint and
history.json go to `run_dir(name)`, under the corpora's data folder. `pretrained(name)` loads that run, or makes it
first with the same recipe.
"""

import dataclasses
import sys
from pathlib import Path

from gptbook.checkpoint import CKPT_NAME, load_checkpoint, model_from_checkpoint
from gptbook.cli import run_tokenizer, sample_text, train_main
from gptbook.corpora import data_dir
from gptbook.sampling import Sampling, prompt_ids
from gptbook.tokenizer import BPE
from gptbook.train import TrainConfig, train

# Chosen by measurement on 2 CPU cores (README, "莎士比亚"): about 5 minutes of training.
SHAKESPEARE = TrainConfig(
    data="shakespeare",
    n_layer=4,
    n_head=4,
    n_embd=128,
    block_size=64,
    dropout=0.0,  # 1.4M training tokens, seen about once: nothing to memorise yet
    chunked_loss=True,  # the LM head + cross-entropy in chunks (chapter 09): the same loss, faster
    batch_size=16,
    max_iters=1000,
    lr=2e-3,
    min_lr=2e-4,
    warmup_iters=50,
    lr_decay_iters=1000,
    eval_interval=100,
    eval_iters=10,
)
# The baseline: one token per character (84 of them), so a 256-character window (about 80 BPE tokens of text) and
# no 50257-way head; as many steps as fit in the BPE run's time (measured here: 0.20 s/step against 0.33).
CHARS = dataclasses.replace(
    SHAKESPEARE,
    tokenizer="char",
    chunked_loss=False,  # an 84-way head: nothing to save
    block_size=256,
    max_iters=1650,
    lr_decay_iters=1650,
    eval_interval=165,
)
RECIPES = {"shakespeare": SHAKESPEARE, "shakespeare-char": CHARS}
PROMPT = "HAMLET.\n"  # a speaker's name on its own line starts every speech in the corpus
SAMPLE_TOKENS = 60
SAMPLE_CHARS = 200  # about as much text as 60 tokens
SAMPLING = Sampling(temperature=0.8)  # the command line's default


def run_dir(name: str = "shakespeare") -> Path:
    return data_dir() / "checkpoints" / name


def recipe(name: str = "shakespeare", **changes) -> TrainConfig:
    """A recipe, writing into run_dir(name), with `changes` (TrainConfig fields) applied."""
    return dataclasses.replace(RECIPES[name], out_dir=str(run_dir(name)), **changes)


def flags(cfg: TrainConfig) -> list[str]:
    """`cfg` as flags of `python -m gptbook.train`: those that differ from the defaults."""
    default, out = TrainConfig(), []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if value != getattr(default, f.name):
            out.append(f"--{'' if value else 'no-'}{f.name}" if isinstance(value, bool) else f"--{f.name}={value}")
    return out


def sample(model, tok=BPE) -> str:
    """What the model writes after PROMPT: SAMPLE_TOKENS tokens (SAMPLE_CHARS characters), the command line's
    sampler and seed."""
    ids = prompt_ids(PROMPT, model.config.block_size, encode=tok.encode)
    n = SAMPLE_TOKENS if tok is BPE else SAMPLE_CHARS
    return sample_text(model, ids, n, SAMPLING, SHAKESPEARE.seed, tok.decode)


def pretrained(name: str = "shakespeare", log=print, **changes):
    """(model in eval mode, history) of a recipe's run: from its checkpoint if that run is complete (every step, a
    sample at each evaluation), else trained."""
    cfg = recipe(name, **changes)
    path, ckpt = Path(cfg.out_dir) / CKPT_NAME, None
    if path.exists():
        ckpt = load_checkpoint(path)
        want, default = dataclasses.asdict(cfg), dataclasses.asdict(TrainConfig())  # default: a field added since
        if cfg.tokenizer == "char":  # the vocabulary's size comes from the corpus
            want["vocab_size"] = len(ckpt.get("vocab") or "")
        same = all(ckpt["config"].get(k, default[k]) == v for k, v in want.items() if k not in ("out_dir", "resume"))
        if same and ckpt["step"] == cfg.max_iters and "sample" in ckpt["history"][-1]:
            return model_from_checkpoint(ckpt).eval(), ckpt["history"]
    tok = run_tokenizer(cfg, None)
    model, history = train(cfg, log=log, sample=lambda m: sample(m, tok))
    return model.eval(), history


def main(argv=None) -> int:
    """`python -m gptbook.pretrain [char] [flags]`: the recipe (or the character-level one) as train's flags."""
    argv = sys.argv[1:] if argv is None else argv
    name, argv = ("shakespeare-char", argv[1:]) if argv[:1] == ["char"] else ("shakespeare", argv)
    n = SAMPLE_TOKENS if name == "shakespeare" else SAMPLE_CHARS
    return train_main([*flags(recipe(name)), f"--prompt={PROMPT}", f"--max_new_tokens={n}", *argv])


if __name__ == "__main__":
    sys.exit(main())
