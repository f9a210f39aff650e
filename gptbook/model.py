"""A GPT-2 style decoder-only Transformer; parameter names match GPT-2's checkpoints."""

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GPTConfig:
    vocab_size: int = 50257  # GPT-2 BPE
    block_size: int = 128  # longest context the model can see
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and LayerNorm, as GPT-2
    attn_impl: str = "sdpa"  # "sdpa" (F.scaled_dot_product_attention) or "explicit" (the math, step by step)
    pos_emb: str = "learned"  # "learned" (GPT-2) or "rope" (rotary, no position table)
    chunked_loss: bool = False  # fast path: LM head + cross-entropy in row chunks, (B*T, vocab) logits never stored

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.attn_impl not in ("sdpa", "explicit"):
            raise ValueError(f"attn_impl must be 'sdpa' or 'explicit', got {self.attn_impl!r}")
        if self.pos_emb not in ("learned", "rope"):
            raise ValueError(f"pos_emb must be 'learned' or 'rope', got {self.pos_emb!r}")
        if self.pos_emb == "rope" and (self.n_embd // self.n_head) % 2:
            raise ValueError("rope needs an even head size (n_embd // n_head)")


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


class ChunkedLMHeadLoss(torch.autograd.Function):
    """mean cross_entropy(h @ W^T, targets) computed chunk by chunk of rows.

    Forward also works out the gradients, while each chunk's logits are at hand:
    d loss / d logits = (softmax - onehot) / N, so grad_h = dlogits @ W and grad_W = dlogits^T @ h.
    Backward then only scales them. The full (N, vocab) logits never exist, in forward or backward.
    """

    @staticmethod
    @torch.autocast("cpu", enabled=False)
    @torch.autocast("cuda", enabled=False)
    def forward(ctx, h, weight, targets, chunk_size):  # float32 throughout, as cross_entropy under autocast
        h, weight = h.float(), weight.float()  # h (N, C), weight (V, C), targets (N,)
        N, V = h.size(0), weight.size(0)
        grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        grad_h = torch.empty_like(h) if grad else None
        grad_w = torch.zeros_like(weight) if grad else None
        # One buffer for every chunk's logits, its rows padded to a multiple of 64 floats (50257 -> 50304):
        # aligned rows make the three big matmuls much faster.
        buf = h.new_empty(min(chunk_size, N), -(-V // 64) * 64)
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        for s in range(0, N, chunk_size):
            hc, tc = h[s : s + chunk_size], targets[s : s + chunk_size]
            n = hc.size(0)
            logits = torch.mm(hc, weight.t(), out=buf[:n, :V])  # (n, V), a view into the padded buffer
            buf[:n, V:] = float("-inf")  # the padding: probability 0
            target_logits, max_logits = logits.gather(1, tc[:, None]).squeeze(1), logits.amax(dim=-1)  # (n,) each
            probs = torch.softmax(buf[:n], dim=-1, out=buf[:n])[:, :V]  # in place: the logits become probabilities
            # log-sum-exp without a second pass of exp: the largest probability is exp(0) / sum(exp(logits - max))
            lse = max_logits - probs.amax(dim=-1).log()  # (n,)
            total += (lse - target_logits).sum()
            if grad:
                probs[torch.arange(n, device=tc.device), tc] -= 1.0  # N x d loss / d logits = softmax - onehot
                torch.mm(probs, weight, out=grad_h[s : s + n])  # (n, C)
                grad_w.addmm_(probs.t(), hc)  # (V, C)
        ctx.N = N
        ctx.save_for_backward(grad_h, grad_w)
        return total / N

    @staticmethod
    def backward(ctx, grad_loss):
        grad_h, grad_w = ctx.saved_tensors
        scale = grad_loss / ctx.N  # the mean's 1/N, applied once here
        return grad_h * scale, grad_w * scale, None, None


def chunked_cross_entropy(h, weight, targets, chunk_size: int = 512):
    """Same value and gradients as F.cross_entropy(h @ weight.T, targets), without the (N, vocab) logits."""
    return ChunkedLMHeadLoss.apply(h, weight, targets, chunk_size)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head, self.n_embd = config.n_head, config.n_embd
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
        self.cache_k = self.cache_v = None  # KV cache: (B, nh, block_size, hs) each, see GPT.init_kv_cache
        self.save_attn = False  # explicit path only: keep the attention weights in self.attn_weights

    def forward(self, x, pos: int = 0, use_cache: bool = False):
        """x (B, T, C) holds positions pos .. pos+T-1; with use_cache, earlier keys and values come from the cache."""
        B, T, C = x.size()
        hs = C // self.n_head
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # (B, T, C) each
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        if self.use_rope:
            cos, sin = self.rope_cos[pos : pos + T], self.rope_sin[pos : pos + T]
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if use_cache:
            self.cache_k[:B, :, pos : pos + T] = k
            self.cache_v[:B, :, pos : pos + T] = v
            k, v = self.cache_k[:B, :, : pos + T], self.cache_v[:B, :, : pos + T]  # (B, nh, S, hs), S = pos+T
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

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, pos: int = 0, use_cache: bool = False):
        x = x + self.attn(self.ln_1(x), pos, use_cache)
        x = x + self.mlp(self.ln_2(x))
        return x


# HuggingFace GPT-2 stores these as Conv1D weights, (in, out): transposed relative to our nn.Linear (out, in)
HF_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),  # token embeddings
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        if config.pos_emb == "learned":
            self.transformer.wpe = nn.Embedding(config.block_size, config.n_embd)  # position embeddings
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # weight tying: one matrix embeds and un-embeds
        self.lm_head_t = None  # (C, vocab) copy of lm_head.weight while decoding with the KV cache
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

    def forward(self, idx, targets=None, pos: int = 0, use_cache: bool = False, last_only: bool = False):
        """idx (B, T) token ids -> (logits (B, T, vocab), loss or None); pos > 0 only with the KV cache.

        With config.chunked_loss and targets, logits are not computed: (None, loss).
        last_only: logits of the last position only, (B, 1, vocab): all that generation needs.
        """
        B, T = idx.size()
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
            x = block(x, pos, use_cache)
        x = self.transformer.ln_f(x)
        if targets is not None and self.config.chunked_loss:
            return None, chunked_cross_entropy(x.view(B * T, -1), self.lm_head.weight, targets.view(-1))
        if last_only:  # one row of the LM head per sequence instead of T
            x = x[:, -1:, :]  # (B, 1, C)
        if use_cache and self.lm_head_t is not None:  # decoding: the transposed copy (see init_kv_cache)
            logits = x @ self.lm_head_t  # (B, T, vocab)
        else:
            logits = self.lm_head(x)  # (B, T, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss

    def init_kv_cache(self, batch_size: int):
        """Pre-allocate each block's KV cache: (B, nh, block_size, hs) for keys and for values.

        Also a (C, vocab) copy of the LM head's weight for the cached steps: one token's logits x @ W^T read W's
        50257 short rows one dot product at a time; with W^T stored row by row they are a sum of C long rows,
        which the CPU streams faster (GPT-2 small here: 11 vs 17 ms). Same numbers, up to float rounding.
        """
        c, w = self.config, self.transformer.wte.weight
        shape = (batch_size, c.n_head, c.block_size, c.n_embd // c.n_head)
        for block in self.transformer.h:
            block.attn.cache_k = torch.zeros(shape, dtype=w.dtype, device=w.device)
            block.attn.cache_v = torch.zeros(shape, dtype=w.dtype, device=w.device)
        self.lm_head_t = self.lm_head.weight.detach().t().contiguous()  # (C, vocab)

    def free_kv_cache(self):
        for block in self.transformer.h:
            block.attn.cache_k = block.attn.cache_v = None
        self.lm_head_t = None

    @torch.no_grad()
    def attention_maps(self, idx) -> torch.Tensor:
        """Attention weights of every layer and head for idx (1, T): (n_layer, n_head, T, T)."""
        attns = [block.attn for block in self.transformer.h]
        impls = [a.attn_impl for a in attns]
        for a in attns:
            a.attn_impl, a.save_attn = "explicit", True  # only the explicit path has the weights
        try:
            self(idx)
            return torch.stack([a.attn_weights[0] for a in attns])
        finally:
            for a, impl in zip(attns, impls, strict=True):
                a.attn_impl, a.save_attn, a.attn_weights = impl, False, None

    @classmethod
    def from_hf_state_dict(cls, sd: dict, config: GPTConfig) -> "GPT":
        """Build a GPT from a HuggingFace GPT2LMHeadModel state dict (same names; Conv1D weights transposed)."""
        model = cls(config)
        ours = model.state_dict()
        sd = {k: v for k, v in sd.items() if not k.endswith((".attn.bias", ".attn.masked_bias"))}
        sd.setdefault("lm_head.weight", sd["transformer.wte.weight"])
        missing = set(ours) - set(sd)
        extra = set(sd) - set(ours)
        if missing or extra:
            raise ValueError(f"state dict mismatch: missing {sorted(missing)[:5]}, unexpected {sorted(extra)[:5]}")
        with torch.no_grad():
            for k, v in sd.items():
                v = v.t() if k.endswith(HF_CONV1D) else v  # HF Conv1D stores (in, out); nn.Linear wants (out, in)
                if v.shape != ours[k].shape:
                    raise ValueError(f"shape mismatch for {k}: {tuple(v.shape)} vs ours {tuple(ours[k].shape)}")
                ours[k].copy_(v)
        return model

    @classmethod
    def from_pretrained_dir(cls, path) -> "GPT":
        """Load GPT-2 weights from a local HuggingFace folder: config.json + model.safetensors or pytorch_model.bin."""
        path = Path(path)
        hf = json.loads((path / "config.json").read_text())
        config = GPTConfig(
            vocab_size=hf["vocab_size"],
            block_size=hf.get("n_positions", hf.get("n_ctx", 1024)),
            n_layer=hf["n_layer"],
            n_head=hf["n_head"],
            n_embd=hf["n_embd"],
        )
        if (path / "model.safetensors").exists():
            from safetensors.torch import load_file

            sd = load_file(path / "model.safetensors")
        elif (path / "pytorch_model.bin").exists():
            sd = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
        else:
            raise FileNotFoundError(f"no model.safetensors or pytorch_model.bin in {path}")
        # bare GPT2Model files lack the "transformer." prefix
        sd = {(k if k.startswith(("transformer.", "lm_head.")) else "transformer." + k): v for k, v in sd.items()}
        return cls.from_hf_state_dict(sd, config)
