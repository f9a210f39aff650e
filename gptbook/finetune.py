"""Fine-tuning for classification (chapter 10): the plays by genre, a GPT whose LM head becomes a classifier.

`works(text)` cuts the corpus into its 42 works; `GENRES` labels the plays as the First Folio (1623) does.
`ClassifierGPT` reads the last position's hidden state; `freeze` picks what trains; `finetune` is the loop.
"""

import re
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from gptbook.model import GPT
from gptbook.optim import configure_optimizer
from gptbook.rng import generator

CLASSES = ("comedy", "history", "tragedy")
BYLINE = "by William Shakespeare"
# The corpus's works in its order, each with its part of the First Folio; None: not in the Folio's catalogue
# (the poems; Pericles, first collected in 1664; Troilus and Cressida, printed in the Folio but left out of its
# catalogue, between the histories and the tragedies).
GENRES = {
    "ALL'S WELL THAT ENDS WELL": "comedy",
    "ANTONY AND CLEOPATRA": "tragedy",
    "AS YOU LIKE IT": "comedy",
    "THE COMEDY OF ERRORS": "comedy",
    "THE TRAGEDY OF CORIOLANUS": "tragedy",
    "CYMBELINE": "tragedy",
    "HAMLET, PRINCE OF DENMARK": "tragedy",
    "KING HENRY IV, THE FIRST PART": "history",
    "KING HENRY IV, SECOND PART": "history",
    "THE LIFE OF KING HENRY V": "history",
    "KING HENRY VI, FIRST PART": "history",
    "HISTORY OF KING HENRY THE SIXTH, SECOND PART": "history",
    "THE HISTORY OF KING HENRY THE SIXTH, THIRD PART": "history",
    "THE LIFE OF HENRY THE EIGHTH": "history",
    "KING JOHN": "history",
    "JULIUS CAESAR": "tragedy",
    "THE TRAGEDY OF KING LEAR": "tragedy",
    "A LOVER'S COMPLAINT": None,
    "LOVE'S LABOUR'S LOST": "comedy",
    "MACBETH": "tragedy",
    "MEASURE FOR MEASURE": "comedy",
    "THE MERCHANT OF VENICE": "comedy",
    "THE MERRY WIVES OF WINDSOR": "comedy",
    "A MIDSUMMER NIGHT'S DREAM": "comedy",
    "MUCH ADO ABOUT NOTHING": "comedy",
    "OTHELLO, THE MOOR OF VENICE": "tragedy",
    "THE PASSIONATE PILGRIM": None,
    "PERICLES PRINCE OF TYRE": None,
    "THE PHOENIX AND THE TURTLE": None,
    "THE RAPE OF LUCRECE": None,
    "THE TRAGEDY OF KING RICHARD THE SECOND": "history",
    "THE LIFE AND DEATH OF KING RICHARD III": "history",
    "ROMEO AND JULIET": "tragedy",
    "THE SONNETS": None,
    "THE TAMING OF THE SHREW": "comedy",
    "THE TEMPEST": "comedy",
    "THE LIFE OF TIMON OF ATHENS": "tragedy",
    "THE TRAGEDY OF TITUS ANDRONICUS": "tragedy",
    "THE HISTORY OF TROILUS AND CRESSIDA": None,
    "TWELFTH NIGHT; OR, WHAT YOU WILL": "comedy",
    "THE TWO GENTLEMEN OF VERONA": "comedy",
    "THE WINTER'S TALE": "comedy",
}


def works(text: str) -> list[tuple[str, str]]:
    """(title, text) of each work of the corpus, in its order. A work starts with its title, a blank line or none,
    and BYLINE; its text is what follows, up to the next work's title (title and byline left out)."""
    found, pos = [], 0
    for title in GENRES:
        m = re.compile(re.escape(title) + r"\n\n?" + BYLINE + "\n").search(text, pos)
        if m is None:
            raise ValueError(f"{title!r} followed by {BYLINE!r} not found in the text")
        found.append((title, m.start(), m.end()))
        pos = m.end()
    ends = [start for _, start, _ in found[1:]] + [len(text)]
    return [(title, text[body:end]) for (title, _, body), end in zip(found, ends, strict=True)]


def held_out(n: int) -> list[str]:
    """The last n plays of each genre in the corpus's order: the test plays."""
    return [t for c in CLASSES for t in [t for t, g in GENRES.items() if g == c][-n:]]


def passages(ids: torch.Tensor, n: int, block_size: int, gen: torch.Generator) -> torch.Tensor:
    """n of the non-overlapping block_size windows of ids, drawn at random without replacement: (n, T)."""
    windows = ids[: len(ids) // block_size * block_size].view(-1, block_size)  # (n_windows, T)
    if n > len(windows):
        raise ValueError(f"{n} passages asked for, the text has {len(windows)} windows of {block_size} tokens")
    return windows[torch.randperm(len(windows), generator=gen)[:n]]


def labelled(tokens: dict, titles: list[str], per_class: int, block_size: int, seed: int):
    """(x (N, T), y (N,), source title of each row): per_class passages of each genre, shared evenly among its
    plays in `titles` (the first plays take one more when it does not divide)."""
    gen = generator(seed, "passages")
    xs, ys, source = [], [], []
    for c, genre in enumerate(CLASSES):
        plays = [t for t in titles if GENRES[t] == genre]
        for i, title in enumerate(plays):
            n = per_class // len(plays) + (i < per_class % len(plays))
            xs.append(passages(tokens[title], n, block_size, gen))
            ys.append(torch.full((n,), c))
            source += [title] * n
    return torch.cat(xs), torch.cat(ys), source


class ClassifierGPT(nn.Module):
    """A GPT whose LM head (C -> vocab) is replaced by a classifier (C -> n_classes) of the last position.
    `gpt` itself is changed (pass a copy to keep the language model); `seed` draws the new head's weights."""

    def __init__(self, gpt: GPT, n_classes: int, seed: int = 0):
        super().__init__()
        head = nn.Linear(gpt.config.n_embd, n_classes)
        nn.init.normal_(head.weight, std=0.02, generator=generator(seed, "head"))  # GPT-2's init
        nn.init.zeros_(head.bias)
        gpt.lm_head = head  # the tie with wte is cut: wte stays the embedding
        self.gpt = gpt

    @property
    def head(self) -> nn.Linear:
        return self.gpt.lm_head

    def forward(self, idx):
        """idx (B, T) -> class logits (B, n_classes), from ln_f(h)[:, -1], which has seen all T tokens."""
        logits, _ = self.gpt(idx, last_only=True)  # (B, 1, n_classes)
        return logits[:, -1]


def freeze(model: ClassifierGPT, trainable: str) -> ClassifierGPT:
    """Let only some parameters train: "head", "last" (the head, the last block and ln_f) or "all"."""
    tr = model.gpt.transformer
    parts = {"head": [model.head], "last": [model.head, tr.h[-1], tr.ln_f], "all": [model]}
    if trainable not in parts:
        raise ValueError(f"trainable must be one of {', '.join(parts)}, got {trainable!r}")
    model.requires_grad_(False)
    for part in parts[trainable]:
        part.requires_grad_(True)
    return model


def num_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@dataclass
class FinetuneConfig:
    steps: int = 60
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.1  # on weight matrices only, as in pretraining (gptbook.optim)
    seed: int = 0  # the order of the batches (the new head's weights come from ClassifierGPT's seed)


def finetune(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: FinetuneConfig) -> list[float]:
    """cfg.steps steps of AdamW on the trainable parameters, each on cfg.batch_size rows of (x (N, T), y (N,))
    drawn at random; returns each step's loss and leaves the model in eval mode."""
    gen = generator(cfg.seed, "data")
    optimizer = configure_optimizer(model, cfg.weight_decay, cfg.lr)
    losses = []
    model.train()
    for _ in range(cfg.steps):
        i = torch.randint(len(x), (cfg.batch_size,), generator=gen)
        loss = F.cross_entropy(model(x[i]), y[i])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    return losses


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The most likely class of each row of x (N, T): (N,)."""
    return torch.cat([model(x[i : i + batch_size]).argmax(-1) for i in range(0, len(x), batch_size)])


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return (predict(model, x) == y).float().mean().item()


def confusion(pred: torch.Tensor, y: torch.Tensor, n_classes: int = len(CLASSES)) -> torch.Tensor:
    """(n_classes, n_classes) counts: row = true class, column = predicted class."""
    return torch.bincount(y * n_classes + pred, minlength=n_classes * n_classes).view(n_classes, n_classes)
