"""The fast loss path of chapter 09: LM head + cross-entropy in row chunks, the (N, vocab) logits never stored."""

import torch

IGNORE_INDEX = -100  # a target to skip (prompt tokens in fine-tuning), F.cross_entropy's default


class ChunkedLMHeadLoss(torch.autograd.Function):
    """mean cross_entropy(h @ W^T, targets) computed chunk by chunk of rows.

    With grad, forward also works out the gradients while each chunk's logits are at hand:
    d loss / d logits = (softmax - onehot) / N, so grad_h = dlogits @ W and grad_W = dlogits^T @ h.
    Backward then only scales them. The full (N, vocab) logits never exist, in forward or backward.
    """

    @staticmethod
    @torch.autocast("cpu", enabled=False)
    @torch.autocast("cuda", enabled=False)
    def forward(ctx, h, weight, targets, chunk_size, grad):  # float32 throughout, as cross_entropy under autocast
        h, weight = h.float(), weight.float()  # h (N, C), weight (V, C), targets (N,)
        N, V = h.size(0), weight.size(0)
        keep = (targets != IGNORE_INDEX).float()  # (N,): 1 for the rows that count, as in F.cross_entropy
        targets = targets.clamp(min=0)  # an ignored row gathers some column, then counts for nothing
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
            kc = keep[s : s + n, None]  # (n, 1)
            total += ((lse - target_logits) * kc[:, 0]).sum()
            if grad:
                probs[torch.arange(n, device=tc.device), tc] -= 1.0  # N x d loss / d logits = softmax - onehot
                torch.mm(probs, weight, out=grad_h[s : s + n]).mul_(kc)  # (n, C); ignored rows: no gradient
                grad_w.addmm_(probs.t(), hc * kc)  # (V, C)
        ctx.N = keep.sum()  # the mean over the rows that count
        ctx.save_for_backward(grad_h, grad_w)
        return total / ctx.N

    @staticmethod
    def backward(ctx, grad_loss):
        grad_h, grad_w = ctx.saved_tensors
        scale = grad_loss / ctx.N  # the mean's 1/N, applied once here
        return grad_h * scale, grad_w * scale, None, None, None


def chunked_cross_entropy(h, weight, targets, chunk_size: int = 512):
    """Same value and gradients as F.cross_entropy(h @ weight.T, targets), without the (N, vocab) logits.

    The gradient work happens only when a gradient can flow: not under torch.no_grad() (evaluation).
    Inside forward grad mode is always off, so this is decided here, outside it.
    """
    grad = torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad)
    return ChunkedLMHeadLoss.apply(h, weight, targets, chunk_size, grad)
