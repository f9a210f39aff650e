"""gptbook: a minimal GPT, built step by step in the book's notebooks."""

import os
import signal
import sys

__version__ = "0.1.0"


def _interrupted_while_starting(signum, frame):  # pragma: no cover - exercised through a real process
    print("interrupted: stopped while starting, nothing saved", file=sys.stderr, flush=True)
    os._exit(130)


# The command lines (`python -m gptbook.train`, while sys.argv[0] is "-m", or the gptbook-train/-generate scripts):
# Ctrl-C while torch imports is one line, not a traceback; gptbook.cli.run_cli puts Python's handler back.
if sys.argv[:1] == ["-m"] or os.path.basename(sys.argv[0] if sys.argv else "") in ("gptbook-train", "gptbook-generate"):
    signal.signal(signal.SIGINT, _interrupted_while_starting)
