"""The command lines: every flag documented, every bad input one line on stderr, Ctrl-C, torchrun, generate, bench."""

import dataclasses
import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gptbook import cli
from gptbook.checkpoint import load_checkpoint, lock_out_dir, model_from_checkpoint, param_digest
from gptbook.cli import generate_main, train_main
from gptbook.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
main = train_main
_spec = importlib.util.spec_from_file_location("bench", ROOT / "tools" / "bench.py")  # project tooling, not the package
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}  # see one_thread in conftest.py
TINY = dict(
    block_size=16, n_layer=1, n_head=2, n_embd=32, batch_size=4, eval_iters=2, max_new_tokens=0, lr=1e-2, warmup_iters=2
)


def tiny_argv(data, out_dir, **kw):
    flags = {**TINY, **kw}
    return [f"--data={data}", f"--out_dir={out_dir}"] + [f"--{k}={v}" for k, v in flags.items()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained for 10 steps: out_dir with ckpt.pt."""
    out = tmp_path_factory.mktemp("trained")
    assert main(tiny_argv(ROOT / "the-verdict.txt", out, max_iters=10, eval_interval=10)) == 0
    return out


def one_error_line(capsys, rc, *needles, code=2):
    """The run failed with `code`, and said why in exactly one line on stderr, naming each needle."""
    err = capsys.readouterr().err
    assert rc == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


def test_help_documents_every_flag(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for f in dataclasses.fields(TrainConfig):
        assert re.search(rf"--{f.name}\b", out), f.name
        help = f.metadata.get("help") or cli.MODEL_HELP[f.name]
        assert help.replace("%%", "%")[:20] in " ".join(out.split()), f.name
    assert generate_main(["--help"]) == 0
    out = capsys.readouterr().out
    for flag in ["ckpt", "prompt", "max_new_tokens", "temperature", "top_k", "top_p", "min_p", "seed", "device"]:
        assert f"--{flag}" in out


def test_missing_data_file_as_a_real_process(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "gptbook.train", f"--data={tmp_path / 'nope.txt'}", f"--out_dir={tmp_path}"],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=ROOT,
    )
    assert r.returncode == 2
    hint = "(`python -m gptbook.corpora` fetches the book's corpora)"
    assert r.stderr.strip() == f"error: data file not found: {tmp_path / 'nope.txt'} {hint}"
    assert not (tmp_path / "ckpt.pt").exists()
    # a corpus of the book, by name, not fetched yet (an empty data folder, run from elsewhere): the same hint
    env = {**ENV, "GPTBOOK_DATA": str(tmp_path)}
    r = subprocess.run(
        [sys.executable, "-m", "gptbook.train", "--data=shakespeare"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: {tmp_path / 'shakespeare.txt'} not found; {hint[1:-1]}"


def write(path, content):
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    return path


@pytest.mark.parametrize(
    "content, flags, needles",
    [
        ("", [], ["empty"]),
        (b"\xff\xfe\x00binary\x80", [], ["not UTF-8"]),
        ("Too short.", [], ["fewer than block_size + 1"]),
        (None, ["--block_size=1024"], ["validation split", "fewer than block_size + 1 = 1025"]),
        (None, ["--n_embd=130", "--n_head=4"], ["n_embd (130) must be divisible by n_head (4)"]),
        (None, ["--batch_size=0"], ["--batch_size must be >= 1, got 0"]),
        (None, ["--n_layer=-2"], ["n_layer must be >= 1"]),
        (None, ["--block_size=0"], ["block_size must be >= 1"]),
        (None, ["--vocab_size=100"], ["--vocab_size must be >= 50257"]),
        (None, ["--max_iters=-1"], ["--max_iters must be >= 0"]),
        (None, ["--dtype=float16", "--device=cpu"], ["float16 needs a CUDA GPU", "bfloat16"]),
        (None, ["--temperature=-1"], ["temperature must be 0 (greedy) or a finite number >= 1e-4"]),
        (None, ["--top_p=0"], ["top_p must be in (0, 1]"]),
        (None, ["--top_p=1.5"], ["top_p must be in (0, 1]"]),
        (None, ["--top_k=0"], ["top_k must be >= 1"]),
        (None, ["--max_new_tokens=-1"], ["max_new_tokens must be >= 0"]),
        (None, ["--prompt=Hi<|endoftext|>there", "--max_new_tokens=5"], ["<|endoftext|>"]),
        (None, ["--n_layer=two"], ["--n_layer", "invalid int value"]),
        (None, ["--dtype=float64"], ["--dtype", "invalid choice"]),
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, content, flags, needles):
    data = ROOT / "the-verdict.txt" if content is None else write(tmp_path / "data.txt", content)
    argv = [f"--data={data}", f"--out_dir={tmp_path / 'out'}", "--max_iters=1", "--max_new_tokens=0", *flags]
    one_error_line(capsys, main(argv), *needles)
    assert not (tmp_path / "out" / "ckpt.pt").exists()  # it failed before training


@pytest.mark.skipif(torch.cuda.is_available(), reason="there is a GPU")
def test_no_gpu_is_one_line(capsys):
    one_error_line(capsys, main(["--device=cuda"]), "no CUDA GPU")


def test_unwritable_out_dir(tmp_path, capsys):
    blocker = write(tmp_path / "a_file", "not a folder")
    argv = tiny_argv(ROOT / "the-verdict.txt", blocker / "out", max_iters=1)
    one_error_line(capsys, main(argv), "--out_dir", "is not writable")


def test_a_busy_out_dir_is_one_line(tmp_path, capsys):
    """Another run holds out_dir (its lock.txt): this one stops before training, naming the holder."""
    with lock_out_dir(tmp_path):
        rc = main(tiny_argv(ROOT / "the-verdict.txt", tmp_path, max_iters=1))
    one_error_line(capsys, rc, f"--out_dir {tmp_path} is in use by another run (pid {os.getpid()})")
    assert not (tmp_path / "ckpt.pt").exists()


def test_resume_without_a_checkpoint(tmp_path, capsys):
    one_error_line(capsys, main(["--resume", f"--out_dir={tmp_path}"]), "no checkpoint at", "without --resume")


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_resume_from_a_damaged_checkpoint(trained, tmp_path, capsys, damage):
    good = (trained / "ckpt.pt").read_bytes()
    bad = good[: len(good) // 2] if damage == "truncate" else os.urandom(1000)
    write(tmp_path / "ckpt.pt", bad)
    one_error_line(capsys, main(["--resume", f"--out_dir={tmp_path}", "--max_iters=20"]), "truncated or corrupt")
    assert (tmp_path / "ckpt.pt").read_bytes() == bad  # left for the user to inspect
    one_error_line(capsys, generate_main([f"--ckpt={tmp_path / 'ckpt.pt'}"]), "truncated or corrupt")


def test_resume_with_a_disagreeing_model_flag_names_it(trained, capsys):
    before = (trained / "ckpt.pt").read_bytes()
    rc = main(["--resume", f"--out_dir={trained}", "--max_iters=20", "--n_embd=64", "--n_head=2"])
    one_error_line(capsys, rc, "--n_embd 64 disagrees", "n_embd 32")
    assert "--n_head" not in capsys.readouterr().err  # n_head 2 agrees
    assert (trained / "ckpt.pt").read_bytes() == before


def test_resume_takes_unspecified_flags_from_the_checkpoint(trained, tmp_path, capsys):
    out = tmp_path / "copy"
    out.mkdir()
    (out / "ckpt.pt").write_bytes((trained / "ckpt.pt").read_bytes())
    # the tiny shape and batch come from the checkpoint, not from the (much bigger) defaults
    assert main(["--resume", f"--out_dir={out}", "--max_iters=12", "--max_new_tokens=0"]) == 0
    assert "resumed from" in capsys.readouterr().out
    ckpt = load_checkpoint(out / "ckpt.pt")
    assert ckpt["step"] == 12 and ckpt["config"]["n_embd"] == 32 and ckpt["config"]["batch_size"] == 4
    # already there: nothing to train, and the sample still comes
    assert main(["--resume", f"--out_dir={out}", "--max_iters=12", "--max_new_tokens=3"]) == 0
    out_text = capsys.readouterr().out
    assert "nothing to train" in out_text and "--- sample ---\nI had always thought" in out_text


def test_train_prints_a_sample_and_crops_a_long_prompt(tmp_path, capsys):
    long_prompt = "I had always thought Jack Gisburn rather a cheap genius. " * 3  # 40 tokens > block_size 16
    argv = tiny_argv(ROOT / "the-verdict.txt", tmp_path, max_iters=2, eval_interval=2, max_new_tokens=5)
    assert main([*argv, f"--prompt={long_prompt}"]) == 0
    out, err = capsys.readouterr()
    assert err.strip() == "note: the prompt is 40 tokens > block_size 16: keeping its last 16"
    # a sample at each evaluation (steps 0 and 2), the last one the sample of the trained model
    assert "--- sample at step 0 ---\n" in out and "--- sample ---" not in out
    sample = out.split("--- sample at step 2 ---\n")[1]
    assert sample.startswith(" genius. I had always thought Jack Gisburn rather a cheap genius. ")  # the last 16


def test_generate_as_a_real_process_is_reproducible(trained, capsys):
    argv = [f"--ckpt={trained / 'ckpt.pt'}", "--prompt=I had always thought", "--max_new_tokens=12"]
    argv += ["--temperature=0.8", "--top_p=0.9"]
    r = subprocess.run([sys.executable, "-m", "gptbook.generate", *argv], capture_output=True, text=True, env=ENV)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert r.stdout.startswith("I had always thought") and len(r.stdout) > len("I had always thought") + 5
    assert generate_main(argv) == 0
    assert capsys.readouterr().out == r.stdout  # same seed, same text
    assert generate_main([*argv, "--seed=7"]) == 0
    assert capsys.readouterr().out != r.stdout


@pytest.mark.parametrize(
    "flags, needles",
    [
        (["--temperature=-0.5"], ["temperature must be 0 (greedy) or a finite number >= 1e-4"]),
        (["--top_p=0"], ["top_p must be in (0, 1]"]),
        (["--top_k=0"], ["top_k must be >= 1"]),
        (["--min_p=2"], ["min_p must be in [0, 1]"]),
        (["--max_new_tokens=-3"], ["max_new_tokens must be >= 0"]),
        (["--prompt=<|endoftext|>"], ["<|endoftext|>"]),
        (["--prompt="], ["empty"]),
    ],
)
def test_generate_bad_input_is_one_line(trained, capsys, flags, needles):
    one_error_line(capsys, generate_main([f"--ckpt={trained / 'ckpt.pt'}", *flags]), *needles)


def test_generate_missing_checkpoint(tmp_path, capsys):
    one_error_line(capsys, generate_main([f"--ckpt={tmp_path / 'none.pt'}"]), "no checkpoint at")


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path, capsys):
    argv = tiny_argv(ROOT / "the-verdict.txt", tmp_path, max_iters=100_000, eval_interval=3)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gptbook.train", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    deadline = time.monotonic() + 120
    while not (tmp_path / "ckpt.pt").exists():  # the first checkpoint: training is under way
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    m = re.fullmatch(
        r"interrupted: stopped at step (\d+); checkpoint saved to .*ckpt\.pt \(resume with --resume\)", err.strip()
    )
    assert m, err
    ckpt = load_checkpoint(tmp_path / "ckpt.pt")
    assert ckpt["step"] == int(m.group(1)) >= 3 and len(ckpt["history"]) == ckpt["step"] + 1
    assert not list(tmp_path.glob("*.tmp"))
    step = ckpt["step"]
    assert main(["--resume", f"--out_dir={tmp_path}", f"--max_iters={step + 1}", "--max_new_tokens=0"]) == 0
    assert load_checkpoint(tmp_path / "ckpt.pt")["step"] == step + 1


def test_ddp_two_processes_end_with_identical_parameters(tmp_path):
    """torchrun, 2 CPU processes (gloo): each draws its own batches, DDP averages the gradients."""
    argv = tiny_argv(ROOT / "the-verdict.txt", tmp_path, max_iters=6, eval_interval=3)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    r = subprocess.run([*cmd, "-m", "gptbook.train", *argv, "--print_digest"], capture_output=True, text=True, env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    digests = dict(re.findall(r"rank (\d) parameter sha256 ([0-9a-f]{64})", r.stdout))
    assert set(digests) == {"0", "1"} and digests["0"] == digests["1"], r.stdout
    assert param_digest(model_from_checkpoint(load_checkpoint(tmp_path / "ckpt.pt"))) == digests["0"]
    assert "| 128 tokens per step" in r.stdout  # 2 processes x 4 x 16
    assert r.stdout.count("step 6/6 |") == 1  # only rank 0 logs


def test_console_scripts_are_installed():
    bindir = Path(sys.executable).parent
    train_script, generate_script = bindir / "gptbook-train", bindir / "gptbook-generate"
    if not train_script.exists():
        pytest.skip(f"console scripts not installed next to {sys.executable}")
    assert "gptbook.cli" in generate_script.read_text()
    r = subprocess.run([str(train_script), "--help"], capture_output=True, text=True, env=ENV)
    assert r.returncode == 0 and "--max_new_tokens" in r.stdout


# the benchmarks: each subcommand runs on a tiny setting and prints its table (speed is not tested)
BENCH_TINY = ["--n_layer=1", "--n_head=2", "--n_embd=32", "--block_size=16", "--batch_size=2"]


def table_rows(out: str, first_column: str) -> dict:
    """The printed table as {first cell: the line}, below the header row that starts with first_column."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(first_column))
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("  ") or line.startswith("   ") or "  " not in line.strip():
            break
        rows[line.strip().split("  ")[0]] = line
    return rows


def test_bench_train_prints_the_side_by_side_table(capsys):
    assert bench.main(["train", "--steps=1", "--warmup=1", "--no_rss", "--threads=1", *BENCH_TINY]) == 0
    out = capsys.readouterr().out
    rows = table_rows(out, "model")
    assert {"gptbook", "gptbook --chunked_loss"} <= set(rows), out
    for peer, how in (("HF transformers", "transformers"), ("LLMs-from-scratch", "llms_from_scratch")):
        try:
            __import__(how)
            assert peer in rows, out
        except ImportError:
            assert f"note: {peer} is not installed" in out
    assert re.search(r"gptbook --chunked_loss +[\d,]+ +\d+ +\d+ +[\d,]+ +[\d.]+ +\d+%", out), out
    assert "float32 matmul:" in out and "eval tokens/s" in out and re.search(r"e[+-]\d\d +[\d,]+$", rows["gptbook"])


def test_bench_train_measures_peak_memory_in_a_fresh_process(capsys):
    assert bench.main(["train", "--steps=1", "--warmup=0", "--models=gptbook-fast", "--threads=1", *BENCH_TINY]) == 0
    out = capsys.readouterr().out
    row = table_rows(out, "model")["gptbook --chunked_loss"]
    assert re.search(r"\d+% +[\d,]+ +[\d,]+ +-", row), out  # peak RSS and step MiB measured; no peer: no ratio
    one_error_line(capsys, bench.main(["train", "--steps=0"]), "--steps")
    one_error_line(capsys, bench.main(["train", "--models=gpt4"]), "--models", "gpt4")


def test_bench_generate_asserts_identical_tokens_and_prints_speed(capsys):
    argv = ["generate", "--shapes=quick", "--new_tokens=3", "--rounds=1", "--threads=1"]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    rows = table_rows(out, "decoder")
    assert {"gptbook, KV cache", "gptbook, no cache"} <= set(rows), out
    assert "every decoder produced the same 3 greedy tokens" in out
    assert re.search(r"gptbook, KV cache +[\d,.]+ +[\d.]+ +[\d.]+ ", out), out
    one_error_line(capsys, bench.main(["generate", "--shapes=huge"]), "huge")


def test_bench_book_times_notebooks_on_copies(capsys, tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import os\nprint(os.getcwd())")])
    path = tmp_path / "tiny.ipynb"
    nbformat.write(nb, path)
    before = path.read_bytes()
    assert bench.main(["book", str(path)]) == 0
    out = capsys.readouterr().out
    rows = table_rows(out, "notebook")
    assert set(rows) == {"tiny.ipynb", "total"}, out
    assert path.read_bytes() == before  # run on a copy
