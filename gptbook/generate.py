"""Continue a prompt with a trained checkpoint: `python -m gptbook.generate --ckpt checkpoints/ckpt.pt --prompt ...`."""

import sys

from gptbook.sampling import check_sampling_args
from gptbook.train import (
    CliParser,
    load_checkpoint,
    model_from_checkpoint,
    prompt_ids,
    resolve_device,
    run_cli,
    sample_text,
)


def build_parser():
    p = CliParser(
        prog="python -m gptbook.generate",
        description="Sample text from a checkpoint written by gptbook.train (KV cache on). "
        "Set GPTBOOK_DEBUG=1 to see tracebacks instead of one-line errors.",
    )
    p.add_argument("--ckpt", default="checkpoints/ckpt.pt", help="checkpoint file (default: checkpoints/ckpt.pt)")
    p.add_argument("--prompt", default="I had always thought", help="text to continue (default: I had always thought)")
    p.add_argument("--max_new_tokens", type=int, default=100, help="tokens to generate (default: 100)")
    p.add_argument("--temperature", type=float, default=0.8, help="softmax temperature, 0 = greedy (default: 0.8)")
    p.add_argument("--top_k", type=int, default=None, help="sample among the k most likely tokens only (default: off)")
    p.add_argument("--top_p", type=float, default=None, help="nucleus sampling, p in (0, 1] (default: off)")
    p.add_argument(
        "--min_p", type=float, default=None, help="drop tokens below min_p x the top probability (default: off)"
    )
    p.add_argument("--num_samples", type=int, default=1, help="independent samples, one after another (default: 1)")
    p.add_argument("--seed", type=int, default=1337, help="seed of the sampler: same seed, same text (default: 1337)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"), help="default: auto")
    return p


def _main(argv):
    a = build_parser().parse_args(argv)
    check_sampling_args(a.temperature, a.top_k, a.top_p, a.min_p, a.max_new_tokens)
    if a.num_samples < 1:
        raise ValueError(f"--num_samples must be >= 1, got {a.num_samples}")
    device = resolve_device(a.device)
    model = model_from_checkpoint(load_checkpoint(a.ckpt)).to(device)
    ids = prompt_ids(a.prompt, model.config.block_size, note=lambda msg: print(msg, file=sys.stderr))
    for i in range(a.num_samples):
        if a.num_samples > 1:
            print(f"--- sample {i + 1} ---")
        print(sample_text(model, ids, a.max_new_tokens, a.temperature, a.top_k, a.top_p, a.min_p, a.seed + i))


def main(argv=None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
