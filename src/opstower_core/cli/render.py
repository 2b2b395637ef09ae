"""Render engine events for a terminal or for scripts (`--json`, one object per line)."""

from __future__ import annotations

import json
import sys
import time
from typing import TextIO

import humanize

from opstower_core.events import (
    Event,
    Status,
    StepFinished,
    StepLog,
    StepProgress,
    StepStarted,
    event_to_dict,
)


def now_stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


class TextRenderer:
    """Reference-shaped lines: `[INFO] 2026-02-07 14:30:00 - ...`, PASS/FAIL words, a progress line on a TTY."""

    def __init__(self, out: TextIO | None = None, numbered: bool = False) -> None:
        self.out = out or sys.stdout
        self.numbered = numbered  # verify: "Test 4/8: ..." lines
        self.tty = self.out.isatty()
        self._progress_shown = False
        self._t0: dict[str, float] = {}

    def _clear_progress(self) -> None:
        if self._progress_shown:
            self.out.write("\r\x1b[K")
            self._progress_shown = False

    def __call__(self, event: Event) -> None:
        if isinstance(event, StepProgress):
            if not self.tty:
                return
            self._t0.setdefault(event.step, time.monotonic())
            rate = event.done / max(time.monotonic() - self._t0[event.step], 1e-6)
            if event.unit == "bytes":
                done = humanize.naturalsize(event.done, binary=True)
                total = f" / {humanize.naturalsize(event.total, binary=True)}" if event.total else ""
                text = f"  {done}{total}  {humanize.naturalsize(rate, binary=True)}/s"
            else:
                text = f"  {event.done}{' / ' + str(event.total) if event.total else ''} {event.unit}"
            self.out.write("\r\x1b[K" + text)
            self.out.flush()
            self._progress_shown = True
            return
        self._clear_progress()
        if isinstance(event, StepStarted):
            self._t0[event.step] = time.monotonic()
            if self.numbered and event.total:
                self.out.write(f"[INFO] {now_stamp()} - Test {event.index}/{event.total}: {event.title}...\n")
            else:
                self.out.write(f"[INFO] {now_stamp()} - {event.title}...\n")
        elif isinstance(event, StepLog):
            if event.level == "DEBUG":
                return  # the tools' verbose chatter goes to the run's log file, not the terminal
            self.out.write(f"[{event.level}] {now_stamp()} - {event.line}\n")
        elif isinstance(event, StepFinished):
            tag = {Status.PASS: "PASS", Status.FAIL: "FAIL", Status.WARN: "WARN", Status.SKIP: "SKIP"}[event.status]
            self.out.write(f"[{tag}] {now_stamp()} - {tag}: {event.detail} ({event.seconds:.1f}s)\n")
        self.out.flush()


class JsonRenderer:
    """One JSON object per event on stdout."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout

    def __call__(self, event: Event) -> None:
        self.out.write(json.dumps(event_to_dict(event), default=str) + "\n")
        self.out.flush()

    def summary(self, data: dict) -> None:
        self.out.write(json.dumps({"kind": "summary", **data}, default=str) + "\n")
        self.out.flush()


def renderer(as_json: bool, numbered: bool = False) -> TextRenderer | JsonRenderer:
    return JsonRenderer() if as_json else TextRenderer(numbered=numbered)
