"""Speed, side by side: `python -m gptbook.bench train [--n_layer ... any training flag]`.

Not a test: it prints numbers for this machine. One subcommand per thing to time (today: train).
"""

import resource
import statistics
import sys

import torch

from gptbook.train import CliParser, TrainConfig, add_config_args, run_cli, train

# flags that make no sense for a timing run
NOT_FOR_BENCH = ("out_dir", "resume", "max_iters", "eval_interval", "eval_iters", "print_digest")
NOT_FOR_BENCH += ("prompt", "max_new_tokens", "temperature", "top_k", "top_p", "min_p")


def peak_rss_mib() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


def bench_train(args) -> dict:
    """Run the real trainer for warmup + steps steps (no checkpoints); median speed of the steps after warm-up."""
    kw = {k: v for k, v in vars(args).items() if k not in ("cmd", "steps", "warmup", "threads")}
    if args.threads:
        torch.set_num_threads(args.threads)
    n = args.warmup + args.steps  # evaluations only at the start and the end, outside the timed steps:
    cfg = TrainConfig(**kw, out_dir=None, max_iters=n, eval_interval=n, eval_iters=1, max_new_tokens=0)
    model, history = train(cfg, log=None, progress=False)
    steps = [h for h in history if h["tokens_per_s"] is not None][args.warmup :]
    tokens_per_step = cfg.batch_size * cfg.block_size * cfg.grad_accum_steps
    tps = statistics.median(h["tokens_per_s"] for h in steps)
    result = dict(
        params=model.num_params(),
        tokens_per_step=tokens_per_step,
        tokens_per_s=tps,
        ms_per_step=1000 * tokens_per_step / tps,
        peak_rss_mib=peak_rss_mib(),
        device=str(next(model.parameters()).device),
        threads=torch.get_num_threads(),
    )
    if torch.cuda.is_available() and result["device"].startswith("cuda"):
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print(
        f"train | {result['params'] / 1e6:.2f}M params | L{cfg.n_layer} H{cfg.n_head} C{cfg.n_embd} "
        f"B{cfg.batch_size} T{cfg.block_size} x{cfg.grad_accum_steps} | {result['device']} {cfg.dtype} "
        f"{result['threads']} threads{' compiled' if cfg.compile else ''}"
    )
    mem = f"peak RSS {result['peak_rss_mib']:.0f} MiB"
    if "peak_cuda_mib" in result:
        mem += f", peak CUDA {result['peak_cuda_mib']:.0f} MiB"
    print(f"  {tps:,.0f} tokens/s | {result['ms_per_step']:.1f} ms/step (median of {len(steps)}) | {mem}")
    return result


def build_parser():
    p = CliParser(prog="python -m gptbook.bench", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=CliParser)
    t = sub.add_parser("train", help="tokens/s, ms/step and peak memory of training steps for a config")
    t.add_argument("--steps", type=int, default=20, help="timed steps (default: 20)")
    t.add_argument("--warmup", type=int, default=3, help="untimed steps first (default: 3)")
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    add_config_args(t, exclude=NOT_FOR_BENCH, suppress=False)
    return p


def _main(argv):
    args = build_parser().parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or (args.threads is not None and args.threads < 1):
        raise ValueError("--steps and --threads must be >= 1, --warmup >= 0")
    {"train": bench_train}[args.cmd](args)


def main(argv=None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
