"""Progress of long work on stderr, for every command: bytes of a bundle (`amanat export` on the
server, `amanat transfer` on the online workstation) or items of a vault (`amanat-review import`,
`extract`, `export-case`, `verify`)."""

from __future__ import annotations

import sys
import time
from typing import Any


class Progress:
    """A progress bar on stderr: redrawn in place on a terminal, every 10% otherwise. It counts
    bytes (`update`), or items when called as `progress(done, total)`."""

    WIDTH = 30

    def __init__(self, label: str, total: int | None = None, stream: Any = None) -> None:
        self.label, self.total, self.done = label, total, 0
        self.items = False
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

    def __call__(self, done: int, total: int) -> None:
        """`done` of `total` items (the callback the review tool's long commands take)."""
        self.items, self.total = True, total
        self.update(done - self.done)
        if done >= total and self.tty:
            self.finish()

    def finish(self) -> None:
        print(("\r" if self.tty else "") + self.line(), file=self.stream, flush=True)

    def line(self) -> str:
        if self.items:
            return f"{self.label}: {self.done}/{self.total} {self._bar()}"
        mib = self.done / 2**20
        if not self.total:
            return f"{self.label}: {mib:.1f} MiB"
        return f"{self.label}: {self._bar()} {mib:.1f}/{self.total / 2**20:.1f} MiB"

    def _bar(self) -> str:
        share = min(self.done / self.total, 1.0) if self.total else 1.0
        filled = int(share * self.WIDTH)
        return f"[{'#' * filled}{'-' * (self.WIDTH - filled)}] {share:4.0%}"
