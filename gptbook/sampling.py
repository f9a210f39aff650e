"""Turning next-token logits into text: temperature, top-k, top-p, min-p, and generation with a KV cache."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gptbook.model import GPTConfig
from gptbook.tokenizer import EOT_ID, encode


@dataclass(frozen=True, kw_only=True)
class Sampling:
    """How to pick the next token; None switches a filter off. Keyword-only: top_p and min_p cannot swap."""

    temperature: float = 1.0  # 0: greedy (argmax)
    top_k: int | None = None  # keep the k most likely tokens
    top_p: float | None = None  # keep the smallest set of most likely tokens with probability >= top_p
    min_p: float | None = None  # keep tokens at least min_p x as likely as the top one

    def __post_init__(self):
        if not (self.temperature == 0 or 1e-4 <= self.temperature < float("inf")):  # nan fails every comparison
            raise ValueError(f"temperature must be 0 (greedy) or a finite number >= 1e-4, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.min_p is not None and not 0 <= self.min_p <= 1:
            raise ValueError(f"min_p must be in [0, 1], got {self.min_p}")


GREEDY = Sampling(temperature=0)


def top_k_filter(logits, k: int):
    """Keep the k largest logits of each row (B, V); the rest become -inf."""
    kth = torch.topk(logits, min(k, logits.size(-1)), dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits, p: float):
    """Nucleus: keep the smallest set of most likely tokens whose probability reaches p (at least one)."""
    if p >= 1.0:  # everything, also tokens whose probability underflows to 0
        return logits
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    probs = F.softmax(sorted_logits, dim=-1)
    # each token's probability plus that of all less likely ones, summed from the small end: a float32 sum from the
    # large end drifts by more than a tail token's probability (at p = 0.99 it dropped tokens the nucleus needs)
    tail = probs.flip(-1).cumsum(dim=-1).flip(-1)
    drop_sorted = tail <= (1 - p) * tail[..., :1]  # the tokens ranked above it already reach p of the total
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def min_p_filter(logits, min_p: float):
    """Keep tokens whose probability is at least min_p times that of the most likely token."""
    probs = F.softmax(logits, dim=-1)
    return logits.masked_fill(probs < min_p * probs.amax(dim=-1, keepdim=True), float("-inf"))


def sample_next(logits, sampling: Sampling = Sampling(), generator=None):
    """Logits of the last position (B, V) -> next token ids (B, 1)."""
    if sampling.temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / sampling.temperature
    if sampling.top_k is not None:
        logits = top_k_filter(logits, sampling.top_k)
    if sampling.top_p is not None:
        logits = top_p_filter(logits, sampling.top_p)
    if sampling.min_p is not None:
        logits = min_p_filter(logits, sampling.min_p)
    probs = F.softmax(logits.float(), dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)


class KVCache:
    """Keys and values of the tokens seen so far, for decoding one token at a time (chapter 07).

    The caller makes one, passes it to every forward call, and GPT.forward fills it: each layer writes its k, v
    (B, nh, T, hs) at slots pos .. pos+T-1 and attends to slots 0 .. pos+T-1; then pos advances by T.
    It also keeps a (C, vocab) copy of the LM head's weight: one token's logits x @ W^T read W's 50257 short rows
    one dot product at a time; with W^T stored row by row they are a sum of C long rows, which a CPU streams faster.
    """

    def __init__(self, config: GPTConfig, batch_size: int):
        self.batch_size, self.block_size = batch_size, config.block_size
        self.k, self.v = [None] * config.n_layer, [None] * config.n_layer  # (B, nh, block_size, hs) each, per layer
        self.pos = 0  # tokens stored so far
        self.lm_head_t = None  # (C, vocab), made at the first forward

    def update(self, layer: int, k, v):
        """Store k, v (B, nh, T, hs) at slots pos .. pos+T-1; return every stored key and value, (B, nh, pos+T, hs)."""
        B, nh, T, hs = k.shape
        if B != self.batch_size:
            raise ValueError(f"this KV cache was made for batch size {self.batch_size}, got a batch of {B}")
        if self.k[layer] is None:
            self.k[layer] = k.new_zeros(B, nh, self.block_size, hs)
            self.v[layer] = v.new_zeros(B, nh, self.block_size, hs)
        end = self.pos + T
        self.k[layer][:, :, self.pos : end] = k
        self.v[layer][:, :, self.pos : end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]


@torch.no_grad()
def generate(
    model,
    idx,
    max_new_tokens: int,
    sampling: Sampling = Sampling(),
    *,
    generator=None,
    use_kv_cache: bool = True,
    stop_at_eot: bool = False,
):
    """Append up to max_new_tokens sampled tokens to idx (B, T); the context is cropped to the last block_size.

    With the KV cache each step feeds only the newest token; once the context is full, the window slides and
    every step recomputes it from scratch (the cache refilled), exactly as without the cache.
    Each step asks for the last position's logits only (last_only=True): one row of the LM head per sequence.
    stop_at_eot: a row that has emitted <|endoftext|> is padded with it from then on; all rows ended: stop.
    """
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if idx.dim() != 2 or idx.size(1) == 0:
        raise ValueError(f"idx must be (B, T) prompt ids with at least one token, got shape {tuple(idx.shape)}")
    block_size = model.config.block_size
    was_training = model.training
    model.eval()
    cache = KVCache(model.config, idx.size(0)) if use_kv_cache else None
    ended = torch.zeros(idx.size(0), 1, dtype=torch.bool, device=idx.device)  # (B, 1)
    try:
        for _ in range(max_new_tokens):
            if cache is None:
                logits, _ = model(idx[:, -block_size:], last_only=True)
            elif cache.pos == 0 or cache.pos >= block_size:  # (re)fill the cache with the whole window
                cache.pos = 0
                logits, _ = model(idx[:, -block_size:], cache=cache, last_only=True)
            else:  # one new token at position cache.pos
                logits, _ = model(idx[:, -1:], cache=cache, last_only=True)
            nxt = sample_next(logits[:, -1, :], sampling, generator)  # (B, 1)
            if stop_at_eot:
                nxt = nxt.masked_fill(ended, EOT_ID)  # rows that have ended: padding
                ended |= nxt == EOT_ID
            idx = torch.cat((idx, nxt), dim=1)
            if stop_at_eot and ended.all():
                break
    finally:
        model.train(was_training)
    return idx


def prompt_ids(prompt: str, block_size: int, note=None, encode=encode) -> torch.Tensor:
    """The prompt as (1, T) token ids; longer than block_size: its last block_size tokens, with a note."""
    if not prompt:
        raise ValueError("--prompt is empty; give some text to continue")
    try:
        ids = encode(prompt)
    except ValueError as e:
        eot = "<|endoftext|>" in str(e)
        raise ValueError(
            f"--prompt {'contains <|endoftext|>, the special end-of-document token; remove it' if eot else e}"
        ) from None
    if len(ids) > block_size:
        if note:
            note(f"note: the prompt is {len(ids)} tokens > block_size {block_size}: keeping its last {block_size}")
        ids = ids[-block_size:]
    return torch.tensor([ids], dtype=torch.long)
