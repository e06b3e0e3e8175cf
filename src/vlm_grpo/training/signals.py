"""The signal handlers a run installs while it trains: a first SIGINT/SIGTERM saves and stops."""

from __future__ import annotations

import contextlib
import signal


@contextlib.contextmanager
def stop_on_signal(trainer):
    """SIGINT/SIGTERM ask the trainer's loop to save and stop (`trainer.stop_requested`); a second one
    goes to the caller's handler (Ctrl-C twice still ends the process, even during the save). The
    caller's handlers come back on the way out, so nothing keeps the trainer alive through a handler."""
    previous = {}

    def request_stop(signum, frame):
        if trainer.stop_requested:  # asked twice: the user insists
            signal.signal(signum, previous[signum])
            signal.raise_signal(signum)
        trainer.stop_requested = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread: no handlers here
            previous[sig] = signal.signal(sig, request_stop) or signal.SIG_DFL  # None: set outside Python
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
