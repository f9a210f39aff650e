"""The optimizer of chapter 06: AdamW with two parameter groups, and its learning-rate schedule."""

import math

import torch
import torch.nn as nn


def get_lr(step: int, cfg) -> float:
    """Learning rate for `step` (0-based): linear warmup to cfg.lr, cosine decay to cfg.min_lr, then constant."""
    if step < cfg.warmup_iters:
        return cfg.lr * (step + 1) / (cfg.warmup_iters + 1)
    if step >= cfg.lr_decay_iters:
        return cfg.min_lr
    ratio = (step - cfg.warmup_iters) / (cfg.lr_decay_iters - cfg.warmup_iters)  # 0 -> 1
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.lr - cfg.min_lr)


def configure_optimizer(model: nn.Module, weight_decay: float, lr: float, betas=(0.9, 0.99)):
    """AdamW that decays weight matrices only: no decay on biases, LayerNorm gains and embeddings.

    The token embedding is also lm_head's weight (tying); parameters() yields it once, in the no-decay group.
    """
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2 and id(p) not in embeddings]
    no_decay = [p for p in params if p.dim() < 2 or id(p) in embeddings]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    try:  # fused: one kernel for all parameters (CUDA; CPU since torch 2.4), several times faster than a loop
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), fused=True)
    except (RuntimeError, ValueError):  # this device or torch version has no fused AdamW
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas))
