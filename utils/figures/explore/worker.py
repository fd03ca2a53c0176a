"""Run the explorer's updates off the kernel's main thread, so that a newer change cancels an older one.

Jupyter processes widget messages on the kernel's main thread, one at a time: an update computed there
holds every later change until it finishes. :class:`Updates` computes in one background thread instead;
each change bumps a generation counter, and the computation checks it between ascent steps
(:meth:`Updates.check`), so a stale update stops within one step and only the newest one finishes.
"""
from __future__ import annotations

import threading


class Cancelled(Exception):
    """A newer change arrived: the update in progress stops."""


class Updates:
    """Calls ``run(generation)`` for the newest request only: at once (``background=False``) or in a thread."""

    def __init__(self, run, background: bool):
        self._run, self.background = run, background
        self.generation = 0
        self.finished = 0  # updates that ran to the end
        self.cancelled = 0  # updates stopped by a newer one
        self._condition = threading.Condition()
        self._pending: int | None = None
        self._busy = False
        if background:
            threading.Thread(target=self._loop, name="explorer-updates", daemon=True).start()

    def request(self) -> None:
        """A new update for the current settings; any older one still running is now stale."""
        with self._condition:
            self.generation += 1
            self._pending = self.generation
            self._condition.notify_all()
        if not self.background:
            self._take_and_run()

    def check(self, generation: int) -> None:
        """Raise :class:`Cancelled` if a newer update was requested after ``generation``."""
        if generation != self.generation:
            raise Cancelled

    def wait(self, timeout: float | None = None) -> bool:
        """Until no update is pending or running; False on timeout."""
        with self._condition:
            return self._condition.wait_for(lambda: self._pending is None and not self._busy, timeout)

    def _loop(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._pending is not None)
            self._take_and_run()

    def _take_and_run(self) -> None:
        with self._condition:
            generation, self._pending = self._pending, None
            if generation is None:
                return
            self._busy = True
        try:
            self._run(generation)
            self.finished += 1
        except Cancelled:
            self.cancelled += 1
        finally:
            with self._condition:
                self._busy = False
                self._condition.notify_all()
