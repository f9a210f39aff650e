"""`gptbook-chat` (`python -m gptbook.chat`): a terminal chat with an instruction-tuned checkpoint (chapter 11).

Each message goes into the checkpoint's prompt template after the turns before it (as many whole turns as fit in
the context); the answer is sampled with the KV cache until <|endoftext|>. `/reset` forgets the conversation,
Ctrl-C stops an answer, Ctrl-D quits.
"""

import sys

import torch

from gptbook.checkpoint import load_checkpoint, model_from_checkpoint
from gptbook.cli import CliParser, add_sampling_args, run_cli, sampling_from_args
from gptbook.device import resolve_device
from gptbook.instruct import TEMPLATE, chat_path, instructed, split_template
from gptbook.runtime import note
from gptbook.sampling import generate
from gptbook.tokenizer import EOT_ID, decode, encode

ROOM = 16  # tokens of the context left for the answer: a longer message is cut to fit before it
HELP = r"type \n for a new line, /reset to forget the conversation, Ctrl-C to stop an answer, Ctrl-D to quit"


class Chat:
    """A conversation with a model: the token ids of its finished turns, and the next answer."""

    def __init__(self, model, template: str, sampling, max_new_tokens: int, seed: int, note=note):
        self.model, self.sampling, self.max_new_tokens, self.note = model, sampling, max_new_tokens, note
        self.head, self.tail = (encode(part) for part in split_template(template))
        self.device = next(model.parameters()).device
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.turns = []  # token ids of each turn: the prompt, the answer, <|endoftext|>

    def reset(self) -> None:
        self.turns = []

    def prompt(self, message: str) -> list[int]:
        """The message in the template; cut to its last tokens (with a note) if it leaves no ROOM for the answer."""
        budget = self.model.config.block_size - ROOM
        ids = encode(message)  # a ValueError if it holds <|endoftext|>
        room = budget - len(self.head) - len(self.tail)
        if len(ids) > room:
            self.note(f"note: the message is {len(ids)} tokens, the model sees {budget} before its answer: keeping "
                      f"the message's last {room} tokens")  # fmt: skip
            ids = ids[-room:]
        return self.head + ids + self.tail

    def context(self, prompt: list[int]) -> list[int]:
        """The latest earlier turns that fit whole in block_size - ROOM tokens, then the prompt."""
        out = prompt
        for turn in reversed(self.turns):
            if len(turn) + len(out) > self.model.config.block_size - ROOM:
                break
            out = turn + out
        return out

    def answer(self, message: str) -> str:
        """The model's answer to message; the turn is kept unless Ctrl-C stops the answer (KeyboardInterrupt)."""
        prompt = self.prompt(message)
        ids = self.context(prompt)
        idx = torch.tensor([ids], device=self.device)  # (1, T)
        out = generate(self.model, idx, self.max_new_tokens, self.sampling, generator=self.generator, stop_at_eot=True)
        new = out[0, len(ids) :].tolist()
        if new and new[-1] == EOT_ID:
            new = new[:-1]
        elif self.max_new_tokens:
            self.note(f"note: the answer was cut at --max_new_tokens {self.max_new_tokens}")
        self.turns.append(prompt + new + [EOT_ID])
        return decode(new)


def parser():
    p = CliParser(
        prog="gptbook-chat",
        description="Chat in the terminal with an instruction-tuned model (chapter 11): the book's Shakespeare "
        f"model tuned with LoRA unless --ckpt is given; {HELP}. Set GPTBOOK_DEBUG=1 to see tracebacks.",
    )
    p.add_argument("--ckpt", default=None, help=f"a chat checkpoint (default: {chat_path()}, made if missing)")
    add_sampling_args(p, prompt=False)
    p.add_argument("--seed", type=int, default=1337, help="seed of the sampler (default: 1337)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"), help="default: auto")
    return p


def load_chat(path) -> tuple:
    """(model, template) of a chat checkpoint: a ValueError in one line for any other checkpoint."""
    ckpt = load_checkpoint(path)
    chat = ckpt.get("chat")
    if not isinstance(chat, dict) or not isinstance(chat.get("template"), str):
        raise ValueError(f"{path} is not a chat checkpoint (it has no prompt template); leave out --ckpt for the "
                         f"book's chat model")  # fmt: skip
    split_template(chat["template"])  # a ValueError if it is not one
    return model_from_checkpoint(ckpt).eval(), chat["template"]


def main(argv=None) -> int:
    return run_cli(_chat, argv)


def _chat(argv):
    a = parser().parse_args(argv)
    sampling = sampling_from_args(a, a.seed)
    if a.ckpt is None:
        if not chat_path().exists():
            note(f"note: no chat model at {chat_path()} yet: making it from the Shakespeare model (about a minute)")
        model, template = instructed(log=note)[0], TEMPLATE
    else:
        model, template = load_chat(a.ckpt)
    chat = Chat(model.to(resolve_device(a.device)), template, sampling, a.max_new_tokens, a.seed)
    print(f"chat ({HELP})", flush=True)
    while True:
        try:
            message = input("you> ").strip().replace("\\n", "\n")
        except EOFError:  # Ctrl-D
            print()
            return 0
        except KeyboardInterrupt:  # Ctrl-C at the prompt: a fresh line
            print("\n(Ctrl-D quits)", flush=True)
            continue
        if not message:
            continue
        if message == "/reset":
            chat.reset()
            print("(conversation forgotten)", flush=True)
            continue
        try:
            print(f"gpt> {chat.answer(message)}", flush=True)
        except KeyboardInterrupt:
            print("\n(answer stopped)", flush=True)
        except ValueError as e:  # <|endoftext|> in the message
            note(f"note: {e}")


if __name__ == "__main__":
    sys.exit(main())
