"""What a trained model got (chapter 06): bits per character, count-based baselines, text copied from training."""

import math
from collections import Counter

import torch


def bits_per_char(nats_per_token: float, n_tokens: int, n_chars: int) -> float:
    """A loss per token as bits per character of the same text: comparable across tokenizers."""
    return nats_per_token * n_tokens / n_chars / math.log(2)


def ngram_losses(train: torch.Tensor, val: torch.Tensor, vocab_size: int, alpha=0.1, lam=0.7) -> tuple[float, float]:
    """Mean val cross-entropy (nats/token) of a unigram and an interpolated bigram model counted on train.

    unigram: (count + alpha) / (N + alpha V), so that a token never seen in training still has some probability;
    bigram: lam * c(a, b) / c(a) + (1 - lam) * unigram(b).
    """
    counts = torch.bincount(train, minlength=vocab_size).double()
    unigram = (counts + alpha) / (counts.sum() + alpha * vocab_size)  # (V,)
    prev, nxt = val[:-1].tolist(), val[1:].tolist()
    pairs = Counter(zip(train[:-1].tolist(), train[1:].tolist(), strict=True))
    nll_uni = -unigram[val[1:]].log().mean().item()
    nll_bi = 0.0
    for a, b in zip(prev, nxt, strict=True):
        p_pair = pairs[a, b] / counts[a].item() if counts[a] > 0 else 0.0
        nll_bi -= math.log(lam * p_pair + (1 - lam) * unigram[b].item())
    return nll_uni, nll_bi / len(nxt)


def longest_copy(sample: str, text: str) -> str:
    """The longest piece of `sample` that occurs verbatim in `text` (it writes, or it recites?)."""
    best = ""
    for i in range(len(sample)):
        n = len(best) + 1  # only a longer piece than the best so far is worth looking for
        while i + n <= len(sample) and sample[i : i + n] in text:
            best, n = sample[i : i + n], n + 1
    return best
