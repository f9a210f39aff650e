"""Turning next-token logits into text: temperature, top-k, top-p, min-p, and generation with a KV cache."""

import torch
import torch.nn.functional as F

from gptbook.tokenizer import EOT_ID


def check_sampling_args(temperature=1.0, top_k=None, top_p=None, min_p=None, max_new_tokens=0):
    """One clear ValueError for any sampling setting out of range."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if min_p is not None and not 0 <= min_p <= 1:
        raise ValueError(f"min_p must be in [0, 1], got {min_p}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")


def top_k_filter(logits, k: int):
    """Keep the k largest logits of each row (B, V); the rest become -inf."""
    kth = torch.topk(logits, min(k, logits.size(-1)), dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits, p: float):
    """Nucleus: keep the smallest set of most likely tokens whose probability reaches p (at least one)."""
    if p >= 1.0:  # everything; a float32 cumsum can reach 1.0 before the last token and would drop some
        return logits
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    probs = F.softmax(sorted_logits, dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # probability of the tokens ranked above each one
    drop_sorted = mass_before >= p  # the set already reached p without this token
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def min_p_filter(logits, min_p: float):
    """Keep tokens whose probability is at least min_p times that of the most likely token."""
    probs = F.softmax(logits, dim=-1)
    return logits.masked_fill(probs < min_p * probs.amax(dim=-1, keepdim=True), float("-inf"))


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, min_p=None, generator=None):
    """Logits of the last position (B, V) -> next token ids (B, 1). temperature 0 is greedy (argmax)."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    if min_p is not None:
        logits = min_p_filter(logits, min_p)
    probs = F.softmax(logits.float(), dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)


@torch.no_grad()
def generate(
    model,
    idx,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k=None,
    top_p=None,
    min_p=None,
    generator=None,
    use_kv_cache: bool = True,
    stop_at_eot: bool = False,
):
    """Append max_new_tokens sampled tokens to idx (B, T); the context is cropped to the last block_size.

    With the KV cache each step feeds only the newest token; once the context is full, the window slides and
    every step recomputes it from scratch, exactly as without the cache.
    Each step asks the model for the last position's logits only (last_only=True): one row of the LM head
    per sequence instead of one per position.
    """
    check_sampling_args(temperature, top_k, top_p, min_p, max_new_tokens)
    block_size = model.config.block_size
    was_training = model.training
    model.eval()
    if use_kv_cache:
        model.init_kv_cache(idx.size(0))
    cached = 0  # tokens in the KV cache
    try:
        for _ in range(max_new_tokens):
            if not use_kv_cache:
                logits, _ = model(idx[:, -block_size:], last_only=True)
            elif cached == 0 or cached >= block_size:  # (re)fill the cache with the whole window
                ctx = idx[:, -block_size:]
                logits, _ = model(ctx, pos=0, use_cache=True, last_only=True)
                cached = ctx.size(1)
            else:  # one new token at position `cached`
                logits, _ = model(idx[:, -1:], pos=cached, use_cache=True, last_only=True)
                cached += 1
            nxt = sample_next(logits[:, -1, :], temperature, top_k, top_p, min_p, generator)  # (B, 1)
            idx = torch.cat((idx, nxt), dim=1)
            if stop_at_eot and (nxt == EOT_ID).all():
                break
    finally:
        if use_kv_cache:
            model.free_kv_cache()
        model.train(was_training)
    return idx
