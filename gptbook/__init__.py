"""gptbook: a minimal GPT, built step by step in the book's notebooks."""

__version__ = "0.1.0"


def _interrupted_while_starting(signum, frame):  # pragma: no cover - exercised through a real process
    import os
    import sys

    print("interrupted: stopped while starting, nothing saved", file=sys.stderr, flush=True)
    os._exit(130)


# `python -m gptbook.train` / `gptbook.generate` (sys.argv[0] is "-m" while the module is found): Ctrl-C while torch
# imports is one line, not a traceback; the command line puts Python's own handler back once it runs
if __import__("sys").argv[:1] == ["-m"]:
    __import__("signal").signal(__import__("signal").SIGINT, _interrupted_while_starting)
