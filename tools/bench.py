"""Speed, side by side with peers: `python tools/bench.py {train,generate,book} [--help]`.

Not a test: it prints numbers for this machine (CPU, float32). The peers are optional: HuggingFace
transformers (`pip install .[bench]`) and LLMs-from-scratch (`pip install --no-deps llms-from-scratch==1.0.19`);
a missing one is named and skipped.

All models run in one process, on the same batches, in alternating order round after round: a busy machine
slows them all alike, so compare the ratios, not the absolute numbers.
"""

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from gptbook.checkpoint import one_line
from gptbook.cli import CliParser, run_cli
from gptbook.device import keep_freed_memory
from gptbook.hf import to_hf
from gptbook.model import GPT, GPTConfig
from gptbook.sampling import GREEDY, generate
from gptbook.tokenizer import VOCAB_SIZE
from gptbook.train import configure_optimizer

VOCAB = VOCAB_SIZE
ROOT = Path(__file__).resolve().parents[1]
QUICK = dict(n_layer=2, n_head=4, n_embd=128)  # the README's quick-start model
# generate: shape -> (model, timed rounds of each decoder); GPT-2 small decodes slowly without a cache: one round
SHAPES = {
    "quick": (dict(QUICK, block_size=256), 3),
    "gpt2-small": (dict(n_layer=12, n_head=12, n_embd=768, block_size=1024), 1),
}
PEERS = {"hf": "HF transformers", "lfs": "LLMs-from-scratch"}
INSTALL = {"hf": "pip install .[bench]", "lfs": "pip install --no-deps llms-from-scratch==1.0.19"}
MODELS = {"gptbook": "gptbook", "gptbook-fast": "gptbook --chunked_loss", **PEERS}


# ---------------------------------------------------------------- measuring and printing


def peak_rss_mib() -> float:
    """Peak resident memory of this process. Linux: VmHWM, which (unlike ru_maxrss) starts afresh at exec."""
    try:
        return int(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0]) / 2**10  # kB
    except (OSError, IndexError, ValueError):
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB elsewhere


def timed(fn, *args):
    """(result, wall seconds, CPU seconds of this process, minor page faults) of one call.

    A minor page fault is a fresh page of memory mapped in (and zeroed) by the kernel.
    """
    f0, c0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.process_time(), time.perf_counter()
    out = fn(*args)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return out, wall, cpu, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0


def matmul_gflops(n: int = 1024) -> float:
    """GFLOP/s of one plain float32 (n, n) @ (n, n) matmul: what this machine's BLAS reaches right now."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    return 2 * n**3 / timed(torch.mm, a, b)[1] / 1e9


def header(what: str) -> str:
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    n = torch.get_num_threads()
    return f"{what} | torch {torch.__version__} | {n} thread{'s' * (n > 1)} | {os.cpu_count()} CPUs | load {load}"


def print_table(rows: list[dict], columns: list[tuple[str, str, str]]):
    """rows: dicts; columns: (key, title, format such as '{:,.0f}'). A missing value prints as '-'."""
    cells = [[title for _, title, _ in columns]]
    cells += [[fmt.format(r[k]) if r.get(k) is not None else "-" for k, _, fmt in columns] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    for i, line in enumerate(cells):
        padded = [c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(line, widths, strict=True))]
        print("  " + "  ".join(padded))
        if i == 0:
            print("  " + "  ".join("-" * w for w in widths))


def median(xs):
    return statistics.median(xs) if xs else None


# ---------------------------------------------------------------- peers (optional), with our weights copied in


def peer_installed(name: str) -> bool:
    try:
        if name == "hf":
            import transformers  # noqa: F401
        else:
            import llms_from_scratch.ch04  # noqa: F401
    except ImportError:
        print(f"  note: {PEERS[name]} is not installed ({INSTALL[name]}): skipped")
        return False
    return True


def hf_from_gpt(model: GPT):
    """HuggingFace's GPT2LMHeadModel with our model's weights, generating as ours does: never stopping early."""
    hf = to_hf(model)
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 0
    return hf


def lfs_from_gpt(model: GPT, kv_cache: bool = False):
    """LLMs-from-scratch's GPTModel (chapter 4, or its KV-cache variant) with our model's weights.

    Its q, k and v are three Linear layers; its LM head is not tied to the token embedding, so it gets a copy.
    """
    from llms_from_scratch import ch04
    from llms_from_scratch.kv_cache import gpt2

    c, ours = model.config, model.state_dict()
    cfg = dict(vocab_size=c.vocab_size, context_length=c.block_size, emb_dim=c.n_embd, n_heads=c.n_head)
    lfs = (gpt2 if kv_cache else ch04).GPTModel(dict(cfg, n_layers=c.n_layer, drop_rate=c.dropout, qkv_bias=c.bias))
    sd = {
        "tok_emb.weight": ours["transformer.wte.weight"],
        "pos_emb.weight": ours["transformer.wpe.weight"],
        "out_head.weight": ours["lm_head.weight"].clone(),
        "final_norm.scale": ours["transformer.ln_f.weight"],
        "final_norm.shift": ours["transformer.ln_f.bias"],
    }
    for i in range(c.n_layer):
        h, b = f"transformer.h.{i}.", f"trf_blocks.{i}."
        for p in ("weight", "bias"):
            sd[b + "att.W_query." + p], sd[b + "att.W_key." + p], sd[b + "att.W_value." + p] = ours[
                h + "attn.c_attn." + p
            ].split(c.n_embd)
            sd[b + "att.out_proj." + p] = ours[h + "attn.c_proj." + p]
            sd[b + "ff.layers.0." + p] = ours[h + "mlp.c_fc." + p]
            sd[b + "ff.layers.2." + p] = ours[h + "mlp.c_proj." + p]
        for n in ("1", "2"):
            sd[b + f"norm{n}.scale"], sd[b + f"norm{n}.shift"] = ours[h + f"ln_{n}.weight"], ours[h + f"ln_{n}.bias"]
    missing, unexpected = lfs.load_state_dict(sd, strict=False)
    assert not unexpected and all(k.endswith(".att.mask") for k in missing), (missing, unexpected)  # mask: a buffer
    return lfs


# ---------------------------------------------------------------- train


def build_trainees(args, names) -> tuple[int, dict]:
    """Our parameter count, and name -> (model, loss function) for each model asked for and installed.

    Every model starts from the same weights: gptbook's, copied into the peers.
    """
    cfg = dict(vocab_size=VOCAB, block_size=args.block_size, n_layer=args.n_layer, n_head=args.n_head)
    cfg.update(n_embd=args.n_embd, dropout=0.0)
    torch.manual_seed(1337)
    ours = GPT(GPTConfig(**cfg))
    out = {}
    for name in names:
        if name in ("gptbook", "gptbook-fast"):
            model = GPT(GPTConfig(**cfg, chunked_loss=name == "gptbook-fast"))
            model.load_state_dict(ours.state_dict())
            out[name] = (model, lambda m, x, y: m(x, y)[1])
        elif name == "hf" and peer_installed(name):
            out[name] = (hf_from_gpt(ours), lambda m, x, y: F.cross_entropy(m(x).logits.flatten(0, 1), y.flatten()))
        elif name == "lfs" and peer_installed(name):
            out[name] = (lfs_from_gpt(ours), lambda m, x, y: F.cross_entropy(m(x).flatten(0, 1), y.flatten()))
    return ours.num_params(), out


def make_step(model, loss_fn):
    """One training step, the same for every model, as gptbook.train does it: forward, backward, clip, AdamW."""
    model.train()
    opt = configure_optimizer(model, weight_decay=0.1, lr=1e-3)  # fused AdamW where this torch has it

    def step(x, y):
        loss = loss_fn(model, x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return step


def make_eval(model, loss_fn):
    """The loss of a batch as an evaluation computes it: eval mode, no gradients."""

    @torch.no_grad()
    def evaluate(x, y):
        model.eval()
        try:
            return loss_fn(model, x, y).item()
        finally:
            model.train()

    return evaluate


def bench_train(args) -> list[dict]:
    names = args.models.split(",")
    if args.rss_child:  # one model alone in a fresh process: the peak RSS is its own
        model, loss_fn = build_trainees(args, names)[1][names[0]]
        rss_built = peak_rss_mib()
        step, g = make_step(model, loss_fn), torch.Generator().manual_seed(0)
        for _ in range(args.warmup + args.steps):
            step(*torch.randint(0, VOCAB, (2, args.batch_size, args.block_size), generator=g))
        print(json.dumps(dict(rss=peak_rss_mib(), rss_step=peak_rss_mib() - rss_built)))
        return []
    tokens = args.batch_size * args.block_size
    print(header(f"train | L{args.n_layer} H{args.n_head} C{args.n_embd} B{args.batch_size} T{args.block_size}"))
    n_params, trainees = build_trainees(args, names)
    if not trainees:
        raise ValueError("none of --models is installed")
    malloc = (
        "glibc defaults" if args.malloc == "default" else "keep freed memory (as python -m gptbook.train does), for all"
    )
    print(f"  {n_params / 1e6:.2f}M parameters, vocab {VOCAB}, {tokens} tokens/step, float32; malloc: {malloc}")
    steps = {name: make_step(model, fn) for name, (model, fn) in trainees.items()}
    evals = {name: make_eval(model, fn) for name, (model, fn) in trainees.items()}
    stats = {name: dict(wall=[], cpu=[], faults=[], loss=[], eval=[]) for name in steps}
    matmul, g = [], torch.Generator().manual_seed(0)
    for r in range(args.warmup + args.steps):
        x, y = torch.randint(0, VOCAB, (2, args.batch_size, args.block_size), generator=g)  # one batch for all
        order = list(steps)[r % len(steps) :] + list(steps)[: r % len(steps)]  # each model goes first in turn
        for name in order:
            loss, wall, cpu, faults = timed(steps[name], x, y)
            stats[name]["loss"].append(loss)
            if r >= args.warmup:
                for key, value in (
                    ("wall", wall),
                    ("cpu", cpu),
                    ("faults", faults),
                    ("eval", timed(evals[name], x, y)[1]),
                ):
                    stats[name][key].append(value)
        if r >= args.warmup:
            matmul.append(matmul_gflops())
    matmul = median(matmul)
    flop = 6 * n_params * tokens  # per step: 2 FLOPs (multiply, add) x 3 (forward, two in backward) per weight
    rows, first = [], next(iter(stats.values()))["loss"]
    for name, s in stats.items():
        wall = median(s["wall"])
        row = dict(model=MODELS[name], tokens_per_s=tokens / wall, ms=1000 * wall, cpu_ms=1000 * median(s["cpu"]))
        row.update(faults=median(s["faults"]), gflops=flop / wall / 1e9, share=100 * flop / wall / 1e9 / matmul)
        row["dloss"] = max(abs(a - b) for a, b in zip(s["loss"], first, strict=True))
        row["eval_tokens_per_s"] = tokens / median(s["eval"])
        if not args.no_rss:
            row.update(rss_child(args, name))
        rows.append(row)
    peer_rows = [row for name, row in zip(stats, rows, strict=True) if name in PEERS]
    best = max(peer_rows, key=lambda r: r["tokens_per_s"], default=None)
    for row in rows:
        row["vs_peer"] = row["tokens_per_s"] / best["tokens_per_s"] if best else None
    columns = [("model", "model", "{}"), ("tokens_per_s", "tokens/s", "{:,.0f}"), ("ms", "ms/step", "{:.0f}")]
    columns += [("cpu_ms", "CPU ms/step", "{:.0f}"), ("faults", "page faults/step", "{:,.0f}")]
    columns += [("gflops", "GFLOP/s", "{:.1f}"), ("share", "% of matmul", "{:.0f}%")]
    columns += [("rss", "peak RSS MiB", "{:,.0f}"), ("rss_step", "step MiB", "{:,.0f}")]
    columns += [("vs_peer", "x fastest peer", "{:.2f}x"), ("dloss", "max |loss diff|", "{:.0e}")]
    columns += [("eval_tokens_per_s", "eval tokens/s", "{:,.0f}")]
    print_table(rows, columns)
    print(
        f"  medians of {args.steps} round{'s' * (args.steps > 1)} after {args.warmup} warm-up; float32 matmul: "
        f"{matmul:.0f} GFLOP/s in the same rounds; GFLOP/s = 6 x {n_params / 1e6:.2f}M params x {tokens} tokens / step"
    )
    if not args.no_rss:
        print("  peak RSS: each model alone in a fresh process; step MiB: its part above the RSS of the built model")
    print(f"  max |loss diff|: vs {rows[0]['model']}, same batches (LLMs-from-scratch's untied LM head drifts apart)")
    print("  eval: the loss of the same batch under torch.no_grad() in eval mode, as gptbook.train evaluates")
    return rows


def rss_child(args, name) -> dict:
    """rss (peak RSS, MiB) and rss_step (its part above the built model) of one model in a fresh process."""
    argv = [sys.executable, __file__, "train", "--rss_child", f"--models={name}", "--steps=2"]
    argv += ["--warmup=0", f"--malloc={args.malloc}"]
    argv += [f"--{k}={getattr(args, k)}" for k in ("n_layer", "n_head", "n_embd", "block_size", "batch_size")]
    argv += [f"--threads={torch.get_num_threads()}"]
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode:
        print(f"  note: peak RSS of {name} not measured: {r.stderr.strip()[-300:]}")
        return {}
    return json.loads(r.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- generate


def lfs_generate_cached(model, idx, max_new_tokens):
    """Greedy decoding with LLMs-from-scratch's KV-cache GPTModel: the loop of its kv_cache.generate."""
    from llms_from_scratch.kv_cache.utils import KVCache

    model.eval()
    with torch.no_grad():
        cache = KVCache(n_layers=len(model.trf_blocks))
        model.current_pos = 0
        logits = model(idx, use_cache=True, cache=cache)
        for _ in range(max_new_tokens):
            nxt = logits[:, -1].argmax(dim=-1, keepdim=True)
            idx = torch.cat([idx, nxt], dim=1)
            logits = model(nxt, use_cache=True, cache=cache)
    return idx


def decoders(model, peers, cached_only=False) -> dict:
    """name -> function(prompt, n): the prompt followed by n greedy tokens."""
    out = {
        "gptbook, KV cache": lambda p, n: generate(model, p, n, GREEDY),
        "gptbook, no cache": lambda p, n: generate(model, p, n, GREEDY, use_kv_cache=False),
    }
    if "hf" in peers:
        hf = hf_from_gpt(model).eval()
        for cache in (True, False):
            out[f"HF generate, {'' if cache else 'no '}cache"] = lambda p, n, c=cache: hf.generate(
                p, attention_mask=torch.ones_like(p), max_new_tokens=n, do_sample=False, use_cache=c
            )
    if "lfs" in peers:
        from llms_from_scratch.ch04 import generate_text_simple

        lfs, lfs_kv = lfs_from_gpt(model).eval(), lfs_from_gpt(model, kv_cache=True)
        out["LLMs-from-scratch, KV cache"] = lambda p, n: lfs_generate_cached(lfs_kv, p, n)
        out["LLMs-from-scratch, no cache"] = lambda p, n: generate_text_simple(lfs, p, n, model.config.block_size)
    return {name: fn for name, fn in out.items() if not (cached_only and "no cache" in name)}


def bench_generate(args) -> dict:
    peers = [p for p in args.peers.split(",") if p and peer_installed(p)]
    results = {}
    for shape in args.shapes.split(","):
        c, rounds = SHAPES[shape]
        rounds, n = args.rounds or rounds, args.new_tokens
        print(header(f"generate | {shape}: L{c['n_layer']} H{c['n_head']} C{c['n_embd']} block {c['block_size']}"))
        print(f"  random weights, {args.prompt_tokens}-token prompt + {n} greedy tokens, batch 1, float32")
        if args.prompt_tokens + n > c["block_size"]:
            raise ValueError(f"--prompt_tokens + --new_tokens must be <= block_size {c['block_size']}")
        torch.manual_seed(1337)
        model = GPT(GPTConfig(vocab_size=VOCAB, **c)).eval()
        prompt = torch.randint(0, VOCAB, (1, args.prompt_tokens), generator=torch.Generator().manual_seed(0))
        decs = decoders(model, peers, args.cached_only)
        for name, dec in list(decs.items()):  # warm-up
            try:
                dec(prompt, min(n, 4))
            except Exception as e:  # a peer's bug: say so and go on without it
                print(f"  note: {name} fails ({type(e).__name__}: {one_line(e, 100)}): skipped")
                del decs[name]
        times, tokens = {name: [] for name in decs}, {}
        for r in range(rounds):
            for name in list(decs)[r % len(decs) :] + list(decs)[: r % len(decs)]:  # each goes first in turn
                tokens[name], wall, cpu, _ = timed(decs[name], prompt, n)
                times[name].append((wall, cpu))
        ours = tokens["gptbook, KV cache"]
        for name, t in tokens.items():
            if not torch.equal(t, ours):
                at = (t[0] != ours[0]).nonzero()[0].item() - prompt.size(1)
                raise AssertionError(f"{name}: greedy tokens differ from gptbook's from new token {at} on")
        rows = []
        for name, ts in times.items():
            wall, cpu = median([w for w, _ in ts]), median([c for _, c in ts])
            rows.append(dict(decoder=name, tokens_per_s=n / wall, ms=1000 * wall / n, cpu_ms=1000 * cpu / n))
        speed = {r["decoder"]: r["tokens_per_s"] for r in rows}
        for r in rows:
            r["vs_ours"] = r["tokens_per_s"] / speed["gptbook, KV cache"]
            r["vs_hf"] = r["tokens_per_s"] / speed["HF generate, cache"] if "HF generate, cache" in speed else None
        columns = [("decoder", "decoder", "{}"), ("tokens_per_s", "tokens/s", "{:,.1f}"), ("ms", "ms/token", "{:.1f}")]
        columns += [("cpu_ms", "CPU ms/token", "{:.1f}"), ("vs_hf", "x HF cache", "{:.2f}x")]
        columns += [("vs_ours", "x gptbook cache", "{:.2f}x")]
        print_table(rows, columns)
        print(f"  medians of {rounds} round{'s' * (rounds > 1)}; every decoder produced the same {n} greedy tokens")
        results[shape] = rows
    return results


# ---------------------------------------------------------------- book


def bench_book(args) -> list[dict]:
    """Run each notebook from a fresh kernel, on a copy in a temporary folder: the repository is left untouched."""
    import nbformat
    from nbclient import NotebookClient

    paths = [Path(p).resolve() for p in args.notebooks] or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    print(header(f"book | {len(paths)} notebooks, each from a fresh kernel, on copies"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "notebooks"
        shutil.copytree(ROOT / "notebooks", work) if (ROOT / "notebooks").is_dir() else work.mkdir()
        for item in ROOT.iterdir():  # ../the-verdict.txt, ../requirements.txt, ../gptbook as the notebooks see them
            if item.name != "notebooks":
                (Path(tmp) / item.name).symlink_to(item)
        for path in paths:
            nb = nbformat.read(path, as_version=4)
            cwd = {"metadata": {"path": str(work)}}  # the kernel's working directory
            client = NotebookClient(nb, timeout=args.timeout, kernel_name="python3", resources=cwd)
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            _, wall, _, _ = timed(client.execute)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the kernel, once it has exited
            cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
            rows.append(dict(notebook=path.name, wall=wall, cpu=cpu))
            print(f"  {path.name}: {wall:.1f} s", flush=True)
    rows.append(dict(notebook="total", wall=sum(r["wall"] for r in rows), cpu=sum(r["cpu"] for r in rows)))
    print_table(rows, [("notebook", "notebook", "{}"), ("wall", "seconds", "{:.1f}"), ("cpu", "CPU seconds", "{:.1f}")])
    print("  seconds: wall clock, the kernel's start included; CPU seconds: the kernel's user + system time")
    return rows


# ---------------------------------------------------------------- command line


def build_parser():
    p = CliParser(prog="python tools/bench.py", description=__doc__.splitlines()[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=CliParser)

    t = sub.add_parser("train", parents=[common], help="training steps side by side: speed, page faults, memory")
    t.add_argument("--n_layer", type=int, default=QUICK["n_layer"], help="(default: %(default)s)")
    t.add_argument("--n_head", type=int, default=QUICK["n_head"], help="(default: %(default)s)")
    t.add_argument("--n_embd", type=int, default=QUICK["n_embd"], help="(default: %(default)s)")
    t.add_argument("--block_size", type=int, default=64, help="tokens per sequence (default: %(default)s)")
    t.add_argument("--batch_size", type=int, default=8, help="sequences per step (default: %(default)s)")
    t.add_argument("--steps", type=int, default=6, help="timed rounds, a step of each model (default: %(default)s)")
    t.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default: %(default)s)")
    t.add_argument("--models", default=",".join(MODELS), help="comma-separated (default: %(default)s)")
    t.add_argument(
        "--malloc",
        choices=("keep", "default"),
        default="keep",
        help="keep: glibc keeps freed memory for reuse, as python -m gptbook.train sets it (the setting is per "
        "process, so every model gets it); default: glibc's defaults (default: %(default)s)",
    )
    t.add_argument("--no_rss", action="store_true", help="skip peak RSS (a few steps per model in a fresh process)")
    t.add_argument("--rss_child", action="store_true", help=argparse.SUPPRESS)

    g = sub.add_parser("generate", parents=[common], help="greedy decoding with and without KV cache, vs HF")
    g.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated, of: %(default)s")
    g.add_argument("--new_tokens", type=int, default=200, help="(default: %(default)s)")
    g.add_argument("--prompt_tokens", type=int, default=8, help="(default: %(default)s)")
    g.add_argument("--rounds", type=int, default=None, help="timed runs per decoder (default: 3, 1 for gpt2-small)")
    g.add_argument("--peers", default="hf", help="comma-separated: hf, lfs, or '' (default: %(default)s)")
    g.add_argument("--cached_only", action="store_true", help="skip the decoders without a KV cache (the slow ones)")

    b = sub.add_parser("book", parents=[common], help="execution time of each notebook and the total")
    b.add_argument("notebooks", nargs="*", help="notebooks to run (default: notebooks/NN_*.ipynb)")
    b.add_argument("--timeout", type=int, default=600, help="seconds per cell (default: %(default)s)")
    return p


def _main(argv):
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.cmd == "train":
        if args.steps < 1 or args.warmup < 0:
            raise ValueError("--steps must be >= 1 and --warmup >= 0")
        unknown = set(args.models.split(",")) - set(MODELS)
        if unknown:
            raise ValueError(f"--models: unknown {', '.join(sorted(unknown))} (choose from {', '.join(MODELS)})")
        if args.malloc == "keep":
            keep_freed_memory()
        bench_train(args)
    elif args.cmd == "generate":
        unknown = set(args.shapes.split(",")) - set(SHAPES) or set(filter(None, args.peers.split(","))) - set(PEERS)
        if unknown:
            raise ValueError(f"unknown --shapes or --peers: {', '.join(sorted(unknown))}")
        if (args.rounds is not None and args.rounds < 1) or args.new_tokens < 1 or args.prompt_tokens < 1:
            raise ValueError("--rounds, --new_tokens and --prompt_tokens must be >= 1")
        bench_generate(args)
    else:
        bench_book(args)


def main(argv=None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
