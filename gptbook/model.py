"""A GPT-2 style decoder-only Transformer; parameter names match GPT-2's checkpoints."""

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from gptbook.fused_loss import chunked_cross_entropy
from gptbook.tokenizer import VOCAB_SIZE


@dataclass
class GPTConfig:
    vocab_size: int = VOCAB_SIZE  # GPT-2 BPE
    block_size: int = 128  # longest context the model can see
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and LayerNorm, as GPT-2
    attn_impl: str = "sdpa"  # "sdpa" (F.scaled_dot_product_attention) or "explicit" (the math, step by step)
    pos_emb: str = "learned"  # "learned" (GPT-2), "rope" (rotary, no position table) or "none" (NoPE: neither)
    chunked_loss: bool = False  # chapter 09's fast path: LM head + cross-entropy in chunks (gptbook.fused_loss)

    def __post_init__(self):
        check_numbers(self)
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.attn_impl not in ("sdpa", "explicit"):
            raise ValueError(f"attn_impl must be 'sdpa' or 'explicit', got {self.attn_impl!r}")
        if self.pos_emb not in ("learned", "rope", "none"):
            raise ValueError(f"pos_emb must be 'learned', 'rope' or 'none', got {self.pos_emb!r}")
        if self.pos_emb == "rope" and (self.n_embd // self.n_head) % 2:
            raise ValueError("rope needs an even head size (n_embd // n_head)")


def check_numbers(config) -> None:
    """Every number field of a config dataclass (a subclass's too) has its default's type and is finite."""
    flag = "--" if type(config) is not GPTConfig else ""  # TrainConfig's fields are command-line flags
    for f in dataclasses.fields(config):
        v, kind = getattr(config, f.name), type(f.default)
        if kind in (bool, int, float) and not (type(v) is kind or (kind is float and type(v) is int)):
            raise ValueError(f"{flag}{f.name} must be {kind.__name__}, got {v!r}")
        if kind is int and not -(2**63) <= v < 2**63:  # what torch takes
            raise ValueError(f"{flag}{f.name} must fit in 64 bits, got {v}")
        if kind is float and not math.isfinite(v):
            raise ValueError(f"{flag}{f.name} must be a finite number, got {v}")


def check_input(idx, cache, vocab_size: int) -> None:
    """Clear errors for misuse from Python: idx (B, T) ids below vocab_size, a KVCache at a position >= 0."""
    if idx.dim() != 2:
        raise ValueError(f"idx must be (B, T) token ids, got shape {tuple(idx.shape)}; add a batch dimension")
    if cache is not None and not hasattr(cache, "update"):
        raise ValueError(f"cache must be a gptbook.sampling.KVCache(config, batch_size), got {type(cache).__name__}")
    if cache is not None and cache.pos < 0:
        raise ValueError(f"cache.pos must be >= 0, got {cache.pos}")
    if idx.numel() and not getattr(torch.compiler, "is_compiling", lambda: False)():  # compiled: no graph break
        lo, hi = idx.min().item(), idx.max().item()
        if lo < 0 or hi >= vocab_size:
            raise ValueError(f"token ids must be in [0, vocab_size {vocab_size}), got {lo if lo < 0 else hi}")


def rope_tables(block_size: int, head_size: int, base: float = 10000.0):
    """cos and sin of angle pos * base^(-2i/hs) for every position and pair of channels: each (T, hs/2)."""
    inv_freq = base ** (-torch.arange(0, head_size, 2).float() / head_size)
    angles = torch.outer(torch.arange(block_size).float(), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    """Rotate each channel pair (x1, x2) of x (B, nh, T, hs) by its position's angle."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.flatten(-2).type_as(x)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer: int = 0):
        super().__init__()
        self.n_head, self.n_embd, self.layer = config.n_head, config.n_embd, layer  # layer: its slot in a KV cache
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v for all heads
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.dropout = config.dropout
        self.attn_impl = config.attn_impl
        T = config.block_size
        # causal[i, j] is True where query i may look at key j (j <= i)
        self.register_buffer("causal", torch.tril(torch.ones(T, T, dtype=torch.bool)), persistent=False)
        self.use_rope = config.pos_emb == "rope"
        if self.use_rope:
            cos, sin = rope_tables(T, config.n_embd // config.n_head)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.save_attn = False  # explicit path only: keep the attention weights in self.attn_weights

    def forward(self, x, cache=None):
        """x (B, T, C); with a KV cache (chapter 07) x holds positions pos .. pos+T-1 after the cached ones."""
        B, T, C = x.size()
        hs = C // self.n_head
        pos = 0 if cache is None else cache.pos
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # (B, T, C) each
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        if self.use_rope:
            cos, sin = self.rope_cos[pos : pos + T], self.rope_sin[pos : pos + T]
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer, k, v)  # (B, nh, S, hs), S = pos + T
        mask = self.causal[pos : pos + T, : pos + T]  # (T, S): query pos+i sees keys 0 .. pos+i

        if self.attn_impl == "explicit":
            # softmax(Q K^T / sqrt(hs)) V, future keys masked out
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))  # (B, nh, T, S)
            att = att.masked_fill(~mask, torch.finfo(att.dtype).min)
            att = F.softmax(att, dim=-1)
            if self.save_attn:
                self.attn_weights = att.detach()
            att = self.attn_dropout(att)
            y = att @ v  # (B, nh, T, hs)
        else:
            p = self.dropout if self.training else 0.0
            if T == k.size(2):  # square: the usual causal triangle
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
            elif T == 1:  # one new query after a cached prefix: it sees every key, no mask needed
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
            else:  # T new queries after a cached prefix
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side again
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2's GELU
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LN Transformer block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, config: GPTConfig, layer: int = 0):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, cache=None):
        x = x + self.attn(self.ln_1(x), cache)
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),  # token embeddings
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config, layer) for layer in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        if config.pos_emb == "learned":
            self.transformer.wpe = nn.Embedding(config.block_size, config.n_embd)  # position embeddings
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # weight tying: one matrix embeds and un-embeds
        self.apply(self._init_weights)
        # residual projections add to the stream 2 * n_layer times: scale them so its variance stays ~1
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count (the tied lm_head counted once); optionally without the embeddings."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wte.weight.numel()
            if "wpe" in self.transformer:
                n -= self.transformer.wpe.weight.numel()
        return n

    def forward(self, idx, targets=None, cache=None, last_only: bool = False):
        """idx (B, T) token ids -> (logits (B, T, vocab), loss or None).

        cache: a KVCache (chapter 07); idx then continues the tokens already in it, and it advances by T.
        last_only: logits of the last position only, (B, 1, vocab): all that generation needs.
        With config.chunked_loss and targets, logits are not computed: (None, loss).
        """
        check_input(idx, cache, self.config.vocab_size)
        B, T = idx.size()
        pos = 0 if cache is None else cache.pos
        if last_only and targets is not None:
            raise ValueError("last_only gives the last position's logits only; the loss needs all of them")
        if pos + T > self.config.block_size:
            raise ValueError(
                f"sequence of {pos + T} tokens is longer than block_size {self.config.block_size}; "
                f"crop it to the last {self.config.block_size} tokens"
            )
        x = self.transformer.wte(idx)  # (B, T, C)
        if "wpe" in self.transformer:
            x = x + self.transformer.wpe(torch.arange(pos, pos + T, device=idx.device))  # (T, C) broadcast
        x = self.transformer.drop(x)
        for block in self.transformer.h:
            x = block(x, cache)
        x = self.transformer.ln_f(x)
        if cache is not None:
            cache.pos += T
        if targets is not None and self.config.chunked_loss:
            return None, chunked_cross_entropy(x.view(B * T, -1), self.lm_head.weight, targets.view(-1))
        if last_only:  # one row of the LM head per sequence instead of T
            x = x[:, -1:, :]  # (B, 1, C)
        if cache is None:
            logits = self.lm_head(x)  # (B, T, vocab)
        else:  # decoding: the cache's transposed copy of the LM head (see KVCache)
            if cache.lm_head_t is None:
                cache.lm_head_t = self.lm_head.weight.detach().t().contiguous()  # (C, vocab)
            logits = x @ cache.lm_head_t  # (B, T, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss

    @torch.no_grad()
    def attention_maps(self, idx) -> torch.Tensor:
        """Attention weights of every layer and head for idx (1, T): (n_layer, n_head, T, T)."""
        attns = [block.attn for block in self.transformer.h]
        impls = [a.attn_impl for a in attns]
        for a in attns:
            a.attn_impl, a.save_attn = "explicit", True  # only the explicit path has the weights
        try:
            self(idx, last_only=True)  # the weights are all it needs: one row of the LM head
            return torch.stack([a.attn_weights[0] for a in attns])
        finally:
            for a, impl in zip(attns, impls, strict=True):
                a.attn_impl, a.save_attn, a.attn_weights = impl, False, None
