"""A plan step that runs beside the others (the swap's pre-restore backup beside the staging load).

The plan names the steps it runs beside (PlannedStep.parallel_with). It starts in a thread with
its own timing and events, and the run joins it before the first step that is not one of
those: in a swap, before any session of the live database is cut off. A failure of the step is
raised there, so the run rolls back exactly as if the step had run in line. The step's
`waited` (seconds the run spent waiting at the join) is what it added to the restore's clock.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from opstower_core.errors import Cancelled
from opstower_core.events import Status, StepOutcome
from opstower_core.restore.context import RunContext, Step
from opstower_core.restore.model import PlannedStep


@dataclass
class Beside:
    """One step running in its own thread."""

    step: PlannedStep
    thread: threading.Thread
    error: list[BaseException] = field(default_factory=list)


def start(ctx: RunContext, step: PlannedStep, run: Step, index: int, total: int) -> Beside:
    """Start `step` in a thread, timed and reported like any step (its start is announced here, so a
    cancel asked for at that moment is seen by the run before its next step)."""
    r = ctx.reporter
    ran = [s.id for s in ctx.plan.steps if s.id in step.parallel_with and not s.skip]
    r.started(step.id, step.title, index, total)
    t0 = time.monotonic()

    def body() -> None:
        out = StepOutcome()
        try:
            run(ctx, out)
        except Cancelled as exc:
            out.data["parallel_with"] = ran
            r.finished(step.id, Status.SKIP, "cancelled", time.monotonic() - t0, out.data)
            beside.error.append(exc)
            return
        except BaseException as exc:  # noqa: BLE001 - raised in the run's thread at the join
            detail = getattr(exc, "sentence", None) or str(exc) or type(exc).__name__
            out.data["parallel_with"] = ran
            r.finished(step.id, Status.FAIL, detail, time.monotonic() - t0, out.data)
            beside.error.append(exc)
            return
        out.data["parallel_with"] = ran  # set last: a step may replace its data
        r.finished(step.id, out.status, f"{out.detail} (ran in parallel with: {', '.join(ran)})",
                   time.monotonic() - t0, out.data)

    beside = Beside(step, threading.Thread(target=body, name=f"restore-{step.id}", daemon=True))
    beside.thread.start()
    return beside


def due(beside: Beside, next_step: str) -> bool:
    """Whether the run must join `beside` before `next_step`."""
    return next_step not in beside.step.parallel_with


def join(ctx: RunContext, beside: Beside) -> None:
    """Wait for the step; record how long the run waited; raise its failure here."""
    t0 = time.monotonic()
    while beside.thread.is_alive():
        beside.thread.join(0.1)  # the step honours ctx.cancel itself
    waited = time.monotonic() - t0
    for result in reversed(ctx.reporter.results):
        if result.step == beside.step.id:
            result.data["waited"] = round(waited, 3)
            break
    if beside.error:
        ctx.current_step = beside.step.id  # the sentence names the step that failed
        raise beside.error[0]


def stop(ctx: RunContext, besides: list[Beside]) -> None:
    """After a failure elsewhere: stop the steps still running and wait for them, so the rollback runs alone."""
    running = [b for b in besides if b.thread.is_alive()]
    if running:
        ctx.cancel.cancel()
    for b in running:
        b.thread.join()
