"""Stop on SIGINT (Ctrl-C) and SIGTERM (schedulers, preemption) with a checkpoint instead of a traceback.

The first signal asks the trainer to finish the step in progress, save a checkpoint and exit. If that
step does not end within `grace_s` seconds (`train.save_on_signal_s`), or a second signal comes (more than
REPEAT_WINDOW_S after the first), the process exits at once without one: the checkpoint before stays the
latest, and resuming from it is exact.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

log = logging.getLogger("rltune")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
REPEAT_WINDOW_S = 1.0
"""A signal this soon after the first is the same request delivered twice (a wrapper such as `timeout`, or a
launcher, signals the process and also its group): it is ignored. A later one stops at once."""


class GracefulStop:
    def __init__(self, grace_s: float):
        self.grace_s = grace_s
        self.signum: int | None = None
        self._previous: dict[int, object] = {}
        self._timer: threading.Timer | None = None
        self._first_at = 0.0

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or 0)

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self.requested:
            if time.monotonic() - self._first_at < REPEAT_WINDOW_S:
                return
            self._exit_now(f"{name} again")
        self.signum, self._first_at = signum, time.monotonic()
        log.warning(
            "%s: finishing this step and saving a checkpoint (at most %.0fs; %s again stops at once without one)",
            name,
            self.grace_s,
            name,
        )
        self._timer = threading.Timer(
            self.grace_s, self._exit_now, args=(f"the step did not end in {self.grace_s:.0f}s",)
        )
        self._timer.daemon = True
        self._timer.start()

    def _exit_now(self, reason: str) -> None:
        log.error("%s: exiting without a checkpoint; the latest saved one resumes exactly", reason)
        for handler in logging.getLogger().handlers + log.handlers:
            handler.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(self.exit_code)
