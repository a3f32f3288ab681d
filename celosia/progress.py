"""Progress reports of the compile flow.

The flow tells a :class:`Progress` three things: a step starts (:meth:`Progress.step`, one
line a user reads), what a long step is doing right now (:meth:`Progress.detail`: "sample 3/8",
"nextpnr: routing", shown live and then replaced), and how long each stage took
(:meth:`Progress.stage_done`). The base class ignores all three; the CLI draws them with rich.
"""

from __future__ import annotations

from typing import Callable

__all__ = ["Progress", "as_progress", "format_seconds"]


class Progress:
    """Receives the flow's progress; every method does nothing by default."""

    def step(self, message: str) -> None:
        """A step starts; ``message`` says what it does."""

    def detail(self, text: str) -> None:
        """What the current step is doing now (replaces the previous detail)."""

    def stage_done(self, name: str, seconds: float) -> None:
        """Stage ``name`` finished after ``seconds``."""


class _CallbackProgress(Progress):
    def __init__(self, say: Callable[[str], None]):
        self._say = say

    def step(self, message: str) -> None:
        self._say(message)


def as_progress(progress: Progress | Callable[[str], None] | None) -> Progress:
    """A :class:`Progress` from a Progress, a callable receiving step messages, or None."""
    if progress is None:
        return Progress()
    if isinstance(progress, Progress):
        return progress
    if callable(progress):
        return _CallbackProgress(progress)
    raise TypeError(f"progress must be a celosia.progress.Progress or a callable, not {type(progress).__name__}")


def format_seconds(seconds: float) -> str:
    """``0.4 s``, ``12 s``, ``2 min 05 s``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"
