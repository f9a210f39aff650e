"""Random numbers for training: one generator per purpose, derived from (seed, purpose, rank), no global state."""

import contextlib
import hashlib

import torch


def derive_seed(seed: int, purpose: str, rank: int = 0) -> int:
    """A seed of its own for each purpose ("init", "data", "dropout", "eval") and process, from the run's seed."""
    digest = hashlib.sha256(f"{seed}/{purpose}/{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # 63 bits


def generator(seed: int, purpose: str, rank: int = 0, device="cpu") -> torch.Generator:
    """A torch.Generator for one purpose: streams of different purposes and processes never overlap."""
    return torch.Generator(device=device).manual_seed(derive_seed(seed, purpose, rank))


@contextlib.contextmanager
def lend_global_rng(gen: torch.Generator):
    """Let code that draws from the global RNG (nn.Dropout) draw from gen instead; put the global RNG back after."""
    cuda = gen.device.type == "cuda"
    index = gen.device.index or 0
    with torch.random.fork_rng(devices=[index] if cuda else []):
        default = torch.cuda.default_generators[index] if cuda else torch.default_generator
        default.set_state(gen.get_state())
        yield
        gen.set_state(default.get_state())
