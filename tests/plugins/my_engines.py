"""A rollout engine that never returns: the stand-in for a hung generation server or driver."""

import threading


class StuckEngine:
    def __init__(self, **_):
        self.release = threading.Event()

    def generate(self, prompt_ids, rows, sampling):
        self.release.wait()  # forever, unless a test lets it go
        raise RuntimeError("released")

    def sync_weights(self, model):
        pass

    def close(self):
        self.release.set()
