"""GPT-2 weights from and to HuggingFace: the same parameter names, Conv1D weights transposed (chapter 09)."""

import json
from pathlib import Path

import torch

from gptbook.model import GPT, GPTConfig

# HuggingFace GPT-2 stores these as Conv1D weights, (in, out): transposed relative to our nn.Linear (out, in)
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def conv1d_transposed(sd: dict) -> dict:
    """The state dict with every Conv1D weight transposed: HF -> ours, and ours -> HF (its own inverse)."""
    return {k: v.t() if k.endswith(CONV1D) else v for k, v in sd.items()}


def from_hf_state_dict(sd: dict, config: GPTConfig) -> GPT:
    """A GPT from a HuggingFace GPT2LMHeadModel state dict."""
    model = GPT(config)
    ours = model.state_dict()
    sd = {k: v for k, v in sd.items() if not k.endswith((".attn.bias", ".attn.masked_bias"))}  # HF's mask buffers
    sd.setdefault("lm_head.weight", sd["transformer.wte.weight"])
    missing, extra = set(ours) - set(sd), set(sd) - set(ours)
    if missing or extra:
        raise ValueError(f"state dict mismatch: missing {sorted(missing)[:5]}, unexpected {sorted(extra)[:5]}")
    with torch.no_grad():
        for k, v in conv1d_transposed(sd).items():
            if v.shape != ours[k].shape:
                raise ValueError(f"shape mismatch for {k}: {tuple(v.shape)} vs ours {tuple(ours[k].shape)}")
            ours[k].copy_(v)
    return model


def from_pretrained_dir(path) -> GPT:
    """GPT-2 weights from a local HuggingFace folder: config.json + model.safetensors or pytorch_model.bin."""
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
    return from_hf_state_dict(sd, config)


def to_hf(model: GPT):
    """HuggingFace's GPT2LMHeadModel with our model's weights (needs `transformers`)."""
    import transformers

    c = model.config
    if c.pos_emb != "learned":  # GPT-2 has a learned position table, wpe
        raise ValueError(f"GPT-2 has learned positions; this model has pos_emb={c.pos_emb!r}")
    hf = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(
            vocab_size=c.vocab_size,
            n_positions=c.block_size,
            n_embd=c.n_embd,
            n_layer=c.n_layer,
            n_head=c.n_head,
            resid_pdrop=c.dropout,
            embd_pdrop=c.dropout,
            attn_pdrop=c.dropout,
        )
    )
    hf.load_state_dict(conv1d_transposed(model.state_dict()))
    return hf
