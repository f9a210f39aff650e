"""What a command line needs around training (no chapter builds it): Ctrl-C and SIGTERM, torchrun's process group."""

import contextlib
import datetime
import os
import signal
import sys
import threading
import time

import torch
import torch.distributed as dist

DDP_TIMEOUT = 600  # seconds a process waits in a collective (rank 0 evaluates and saves while the others wait)


def note(msg: str) -> None:
    print(msg, file=sys.stderr)


class StopOnSignal:
    """First Ctrl-C (SIGINT) or SIGTERM: ask training to finish the step, save and stop. A second Ctrl-C: at once.

    grace (under torchrun): if no step has ended `grace` s after the request, this process is blocked in a
    collective on a frozen or dead peer, where no Python handler runs; a thread woken by the signal (wakeup fd)
    then says so in one line and exits.
    """

    def __init__(self, grace: float | None = None):
        self.requested, self.asks, self.previous, self.grace = False, 0, {}, grace
        self.interruptible = False  # True while sampling: the first Ctrl-C also stops the sample at once

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread only
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
            if self.grace is not None:
                r, w = os.pipe()
                os.set_blocking(w, False)
                self.previous["fd"] = signal.set_wakeup_fd(w)
                threading.Thread(target=self._watch, args=(r,), daemon=True).start()
        return self

    def _handle(self, signum, frame):
        again, self.requested = self.requested, True
        if signum == signal.SIGINT and (again or self.interruptible):
            raise KeyboardInterrupt

    def asked(self) -> bool:
        """Training asks before each step: stop now?"""
        self.asks += 1
        return self.requested

    def _watch(self, r):
        os.read(r, 1)  # a signal came: its C handler wrote here, even if the main thread is stuck in C++
        asks = self.asks
        time.sleep(self.grace)
        if self.asks == asks and self.previous:  # no step ended since: blocked
            rank = os.environ.get("RANK", "0")
            note(f"error: rank {rank} still waits {self.grace:.0f} s after the stop request: another process does "
                 f"not respond (frozen or dead?); exiting without saving")  # fmt: skip
            os._exit(1)

    def __exit__(self, *exc):
        if "fd" in self.previous:
            signal.set_wakeup_fd(self.previous.pop("fd"))
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}


@contextlib.contextmanager
def distributed(device: str):
    """Under torchrun (RANK set): a process group, gloo on CPU, nccl on CUDA; yields (rank, world_size)."""
    if "RANK" not in os.environ:
        yield 0, 1
        return
    if device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    # a frozen or dead peer: collectives fail after DDP_TIMEOUT, not gloo's default 30 minutes
    dist.init_process_group("nccl" if device == "cuda" else "gloo", timeout=datetime.timedelta(seconds=DDP_TIMEOUT))
    try:
        yield dist.get_rank(), dist.get_world_size()
    finally:
        dist.destroy_process_group()
