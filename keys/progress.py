"""Progress of a long transfer on stderr, for every command that moves bundles (`amanat export`
on the server, `amanat transfer` on the online workstation)."""

from __future__ import annotations

import sys
import time
from typing import Any


class Progress:
    """A progress bar on stderr: redrawn in place on a terminal, every 10% otherwise."""

    WIDTH = 30

    def __init__(self, label: str, total: int | None, stream: Any = None) -> None:
        self.label, self.total, self.done = label, total, 0
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.last_step, self.last_draw = -1, 0.0

    def update(self, n: int) -> None:
        self.done += n
        if self.tty:
            now = time.monotonic()
            if now - self.last_draw > 0.1:
                self.last_draw = now
                print("\r" + self.line(), end="", file=self.stream, flush=True)
            return
        step = self.done * 10 // self.total if self.total else -1
        if step > self.last_step:
            self.last_step = step
            print(self.line(), file=self.stream, flush=True)

    def finish(self) -> None:
        print(("\r" if self.tty else "") + self.line(), file=self.stream, flush=True)

    def line(self) -> str:
        mib = self.done / 2**20
        if not self.total:
            return f"{self.label}: {mib:.1f} MiB"
        share = min(self.done / self.total, 1.0)
        filled = int(share * self.WIDTH)
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        return f"{self.label}: [{bar}] {share:4.0%} {mib:.1f}/{self.total / 2**20:.1f} MiB"
