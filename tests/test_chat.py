"""gptbook-chat driven as a user would, through a pseudo-terminal: answers, /reset, long and empty lines, Ctrl-C/D."""

import dataclasses
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pexpect
import pytest
import torch

import gptbook.chat as chat
from gptbook.chat import ROOM, Chat
from gptbook.checkpoint import save_checkpoint
from gptbook.instruct import TEMPLATE, InstructConfig, Pair, encode_prompt, finetune
from gptbook.model import GPT, GPTConfig
from gptbook.sampling import GREEDY

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
PAIRS = [Pair("t", "Who speaks next?", "ANNA"), Pair("t", "Which play?", "Macbeth")]


def tiny_model(trained: bool):
    """A 1-layer GPT; trained: it answers PAIRS (greedy), else it never writes <|endoftext|> (greedy)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=64, n_layer=1, n_head=2, n_embd=32))
    if trained:
        finetune(model, PAIRS, InstructConfig(lora_rank=0, steps=40, batch_size=2, lr=1e-2, warmup_iters=0))
    return model.eval()


def save(model, path, chat_entry=True):
    state = {"model": model.state_dict(), "model_config": dataclasses.asdict(model.config), "config": {}, "step": 0}
    save_checkpoint(path, {**state, **({"chat": {"template": TEMPLATE}} if chat_entry else {})})
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("chat")
    return {
        "trained": save(tiny_model(True), d / "trained.pt"),
        "endless": save(tiny_model(False), d / "endless.pt"),
        "plain": save(tiny_model(False), d / "plain.pt", chat_entry=False),
    }


def spawn(*args):
    return pexpect.spawn(sys.executable, ["-m", "gptbook.chat", *args], cwd=ROOT, env=ENV, encoding="utf-8", timeout=60)


def test_a_conversation_in_a_terminal(ckpts):
    p = spawn("--ckpt", str(ckpts["trained"]), "--temperature", "0")
    p.expect_exact("Ctrl-D to quit)")
    p.expect_exact("you> ")
    p.sendline("Who speaks next?")
    p.expect_exact("gpt> ANNA\r\n")  # stopped at <|endoftext|>
    p.expect_exact("you> ")
    p.sendline("")  # an empty line: nothing is sent, a new prompt
    p.expect_exact("you> ")
    assert "gpt>" not in p.before
    p.sendline("/reset")
    p.expect_exact("(conversation forgotten)")
    p.expect_exact("you> ")
    p.sendline("Which play?")
    p.expect_exact("gpt> Macbeth\r\n")
    p.expect_exact("you> ")
    p.sendline("word " * 100)  # longer than the context
    p.expect_exact(f"note: the message is 100 tokens, the model sees {64 - ROOM} before its answer: keeping")
    p.expect_exact("gpt> ")
    p.expect_exact("you> ")
    p.sendeof()  # Ctrl-D
    p.expect(pexpect.EOF)
    p.close()
    assert p.exitstatus == 0


def test_ctrl_c_stops_the_answer_and_keeps_the_chat(ckpts):
    p = spawn("--ckpt", str(ckpts["endless"]), "--temperature", "0", "--max_new_tokens", "10000000")
    p.expect_exact("you> ")
    p.sendline("Tell me everything.")
    time.sleep(1.5)  # answering: ten million tokens, no <|endoftext|>
    p.sendintr()  # Ctrl-C
    p.expect_exact("(answer stopped)")
    p.expect_exact("you> ")
    p.sendintr()  # Ctrl-C at the prompt: the chat goes on
    p.expect_exact("(Ctrl-D quits)")
    p.expect_exact("you> ")
    p.sendeof()
    p.expect(pexpect.EOF)
    p.close()
    assert p.exitstatus == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ckpt", "nowhere/ckpt.pt"], "error: no checkpoint at nowhere/ckpt.pt"),
        (["--ckpt", "PLAIN"], "is not a chat checkpoint (it has no prompt template)"),
        (["--top_p", "2"], "error: top_p must be in (0, 1], got 2.0"),
    ],
)
def test_a_bad_start_is_one_line(ckpts, args, message):
    args = [str(ckpts["plain"]) if a == "PLAIN" else a for a in args]
    r = subprocess.run([sys.executable, "-m", "gptbook.chat", *args], capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr


def test_without_ckpt_it_uses_the_books_chat_model(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(chat, "chat_path", lambda: tmp_path / "chat" / "ckpt.pt")  # missing: made, with a note
    monkeypatch.setattr(chat, "instructed", lambda log: (tiny_model(True), []))
    lines = iter(["Who speaks next?"])
    monkeypatch.setattr("builtins.input", lambda prompt: next(lines, None) or (_ for _ in ()).throw(EOFError))
    assert chat.main(["--temperature", "0"]) == 0
    out, err = capsys.readouterr()
    assert "gpt> ANNA\n" in out and f"note: no chat model at {tmp_path / 'chat' / 'ckpt.pt'} yet" in err


def test_the_context_keeps_whole_recent_turns():
    notes = []
    c = Chat(tiny_model(True), TEMPLATE, GREEDY, 5, seed=0, note=notes.append)
    assert c.answer("Who speaks next?") == "ANNA" and c.answer("Which play?") == "Macbeth"
    first, second = c.turns
    prompt = encode_prompt("Who speaks next?")
    assert c.context(prompt) == first + second + prompt  # both fit in block_size - ROOM
    c.turns = [first] * 3
    assert len(c.context(prompt)) <= 64 - ROOM and c.context(prompt)[-len(prompt) :] == prompt
    c.reset()
    assert c.context(prompt) == prompt and not notes


def test_the_command_is_declared():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["gptbook-chat"] == "gptbook.chat:main"


def test_help_names_every_flag(capsys):
    assert chat.main(["--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("ckpt", "max_new_tokens", "temperature", "top_k", "top_p", "min_p", "seed", "device"):
        assert f"--{flag}" in out
    assert "--prompt" not in out  # a chat takes its messages from the terminal
    assert "/reset" in out and "Ctrl-D" in out
