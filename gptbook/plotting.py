"""Plot helpers shared by several notebooks (matplotlib)."""

import matplotlib.pyplot as plt
import torch


def plot_attention(att, tokens=None, ax=None, title=None, vmax: float = 1.0):
    """One attention matrix (T, S) as a heatmap: row = query position, column = key position; returns the image.

    Colours run from 0 to vmax (1: a weight's largest value), the same in every panel: pass the image to
    `plt.colorbar` to show the scale."""
    ax = ax or plt.gca()
    image = ax.imshow(torch.as_tensor(att).float().cpu().numpy(), cmap="viridis", vmin=0.0, vmax=vmax)
    if tokens is not None:
        ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=7)
        ax.set_yticks(range(len(tokens)), tokens, fontsize=7)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return image


def plot_attention_grid(att, tokens=None, size: float = 2.2):
    """All layers and heads: att (n_layer, n_head, T, T) -> a grid of heatmaps, one row per layer, one colour bar."""
    n_layer, n_head = att.shape[:2]
    fig, axes = plt.subplots(
        n_layer, n_head, figsize=(size * n_head + 1, size * n_layer), squeeze=False, layout="constrained"
    )
    for layer in range(n_layer):
        for head in range(n_head):
            show = tokens if (layer == n_layer - 1 and head == 0) else None
            image = plot_attention(att[layer, head], show, axes[layer][head], f"layer {layer} head {head}")
    fig.colorbar(image, ax=axes, shrink=0.6, label="attention weight")
    return fig


def plot_losses(history, ax=None, logy: bool = False):
    """Train/val loss against step from a trainer history (list of dicts with step, train_loss, val_loss)."""
    ax = ax or plt.gca()
    evals = [h for h in history if h.get("val_loss") is not None]
    ax.plot([h["step"] for h in evals], [h["train_loss"] for h in evals], "o-", label="train")
    ax.plot([h["step"] for h in evals], [h["val_loss"] for h in evals], "o-", label="val")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy loss")
    if logy:
        ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    return ax
