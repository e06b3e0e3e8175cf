"""The signal handlers a run installs while it trains: a first SIGINT/SIGTERM saves and stops."""

from __future__ import annotations

import contextlib
import signal
from dataclasses import dataclass


@dataclass
class StopRequest:
    """Set by the handlers; the loop reads it after each step."""

    requested: bool = False


@contextlib.contextmanager
def stop_on_signal():
    """SIGINT/SIGTERM ask the loop to save and stop (the yielded `StopRequest`); a second one goes to
    the caller's handler (Ctrl-C twice still ends the process, even during the save). The caller's
    handlers come back on the way out, and the handlers hold only the request, so nothing keeps the
    trainer alive through a handler."""
    previous, stop = {}, StopRequest()

    def request_stop(signum, frame):
        if stop.requested:  # asked twice: the user insists
            signal.signal(signum, previous[signum])
            signal.raise_signal(signum)
        stop.requested = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread: no handlers here
            previous[sig] = signal.signal(sig, request_stop) or signal.SIG_DFL  # None: set outside Python
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
