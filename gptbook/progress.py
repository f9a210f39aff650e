"""The training progress bar (no chapter builds it): tqdm on a terminal or in a notebook, the log written above it."""

import sys

from tqdm import tqdm


def progress_bar(total: int, done: int, log):
    """(bar, log): a bar for the steps left and a log that writes above it; (None, log) where no bar shows."""
    notebook = type(sys.stderr).__module__.startswith("ipykernel")  # no terminal, yet shows a bar; else tqdm decides
    kw = {"disable": False, "mininterval": 1, "ncols": 80} if notebook else {"disable": None}
    bar = tqdm(total=total, initial=done, desc="train", unit="step", **kw)
    if bar.disable or done >= total:
        bar.close()
        return None, log

    def log_above(msg):
        with bar.external_write_mode():
            log(msg)

    return bar, log_above
