"""Instruction tuning (chapter 11): question/answer pairs made from the plays, padded batches, a loss on the answers.

`make_pairs(text)` turns the corpus into pairs of three tasks; `encode_turn` puts one into the prompt template;
`collate` pads turns into (x, y) with y = IGNORE_INDEX wherever the loss must not look; `adapt` picks what trains
(every weight, or LoRA), `finetune` trains, `score` measures on held-out pairs; `instructed()` is the chat model of
`gptbook-chat`.
"""

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F

from gptbook.checkpoint import CKPT_NAME, load_checkpoint, model_from_checkpoint, param_digest, save_checkpoint
from gptbook.corpora import corpus, data_dir
from gptbook.finetune import works
from gptbook.fused_loss import IGNORE_INDEX
from gptbook.lora import add_lora, merge_lora, train_norms, train_rows
from gptbook.optim import configure_optimizer, get_lr
from gptbook.pretrain import pretrained
from gptbook.rng import derive_seed, generator
from gptbook.tokenizer import EOT_ID, encode

TEMPLATE = "### Instruction:\n{instruction}\n\n### Response:\n"  # the answer follows, then <|endoftext|>
# the plays of the "which play" task: title in the corpus -> the answer
PLAYS = {"MACBETH": "Macbeth", "OTHELLO, THE MOOR OF VENICE": "Othello", "JULIUS CAESAR": "Julius Caesar",
         "THE TEMPEST": "The Tempest"}  # fmt: skip
TEST_FRAC = 0.1  # the last 10% of each play's speeches: held out
WORDS = 10  # a line is cut to its first 10 words, so that a question, its input and its answer fit in 64 tokens
SPEECH = re.compile(r"(?<=\n\n)([A-Z][A-Z' ]*[A-Z])\.\n((?:.+\n)+)")  # "HAMLET." after an empty line, then lines
SCENE = re.compile(r"^(?:ACT|SCENE|Scene)\b.*$", re.M)


class Pair(NamedTuple):
    task: str
    instruction: str
    response: str


class Speech(NamedTuple):
    speaker: str
    line: str  # its first line of text (not a stage direction), cut to WORDS words
    next_line: str  # its second, "" if none
    index: int  # its place in the play, 0, 1, 2, ...


def drop_directions(line: str) -> str:
    """A line of a speech without its stage directions ("[Aside.] Well." -> "Well.")."""
    return re.sub(r"\[.*?(\]|$)", "", line).strip()


def scenes(play: str) -> list[list[Speech]]:
    """The speeches of a play, scene by scene (only speeches in the `NAME.` format; others are skipped)."""
    out, index = [], 0
    for scene in SCENE.split(play):
        speeches = []
        for m in SPEECH.finditer(scene):
            lines = [t for t in map(drop_directions, m.group(2).splitlines()) if t]
            if lines and not lines[0].isupper():  # the list of persons is capitals too
                cut = [" ".join(s.split()[:WORDS]) for s in lines[:2]]
                speeches.append(Speech(m.group(1), cut[0], cut[1] if len(cut) > 1 else "", index))
                index += 1
        if speeches:
            out.append(speeches)
    return out


def play_pairs(title: str, play: str) -> list[tuple[Pair, int, int]]:
    """Each task's pairs from one play, with the indexes of the first and last speech each uses."""
    out = []
    for scene in scenes(play):
        for a, b, c in zip(scene, scene[1:], scene[2:], strict=False):
            question = f"Who speaks next?\n{a.speaker}.\n{a.line}\n{b.speaker}.\n{b.line}"
            out.append((Pair("next_speaker", question, c.speaker), a.index, c.index))
        for s in scene:
            own = [Pair("continue", f"Continue {s.speaker}'s speech:\n{s.line}", s.next_line)] if s.next_line else []
            if title in PLAYS:
                own.append(Pair("which_play", f"Which play is this from?\n{s.speaker}.\n{s.line}", PLAYS[title]))
            out += [(pair, s.index, s.index) for pair in own]
    return out


def make_pairs(text: str, block_size: int = 64) -> dict[str, list[Pair]]:
    """{"train": [...], "test": [...]}: a pair is held out when its speeches lie in the last TEST_FRAC of its play.
    Pairs longer than block_size + 1 tokens (a window of inputs and its targets) are left out."""
    split = {"train": [], "test": []}
    for title, play in works(text):
        pairs = play_pairs(title, play)
        if not pairs:
            continue
        cut = (1 - TEST_FRAC) * (max(last for _, _, last in pairs) + 1)
        for pair, first, last in pairs:
            if len(encode_turn(pair)[0]) > block_size + 1:
                continue
            if last < cut:
                split["train"].append(pair)
            elif first >= cut:
                split["test"].append(pair)  # a pair that straddles the cut is dropped
    return split


def split_template(template: str) -> tuple[str, str]:
    """A prompt template's text before and after its one "{instruction}"."""
    head, *tail = template.split("{instruction}")
    if len(tail) != 1:
        raise ValueError(f"a prompt template holds {{instruction}} once, got {template!r}")
    return head, tail[0]


def encode_prompt(instruction: str, template: str = TEMPLATE) -> list[int]:
    """The prompt's token ids: the template's head, the instruction and the tail, each encoded on its own."""
    head, tail = split_template(template)
    return encode(head) + encode(instruction) + encode(tail)


def encode_turn(pair: Pair) -> tuple[list[int], list[int]]:
    """(ids, labels): the prompt, the response and <|endoftext|>; labels are IGNORE_INDEX on the prompt."""
    p, r = encode_prompt(pair.instruction), encode(pair.response) + [EOT_ID]
    return p + r, [IGNORE_INDEX] * len(p) + r


def collate(turns: list[tuple[list[int], list[int]]]):
    """Turns (ids, labels) -> x, y (B, T): right-padded; y[t] is the label of token t + 1, IGNORE_INDEX at pads."""
    T = max(len(ids) for ids, _ in turns) - 1
    x = torch.full((len(turns), T), EOT_ID, dtype=torch.long)  # the pad's id does not matter: nothing attends to it
    y = torch.full((len(turns), T), IGNORE_INDEX, dtype=torch.long)
    for i, (ids, labels) in enumerate(turns):
        x[i, : len(ids) - 1] = torch.tensor(ids[:-1])
        y[i, : len(ids) - 1] = torch.tensor(labels[1:])
    return x, y


def response_logits(model, x, y):
    """The logits of the rows that count (y != IGNORE_INDEX), (N, vocab): the LM head runs on those rows alone."""
    keep = y != IGNORE_INDEX  # (B, T)
    hook = model.transformer.ln_f.register_forward_hook(lambda module, args, out: out[keep][None])  # (1, N, C)
    try:
        logits, _ = model(x)  # (1, N, vocab)
    finally:
        hook.remove()
    return logits[0]


def response_loss(model, x, y):
    """F.cross_entropy over the whole (B, T, vocab) logits with ignore_index, computed on the answers' rows only."""
    return F.cross_entropy(response_logits(model, x, y), y[y != IGNORE_INDEX])


@torch.no_grad()
def score(model, pairs: list[Pair], batch_size: int = 64) -> dict:
    """On single-turn pairs: loss, the mean loss per answer token; exact, the share of pairs whose answer greedy
    decoding writes exactly (every answer token and <|endoftext|> the argmax); stops, the share whose <|endoftext|>
    is the argmax after the right answer."""
    was_training, nll, n_tokens, exact, stops = model.training, 0.0, 0, 0, 0
    model.eval()
    for s in range(0, len(pairs), batch_size):
        x, y = collate([encode_turn(p) for p in pairs[s : s + batch_size]])
        logits, keep = response_logits(model, x, y), y != IGNORE_INDEX
        nll += F.cross_entropy(logits, y[keep], reduction="sum").item()
        n_tokens += int(keep.sum())
        right = logits.argmax(-1) == y[keep]  # (N,)
        wrong = torch.zeros_like(y).masked_scatter(keep, (~right).long())  # (B, T)
        exact += int((wrong.sum(1) == 0).sum())
        stops += int(right[y[keep] == EOT_ID].sum())
    model.train(was_training)
    return {"loss": nll / n_tokens, "exact": exact / len(pairs), "stops": stops / len(pairs)}


@dataclass(frozen=True)
class InstructConfig:
    """A fine-tuning run: LoRA (lora_rank > 0) or every weight (0); AdamW, warmup, cosine decay. The defaults are
    the chat model's recipe; chapter 11 fine-tunes every weight with the same steps and batches, lr 1e-3."""

    lora_rank: int = 8
    lora_alpha: float = 16.0
    steps: int = 300
    batch_size: int = 16
    lr: float = 1e-2
    min_lr: float = 1e-3
    warmup_iters: int = 20
    weight_decay: float = 0.0
    seed: int = 1337

    @property
    def lr_decay_iters(self) -> int:  # for gptbook.optim.get_lr
        return self.steps


def adapt(model, cfg: InstructConfig):
    """What trains: every weight (lora_rank 0), or LoRA adapters, the LayerNorms and the <|endoftext|> row."""
    if cfg.lora_rank:
        with torch.random.fork_rng(devices=[]):  # A's random start depends on the seed only
            torch.manual_seed(derive_seed(cfg.seed, "lora"))
            add_lora(model, cfg.lora_rank, cfg.lora_alpha)
        train_norms(model)
        train_rows(model.transformer.wte, [EOT_ID])
    return model


def conversations(pairs_by_task: dict, n: int, g, max_len: int) -> list:
    """n training sequences (ids, labels), each as many turns as fit in max_len tokens, the turns drawn at random:
    a task uniformly, then one of its pairs. The chat's context holds earlier turns the same way."""
    tasks, out, ids, labels = sorted(pairs_by_task), [], [], []
    while len(out) < n:
        pool = pairs_by_task[tasks[torch.randint(len(tasks), (1,), generator=g).item()]]
        turn_ids, turn_labels = encode_turn(pool[torch.randint(len(pool), (1,), generator=g).item()])
        if ids and len(ids) + len(turn_ids) > max_len:
            out.append((ids, labels))
            ids, labels = [], []
        ids, labels = ids + turn_ids, labels + turn_labels
    return out


def finetune(model, pairs: list[Pair], cfg: InstructConfig, log=None) -> list[float]:
    """Train model's trainable parameters on pairs for cfg.steps steps (AdamW, cosine lr); the loss of each step."""
    by_task = {}
    for p in pairs:
        by_task.setdefault(p.task, []).append(p)
    g = generator(cfg.seed, "data")
    optimizer = configure_optimizer(model, cfg.weight_decay, cfg.lr)
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    losses = []
    for step in range(cfg.steps):
        for group in optimizer.param_groups:
            group["lr"] = get_lr(step, cfg)
        batch = conversations(by_task, cfg.batch_size, g, model.config.block_size + 1)
        loss = response_loss(model, *collate(batch))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if log and (step + 1) % 50 == 0:
            log(f"step {step + 1}: loss {sum(losses[-50:]) / 50:.3f}")
    model.eval()
    return losses


def chat_path() -> Path:
    return data_dir() / "checkpoints" / "chat" / CKPT_NAME


def instructed(log=print, cfg: InstructConfig = InstructConfig()):
    """(model in eval mode, history) of the chat model: pretrained() tuned with LoRA by cfg (the chat recipe) and
    merged back into plain GPT weights. Loaded from chat_path() if that file was made by this recipe from this base
    model, else made (about a minute on 2 cores) and saved there, marked as a chat checkpoint by its template."""
    base, _ = pretrained(log=log)
    recipe = {**asdict(cfg), "template": TEMPLATE, "base": param_digest(base)}
    if chat_path().exists():
        ckpt = load_checkpoint(chat_path())
        if ckpt["config"] == recipe and "chat" in ckpt:
            return model_from_checkpoint(ckpt).eval(), ckpt["history"]
    model = adapt(base, cfg)
    pairs = make_pairs(corpus("shakespeare").read_text(), base.config.block_size)
    losses = finetune(model, pairs["train"], cfg, log=log)
    merge_lora(model)
    history = [{"step": i + 1, "loss": loss} for i, loss in enumerate(losses)]
    chat_path().parent.mkdir(parents=True, exist_ok=True)
    state = {"model": model.state_dict(), "model_config": asdict(model.config), "config": recipe}
    save_checkpoint(chat_path(), {**state, "step": cfg.steps, "history": history, "chat": {"template": TEMPLATE}})
    return model.eval(), history
