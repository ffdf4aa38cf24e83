"""Long work (recovery, search) in a background thread while the page stays live: a progress bar and a Stop button
in a fragment polled every POLL_S, and one whole-page rerun when the work ends, to show its result. The thread
never touches Streamlit; the page reads what it leaves on the job."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from core import SqueezeError

POLL_S = 0.5


@dataclass(kw_only=True)
class Job:
    fraction: float = 0.0
    result: Any = None
    error: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    shown: bool = False  # the page has rerun once since it finished

    @property
    def running(self) -> bool:
        return not self.finished.is_set()

    def start(self, work: Callable[[], Any], name: str) -> Job:
        def run() -> None:
            try:
                self.result = work()
            except SqueezeError as error:
                self.error = error.reason
            except Exception as error:  # noqa: BLE001 - the thread's failure is shown on the page, not lost in a log
                self.error = f"{name} failed: {type(error).__name__}: {error}"
            finally:
                self.finished.set()

        threading.Thread(target=run, name=name, daemon=True).start()
        return self

    def progress(self, fraction: float) -> None:
        self.fraction = fraction


def live(job: Job, label: Callable[[bool], str], stop_key: str, stop_help: str, draw: Callable[[], None]) -> None:
    """The job's progress bar (`label(stopping)`), its Stop button and whatever `draw` shows of it so far."""

    @st.fragment(run_every=POLL_S if job.running else None)
    def fragment() -> None:
        if not job.running:
            if not job.shown:
                job.shown = True
                st.rerun()
            return
        stopping = job.stop.is_set()
        bar_col, stop_col = st.columns([5, 1])
        bar_col.progress(job.fraction, text=label(stopping))
        stop_col.button("Stop", key=stop_key, on_click=job.stop.set, disabled=stopping, help=stop_help)
        draw()

    fragment()
