"""The book's Shakespeare model, the one chapter 06 trains and chapter 07 samples from: one recipe, one checkpoint.

`python -m gptbook.pretrain` (or `gptbook-pretrain`) trains it: `python -m gptbook.train` with the recipe's flags, so
a progress bar, a sample at each evaluation, Ctrl-C saves, `--resume` continues. Flags given after it change the
recipe (`--max_iters 100` for a quick look). The checkpoint and history.json go to `run_dir()`, under the corpora's
data folder. `pretrained()` loads that run, or makes it first with the same recipe.
"""

import dataclasses
import sys
from pathlib import Path

from gptbook.checkpoint import CKPT_NAME, load_checkpoint, model_from_checkpoint
from gptbook.cli import sample_text, train_main
from gptbook.corpora import data_dir
from gptbook.sampling import Sampling, prompt_ids
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
PROMPT = "HAMLET.\n"  # a speaker's name on its own line starts every speech in the corpus
SAMPLE_TOKENS = 60
SAMPLING = Sampling(temperature=0.8)  # the command line's default


def run_dir() -> Path:
    return data_dir() / "checkpoints" / "shakespeare"


def recipe(**changes) -> TrainConfig:
    """The recipe, writing into run_dir(), with `changes` (TrainConfig fields) applied."""
    return dataclasses.replace(SHAKESPEARE, out_dir=str(run_dir()), **changes)


def flags(cfg: TrainConfig) -> list[str]:
    """`cfg` as flags of `python -m gptbook.train`: those that differ from the defaults."""
    default, out = TrainConfig(), []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if value != getattr(default, f.name):
            out.append(f"--{'' if value else 'no-'}{f.name}" if isinstance(value, bool) else f"--{f.name}={value}")
    return out


def sample(model) -> str:
    """What the model writes after PROMPT: SAMPLE_TOKENS tokens, the command line's sampler and seed."""
    ids = prompt_ids(PROMPT, model.config.block_size)
    return sample_text(model, ids, SAMPLE_TOKENS, SAMPLING, SHAKESPEARE.seed)


def pretrained(log=print, **changes):
    """(model in eval mode, history) of the recipe's run: from its checkpoint if that run is complete (every step,
    a sample at each evaluation), else trained."""
    cfg = recipe(**changes)
    path = Path(cfg.out_dir) / CKPT_NAME
    if path.exists():
        ckpt = load_checkpoint(path)
        same = {k: v for k, v in ckpt["config"].items() if k not in ("out_dir", "resume")} == {
            k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("out_dir", "resume")
        }
        if same and ckpt["step"] == cfg.max_iters and "sample" in ckpt["history"][-1]:
            return model_from_checkpoint(ckpt).eval(), ckpt["history"]
    model, history = train(cfg, log=log, sample=sample)
    return model.eval(), history


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return train_main([*flags(recipe()), f"--prompt={PROMPT}", f"--max_new_tokens={SAMPLE_TOKENS}", *argv])


if __name__ == "__main__":
    sys.exit(main())
