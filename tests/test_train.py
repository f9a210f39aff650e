"""The trainer as the notebook uses it: schedule, optimizer groups, history, checkpoints, exact resume, NaN."""

import json
import math

import matplotlib
import pytest
import torch

from gptbook.checkpoint import load_checkpoint, model_from_checkpoint, param_digest, save_checkpoint
from gptbook.cli import train_main as main
from gptbook.model import GPT, GPTConfig
from gptbook.train import TrainConfig, Trainer, TrainingDiverged, configure_optimizer, get_lr, train

matplotlib.use("Agg")


# a model small enough that a step takes milliseconds (the 50257-word vocabulary still dominates)
TINY = dict(block_size=16, n_layer=1, n_head=2, n_embd=32, batch_size=4, eval_iters=2, lr=1e-2, warmup_iters=2)


def tiny_argv(data, out_dir, **kw):
    flags = {**TINY, "max_new_tokens": 0, **kw}
    return [f"--data={data}", f"--out_dir={out_dir}"] + [f"--{k}={v}" for k, v in flags.items()]


def test_lr_warmup_then_cosine_to_min_lr_then_constant():
    cfg = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_iters=10, lr_decay_iters=100, max_iters=150)
    lrs = [get_lr(s, cfg) for s in range(150)]
    assert lrs[0] == pytest.approx(1e-3 / 11)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11], strict=True))  # warmup rises ...
    assert lrs[10] == pytest.approx(1e-3)  # ... to the peak
    assert all(a >= b for a, b in zip(lrs[10:100], lrs[11:101], strict=True))  # then only falls
    assert lrs[55] == pytest.approx((1e-3 + 1e-4) / 2)  # cosine: halfway in time = halfway in value
    assert lrs[100:] == [1e-4] * 50


def test_schedule_does_not_depend_on_max_iters():
    short, long = TrainConfig(max_iters=30), TrainConfig(max_iters=60)
    assert [get_lr(s, short) for s in range(30)] == [get_lr(s, long) for s in range(30)]
    cfg = TrainConfig()
    assert get_lr(cfg.max_iters - 1, cfg) == pytest.approx(cfg.min_lr, rel=1e-3)  # the default run ends decayed


def test_weight_decay_on_matrices_only_and_the_tied_embedding_once():
    model = GPT(GPTConfig(block_size=16, n_layer=2, n_head=2, n_embd=32))
    opt = configure_optimizer(model, weight_decay=0.1, lr=1e-3, betas=(0.9, 0.99))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decay["params"])
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    wte, wpe = model.transformer.wte.weight, model.transformer.wpe.weight
    assert {id(wte), id(wpe)} <= ids(no_decay["params"]) and not {id(wte), id(wpe)} & ids(decay["params"])
    assert id(model.transformer.h[0].attn.c_attn.weight) in ids(decay["params"])
    assert id(model.transformer.h[0].ln_1.weight) in ids(no_decay["params"])
    n = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n == model.num_params()  # every parameter once: lm_head is wte, not a second copy
    assert len(ids(decay["params"]) | ids(no_decay["params"])) == len(decay["params"]) + len(no_decay["params"])


def test_train_logs_history_and_checkpoint(verdict_path, tmp_path):
    lines = []
    cfg = TrainConfig(data=str(verdict_path), out_dir=str(tmp_path), max_iters=20, eval_interval=10, **TINY)
    model, history = train(cfg, log=lines.append, progress=False)
    assert [h["step"] for h in history] == list(range(21))
    evals = [h for h in history if h["val_loss"] is not None]
    assert [h["step"] for h in evals] == [0, 10, 20]
    assert evals[0]["val_loss"] == pytest.approx(math.log(50257), abs=0.3)  # uniform guess at init
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 1.0  # it learns
    assert evals[-1]["ppl"] == pytest.approx(math.exp(evals[-1]["val_loss"]))
    for h in history[1:]:
        assert h["lr"] > 0 and math.isfinite(h["loss"]) and h["grad_norm"] > 0 and h["tokens_per_s"] > 0
    assert len(lines) == 5 and lines[1].startswith("step  0/20 | train 10.")  # start, 3 evaluations, done
    assert not any("tokens/s" in line for line in lines)  # no timings: notebook output stays deterministic

    ckpt = load_checkpoint(tmp_path / "ckpt.pt")
    assert ckpt["step"] == 20 and ckpt["config"]["max_iters"] == 20
    assert ckpt["history"] == history == json.loads((tmp_path / "history.json").read_text())
    assert ckpt["best_val_loss"] == min(h["val_loss"] for h in evals)
    assert param_digest(model_from_checkpoint(ckpt)) == param_digest(model)
    assert not list(tmp_path.glob("*.tmp"))

    from gptbook.plotting import plot_losses

    ax = plot_losses(history)
    assert len(ax.lines) == 2 and list(ax.lines[1].get_xdata()) == [0, 10, 20]


def test_train_accepts_a_model_built_elsewhere(verdict_path):
    model = GPT(GPTConfig(block_size=16, n_layer=1, n_head=2, n_embd=32))
    cfg = TrainConfig(data=str(verdict_path), out_dir=None, max_iters=3, eval_interval=3, eval_iters=1, batch_size=2)
    trained, history = train(cfg, model=model, log=None, progress=False)
    assert trained is model and history[-1]["step"] == 3


def test_grad_accumulation_equals_one_big_batch(verdict_path):
    common = dict(data=str(verdict_path), out_dir=None, max_iters=3, eval_interval=3, eval_iters=1, dropout=0.0)
    common.update({k: v for k, v in TINY.items() if k not in ("batch_size", "eval_iters")})
    _, big = train(TrainConfig(**common, batch_size=4), log=None, progress=False)
    _, acc = train(TrainConfig(**common, batch_size=2, grad_accum_steps=2), log=None, progress=False)
    # the same 4 windows (two draws of 2 = one draw of 4), the same mean loss and gradient, up to rounding
    # (not the parameters: Adam turns rounding noise in near-zero gradients, such as the key bias's, into steps)
    for a, b in zip(big[1:], acc[1:], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)


def test_chunked_loss_trains_like_the_plain_loss(verdict_path, tmp_path):
    """--chunked_loss: the same losses, gradient norms and evaluations as the plain path, up to float rounding."""
    common = dict(data=str(verdict_path), max_iters=6, eval_interval=3, **TINY)
    _, plain = train(TrainConfig(**common, out_dir=None), log=None, progress=False)
    model, fast = train(TrainConfig(**common, out_dir=tmp_path, chunked_loss=True), log=None, progress=False)
    assert model.config.chunked_loss
    for a, b in zip(plain, fast, strict=True):
        for key in ("loss", "grad_norm", "val_loss"):  # None where not measured (step 0 has no training loss)
            assert (a[key] is None and b[key] is None) or a[key] == pytest.approx(b[key], rel=1e-4), (a["step"], key)
    # a choice about speed, not the weights: a checkpoint trained one way resumes the other way when asked
    assert main(["--resume", f"--out_dir={tmp_path}", "--max_iters=8", "--max_new_tokens=0", "--no-chunked_loss"]) == 0
    ckpt = load_checkpoint(tmp_path / "ckpt.pt")
    assert ckpt["step"] == 8 and not ckpt["config"]["chunked_loss"] and not ckpt["model_config"]["chunked_loss"]


def test_resume_is_bit_exact(verdict_path, tmp_path):
    """30 steps, then --resume to 60 = 60 steps in one go: same batches, dropout masks, Adam state and schedule."""
    assert main(tiny_argv(verdict_path, tmp_path / "two", max_iters=30, eval_interval=20)) == 0
    assert main(["--resume", f"--out_dir={tmp_path / 'two'}", "--max_iters=60", "--max_new_tokens=0"]) == 0
    assert main(tiny_argv(verdict_path, tmp_path / "one", max_iters=60, eval_interval=20)) == 0
    two, one = load_checkpoint(tmp_path / "two" / "ckpt.pt"), load_checkpoint(tmp_path / "one" / "ckpt.pt")
    assert two["step"] == one["step"] == 60
    for name, p in one["model"].items():
        assert torch.equal(p, two["model"][name]), name
    assert [h["loss"] for h in two["history"]] == [h["loss"] for h in one["history"]]
    for name in ("data", "dropout"):
        assert torch.equal(two["rng"][name], one["rng"][name]), name


def test_nan_stops_and_keeps_the_last_good_checkpoint(verdict_path, tmp_path, capsys):
    assert main(tiny_argv(verdict_path, tmp_path, max_iters=10, eval_interval=10)) == 0
    good = (tmp_path / "ckpt.pt").read_bytes()
    capsys.readouterr()
    # lr 1e9 with no clipping blows the weights up within a step or two (min_lr too: step 10 is past the decay)
    argv = ["--resume", f"--out_dir={tmp_path}", "--max_iters=30", "--lr=1e9", "--min_lr=1e9", "--grad_clip=0"]
    assert main([*argv, "--max_new_tokens=0"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: loss is ") and "diverged" in err and "(step 10), is untouched" in err
    assert "\n" not in err and "Traceback" not in err
    assert (tmp_path / "ckpt.pt").read_bytes() == good


def test_nan_is_caught_even_before_the_first_checkpoint(verdict_path, monkeypatch):
    real = GPT.forward

    def poisoned(self, idx, targets=None, **kw):
        logits, loss = real(self, idx, targets, **kw)
        return logits, (loss * float("nan") if self.training and loss is not None else loss)

    monkeypatch.setattr(GPT, "forward", poisoned)
    cfg = TrainConfig(data=str(verdict_path), out_dir=None, max_iters=5, eval_interval=5, **TINY)
    with pytest.raises(TrainingDiverged, match="loss is nan at step 1.*no checkpoint was written"):
        train(cfg, log=None, progress=False)


def test_bfloat16_autocast_on_cpu(verdict_path):
    cfg = TrainConfig(data=str(verdict_path), out_dir=None, max_iters=3, eval_interval=3, dtype="bfloat16", **TINY)
    model, history = train(cfg, log=None, progress=False)
    assert next(model.parameters()).dtype == torch.float32  # autocast: float32 weights, bfloat16 matmuls
    assert history[-1]["val_loss"] < history[0]["val_loss"]


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"step": 1, "history": []})
    before = path.read_bytes()

    def crash(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"step": 2, "history": []})
    assert path.read_bytes() == before


def test_the_trainer_steps_one_by_one_and_leaves_the_global_rng_alone(verdict_path):
    """What a notebook can call: a Trainer, its train_step and evaluate; train() = the loop around them."""
    cfg = TrainConfig(data=str(verdict_path), out_dir=None, max_iters=3, eval_interval=3, dropout=0.1, **TINY)
    rng = torch.get_rng_state()
    t = Trainer(cfg)
    entries = [t.train_step()[0] for _ in range(3)]
    assert t.step == 3 and [e["step"] for e in entries] == [1, 2, 3]
    assert t.evaluate(entries[-1])["val_loss"] is not None
    _, history = train(cfg, log=None, progress=False)
    assert [h["loss"] for h in history[1:]] == [e["loss"] for e in entries]  # the same steps, dropout masks included
    assert torch.equal(torch.get_rng_state(), rng)  # initial weights and dropout come from the trainer's own seeds


def test_progress_bar_shows_in_a_notebook_and_hides_in_a_pipe(verdict_path, monkeypatch, capsys):
    """tqdm hides itself where stderr is no terminal; a notebook kernel's stderr is none, yet shows a bar."""
    import io
    import sys

    cfg = TrainConfig(data=str(verdict_path), max_iters=3, eval_interval=3, **TINY)
    train(cfg, log=None)  # pytest captures stderr: no terminal, no bar
    assert "train:" not in capsys.readouterr().err
    kernel_stderr = type("OutStream", (io.StringIO,), {"__module__": "ipykernel.iostream"})()
    monkeypatch.setattr(sys, "stderr", kernel_stderr)  # as inside a notebook
    train(cfg, log=None)
    assert "train: 100%" in kernel_stderr.getvalue()


def test_a_sample_at_each_evaluation_goes_into_the_history(verdict_path):
    seen = []

    def sample(model):
        seen.append(model.training)
        return f"text {len(seen)}"

    lines = []
    cfg = TrainConfig(data=str(verdict_path), max_iters=4, eval_interval=2, dropout=0.1, **TINY)
    model, history = train(cfg, log=lines.append, progress=False, sample=sample)
    assert [h.get("sample") for h in history if h["val_loss"] is not None] == ["text 1", "text 2", "text 3"]
    assert seen == [False] * 3 and model.training  # sampled in eval mode (no dropout), training resumed after
    assert "--- sample at step 2 ---\ntext 2" in lines
