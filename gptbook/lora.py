"""LoRA (chapter 11): a frozen Linear plus a trainable low-rank update, (alpha / r) B A, merged back when done.

y = x W^T + b + (alpha / r) x A^T B^T with A (r, in) random and B (out, r) zero: at the start the layer computes
exactly what it did, and training moves only A and B, r (in + out) numbers instead of in x out. A small model also
needs its LayerNorms and the row of a token it never saw to train (`train_norms`, `train_rows`; chapter 11, section 5).
"""

import math

import torch
import torch.nn as nn

# every Linear of a block: attention's c_attn (q, k, v) and c_proj, the MLP's c_fc and c_proj
TARGETS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


class LoRALinear(nn.Module):
    """A frozen nn.Linear and its low-rank update; `merged()` folds the update into a plain nn.Linear."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        self.base, self.rank, self.scale = base, rank, alpha / rank
        base.requires_grad_(False)
        self.A = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device))  # (r, in)
        self.B = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))  # (out, r): zero
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # nn.Linear's own initialisation

    def forward(self, x):  # x (..., in)
        return self.base(x) + (x @ self.A.t() @ self.B.t()) * self.scale  # (..., out)

    def delta(self) -> torch.Tensor:
        """The update as a full matrix, (alpha / r) B A: (out, in), rank <= r."""
        return (self.B @ self.A) * self.scale

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """A plain nn.Linear computing the same function: W + (alpha / r) B A, the same bias."""
        w, bias = self.base.weight, self.base.bias is not None
        out = nn.utils.skip_init(nn.Linear, w.size(1), w.size(0), bias, device=w.device, dtype=w.dtype)  # no RNG
        out.weight.copy_(w + self.delta())
        if self.base.bias is not None:
            out.bias.copy_(self.base.bias)
        return out


def add_lora(model: nn.Module, rank: int = 8, alpha: float = 16.0, targets=TARGETS) -> nn.Module:
    """Freeze every parameter of model, then wrap each Linear whose name ends with one of targets in a LoRALinear."""
    model.requires_grad_(False)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.endswith(tuple(targets))]
    if not names:
        raise ValueError(f"no nn.Linear in the model is named like {targets}")
    for name in names:
        parent, _, child = name.rpartition(".")
        holder = model.get_submodule(parent)
        setattr(holder, child, LoRALinear(getattr(holder, child), rank, alpha))
    return model


def train_norms(model: nn.Module) -> None:
    """Let every LayerNorm's gain and bias train too: the final one sets how peaked the output distribution can be."""
    for m in model.modules():
        if isinstance(m, nn.LayerNorm):
            m.requires_grad_(True)


def train_rows(embedding: nn.Embedding, rows) -> None:
    """Let these rows of a frozen embedding train too (a token the model never saw): the rest of its gradient is
    zeroed, so AdamW (no weight decay on embeddings) leaves the other rows exactly as they were."""
    w = embedding.weight
    keep = torch.zeros(w.size(0), 1, dtype=w.dtype, device=w.device)  # (vocab, 1)
    keep[list(rows)] = 1.0
    w.requires_grad_(True)
    w.trainable_rows = sorted(rows)  # what num_trainable counts
    w.row_hook = w.register_hook(lambda grad: grad * keep)


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace each LoRALinear by its merged nn.Linear, drop train_rows' hooks: the model's own architecture and
    parameters again, computing the same outputs, every parameter trainable as before add_lora."""
    names = [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    for name in names:
        parent, _, child = name.rpartition(".")
        holder = model.get_submodule(parent)
        setattr(holder, child, getattr(holder, child).merged())
    for p in model.parameters():
        if hasattr(p, "row_hook"):
            p.row_hook.remove()
            del p.row_hook, p.trainable_rows
    return model.requires_grad_(True)


def num_trainable(model: nn.Module) -> int:
    """Numbers that training changes: parameters with requires_grad (a tied one once), of an embedding given to
    train_rows only those rows."""
    total = 0
    for p in model.parameters():
        if p.requires_grad:
            total += len(p.trainable_rows) * p.size(1) if hasattr(p, "trainable_rows") else p.numel()
    return total
