"""LoRA: zero B leaves the model unchanged, merging keeps its outputs, only the adapters (and chosen rows) train."""

import pytest
import torch
import torch.nn as nn

from gptbook.lora import LoRALinear, add_lora, merge_lora, num_trainable, train_norms, train_rows
from gptbook.model import GPT, GPTConfig
from gptbook.optim import configure_optimizer
from gptbook.tokenizer import EOT_ID

TINY = GPTConfig(block_size=16, n_layer=2, n_head=2, n_embd=32)


def tiny_gpt():
    torch.manual_seed(0)
    return GPT(TINY).eval()


def test_a_zero_b_leaves_the_layer_unchanged_and_merging_keeps_its_outputs():
    base = nn.Linear(32, 96)
    lora = LoRALinear(base, rank=4, alpha=8.0)
    x = torch.randn(3, 5, 32)
    assert torch.equal(lora(x), base(x))  # B = 0: exactly the base layer
    with torch.no_grad():
        lora.B.normal_()
    assert not torch.allclose(lora(x), base(x))
    assert torch.linalg.matrix_rank(lora.delta()) == 4  # (96, 32), rank r
    torch.testing.assert_close(lora.merged()(x), lora(x))
    assert type(lora.merged()) is nn.Linear and not lora.base.weight.requires_grad
    with pytest.raises(ValueError, match="rank must be >= 1"):
        LoRALinear(base, rank=0, alpha=1.0)


def test_add_lora_freezes_the_model_and_counts_r_times_in_plus_out():
    model, ids = tiny_gpt(), torch.randint(0, TINY.vocab_size, (2, 16))
    before = model(ids)[0]
    add_lora(model, rank=4, alpha=8.0)
    assert torch.equal(model(ids)[0], before)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith((".A", ".B")) for n in trainable)
    C = TINY.n_embd  # c_attn C -> 3C, attn.c_proj C -> C, c_fc C -> 4C, mlp.c_proj 4C -> C
    assert num_trainable(model) == TINY.n_layer * 4 * ((C + 3 * C) + (C + C) + (C + 4 * C) + (4 * C + C))
    with pytest.raises(ValueError, match="no nn.Linear"):
        add_lora(tiny_gpt(), targets=("nothing",))


def test_train_rows_changes_only_those_rows_and_merge_gives_back_a_plain_gpt():
    model, ids = tiny_gpt(), torch.randint(0, 100, (4, 16))
    wte0 = model.transformer.wte.weight.detach().clone()
    add_lora(model, rank=2, alpha=4.0)
    train_norms(model)
    train_rows(model.transformer.wte, [EOT_ID])
    n_norms = sum(p.numel() for m in model.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters())
    n_lora = sum(p.numel() for n, p in model.named_parameters() if n.endswith((".A", ".B")))
    assert num_trainable(model) == n_lora + n_norms + TINY.n_embd
    opt = configure_optimizer(model, 0.1, 1e-2)
    for _ in range(3):
        logits, _ = model(ids)
        logits[..., EOT_ID].mean().backward()  # a gradient on the EOT row and, through the inputs, on others
        opt.step()
        opt.zero_grad()
    wte = model.transformer.wte.weight.detach()
    assert not torch.equal(wte[EOT_ID], wte0[EOT_ID])
    assert torch.equal(wte[:EOT_ID], wte0[:EOT_ID])  # every other row: bit for bit
    out = model(ids)[0]
    merge_lora(model)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert all(p.requires_grad for p in model.parameters()) and not hasattr(model.transformer.wte.weight, "row_hook")
    plain = GPT(TINY)
    plain.load_state_dict(model.state_dict())  # the same names and shapes as a GPT's
    torch.testing.assert_close(plain.eval()(ids)[0], out, rtol=1e-5, atol=1e-5)
