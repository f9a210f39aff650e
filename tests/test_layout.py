"""The package's shape: small files and functions, imports that point only down the reading order."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gptbook"
# reading order: a module may import only modules before it. The chapters' modules (tokenizer 01, data 02, model
# 03-05, train 06, sampling 07, plotting 08, hf 09), with the rooms no chapter builds where they are first needed:
# corpora, fused_loss (a leaf; chapter 09 explains it), device, rng, checkpoint, progress, the command lines on top.
ORDER = [
    "tokenizer",
    "corpora",
    "data",
    "fused_loss",
    "model",
    "device",
    "rng",
    "checkpoint",
    "optim",
    "progress",
    "train",
    "measures",
    "sampling",
    "plotting",
    "hf",
    "runtime",
    "cli",
    "pretrain",
    "finetune",
    "lora",
    "instruct",
    "chat",
    "generate",
]


def modules():
    return sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")


def top_level_imports(tree) -> set[str]:
    """gptbook modules imported at module level (not under `if __name__ == "__main__":`)."""
    out = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gptbook."):
            out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("gptbook.")}
    return out


def test_every_module_has_a_place_in_the_order():
    assert sorted(ORDER) == modules()


@pytest.mark.parametrize("name", ORDER)
def test_imports_point_down(name):
    tree = ast.parse((PACKAGE / f"{name}.py").read_text())
    later = top_level_imports(tree) - set(ORDER[: ORDER.index(name)])
    assert not later, f"{name} imports {sorted(later)}, which a reader meets later"


@pytest.mark.parametrize("name", ORDER)
def test_files_and_functions_are_small(name):
    source = (PACKAGE / f"{name}.py").read_text()
    assert source.count("\n") <= 300
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            assert node.end_lineno - node.lineno + 1 <= 60, f"{name}.{node.name}"
