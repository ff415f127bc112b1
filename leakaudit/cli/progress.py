"""The CLI's progress listener: rich output on stderr, Ctrl-C turned into a polite stop request.

It implements ``leakaudit.progress.Observer``. The first Ctrl-C sets ``should_stop`` (attacks end at their
next check, the scan writes what exists marked incomplete and exits 130); a second Ctrl-C aborts at once.
"""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType, TracebackType

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TaskID, TextColumn,
                           TimeRemainingColumn)
from rich.text import Text

from ..progress import AttackProgress
from ..safetext import terminal, visible


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} it/s" if speed else "– it/s", style="progress.data.speed")


class _LossColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        loss = task.fields.get("loss")
        return Text(f"loss {loss:.4g}" if isinstance(loss, float) else "", style="cyan")


class RichObserver:
    """Progress on stderr. ``quiet`` keeps the Ctrl-C handling but prints nothing."""

    def __init__(self, console: Console | None = None, *, quiet: bool = False) -> None:
        self.console = console or Console(stderr=True)
        self.quiet = quiet
        self._stop = threading.Event()
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        self._previous_handler: object = None
        self._started = time.perf_counter()

    # -- Observer -------------------------------------------------------------------------------------
    def stage(self, name: str, detail: str = "") -> None:
        if self.quiet:
            return
        elapsed = time.perf_counter() - self._started
        # Text is not parsed as markup, but a detail may hold a model or sample path: no raw control characters
        text = Text.assemble((f"[{elapsed:6.1f}s] ", "dim"), (visible(name), "bold"),
                             (f"  {visible(detail)}" if detail else ""))
        (self._progress.console if self._progress else self.console).print(text, highlight=False)

    def attack_progress(self, event: AttackProgress) -> None:
        if self.quiet:
            return
        if self._progress is None:
            self._progress = Progress(
                TextColumn("[bold]{task.description:<14}"), BarColumn(), MofNCompleteColumn(), _RateColumn(),
                _LossColumn(), TimeRemainingColumn(), console=self.console, transient=False)
            self._progress.start()
        task = self._tasks.get(event.attack)
        if task is None:
            # the description column is rendered as markup
            task = self._progress.add_task(terminal(event.attack), total=event.total)
            self._tasks[event.attack] = task
        loss = float(event.loss) if event.loss == event.loss else None  # NaN -> no value shown
        self._progress.update(task, completed=event.iteration, total=event.total, loss=loss)

    def should_stop(self) -> bool:
        return self._stop.is_set()

    # -- lifecycle ------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        self._stop.set()

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self._stop.is_set():
            raise KeyboardInterrupt
        self._stop.set()
        if not self.quiet:
            self.console.print("[yellow]stopping at the next check; the report will be marked incomplete "
                               "(Ctrl-C again to abort without a report)[/yellow]")

    def __enter__(self) -> "RichObserver":
        if threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if self._previous_handler is not None:
            signal.signal(signal.SIGINT, self._previous_handler)  # type: ignore[arg-type]
            self._previous_handler = None
