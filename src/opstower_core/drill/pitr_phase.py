"""The drill phase `pitr_latest`: recover the WAL archive to its end and measure the data lost.

The archive is recovered into a scratch cluster (pitr.recover_to: the newest base backup plus
every archived segment, then promoted); the heartbeat row that `opstower pitr heartbeat` writes
every minute is read back there, and the live server's own heartbeat and clock are read at the
same moment. The recovered heartbeat's age is the achieved data-loss window: what a server loss
now would cost, measured rather than assumed from a dump's age. The scratch cluster is always
discarded; the live server is only read.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from opstower_core.config import Settings, Target
from opstower_core.drill.state import Drill
from opstower_core.errors import OpsError
from opstower_core.events import CancelToken, Event, EventSink, Status, StepFinished, StepStarted
from opstower_core.fmt import duration

if TYPE_CHECKING:
    from opstower_core.pitr import ScratchCluster

NOT_CONFIGURED = "RPO not measured: point-in-time recovery not configured"


def run_pitr_phase(settings: Settings, drill: Drill, on_event: EventSink | None,
                   cancel: CancelToken) -> tuple[str | None, str, dict[str, Any]]:
    """Recover to latest in a scratch cluster, read the heartbeat back, discard the cluster.

    (status, one-line detail, {"pitr": measurement}); SKIP when [pitr] is not configured.
    """
    if not settings.pitr.enabled:
        return "SKIP", NOT_CONFIGURED, {"pitr": {"configured": False}}
    from opstower_core.pitr import RecoveryTarget, recover_to

    cancel.check()
    emit = on_event or (lambda _e: None)
    steps: list[dict[str, Any]] = []
    titles: dict[str, str] = {}

    def relay(event: Event) -> None:
        # Kept for the report: each recovery step with its time (download, replay, heartbeat, discard).
        if isinstance(event, StepStarted):
            titles[event.step] = event.title
        elif isinstance(event, StepFinished):
            steps.append({"step": event.step, "title": titles.get(event.step, event.step),
                          "status": event.status.value, "detail": event.detail, "seconds": round(event.seconds, 3)})
        emit(event)

    live = settings.target(drill.target_name)
    data: dict[str, Any] = {"configured": True, "server_name": settings.pitr.server_name, "steps": steps}
    started = time.monotonic()
    try:
        cluster = recover_to(settings, live, RecoveryTarget(), relay)
    except OpsError as exc:
        data["error"] = exc.sentence
        return "FAIL", f"The recovery to latest failed: {exc.sentence}", {"pitr": data}
    data.update(backup_id=cluster.backup_id, reached=cluster.reached,
                recovery_seconds=round(time.monotonic() - started, 3))
    import psycopg

    try:
        if cancel.cancelled:  # recover_to itself cannot be interrupted: the cancel is honoured once it returns
            return None, "cancelled after the recovery; the scratch cluster was discarded", {"pitr": data}
        data.update(_measure(cluster.target(drill.database), live, relay))
    except (OpsError, psycopg.Error) as exc:
        why = getattr(exc, "sentence", None) or str(exc).strip().splitlines()[0]
        data["error"] = why
        return "FAIL", f"Recovered to latest ({cluster.reached}), but reading the heartbeat back failed: {why}", \
            {"pitr": data}
    finally:
        _discard(cluster, relay)
    data["seconds"] = round(time.monotonic() - started, 3)
    recovered = (f"Recovered the WAL archive to latest ({data['reached']}, base backup {data['backup_id']}) "
                 f"in {duration(data['recovery_seconds'])}")
    if data["heartbeat"] is None:
        return "WARN", (f"{recovered}, but {drill.database} holds no heartbeat there: RPO not measured "
                        "(schedule the minute heartbeat)"), {"pitr": data}
    live_part = (f"the live server's heartbeat was {duration(data['live_age_seconds'])} old then"
                 if data["live_age_seconds"] is not None else f"live heartbeat not read: {data['live_note']}")
    return "PASS", (f"{recovered}; newest heartbeat recovered {data['heartbeat']}: data-loss window "
                    f"{duration(data['window_seconds'])} ({live_part})"), {"pitr": data}


def _measure(recovered: Target, live: Target, emit: EventSink) -> dict[str, Any]:
    """The heartbeat in the recovered database, and the live server's heartbeat and clock right after."""
    from opstower_core.pitr import read_heartbeat

    step = "heartbeat"
    emit(StepStarted(step, f"Reading the heartbeat back from the recovered {recovered.dbname} and the live server"))
    t0 = time.monotonic()
    try:
        beat = read_heartbeat(recovered)
    except Exception as exc:  # noqa: BLE001 - shown as the step's FAIL, then handled by the phase
        emit(StepFinished(step, Status.FAIL, getattr(exc, "sentence", None) or str(exc), time.monotonic() - t0))
        raise
    read_at = datetime.now(UTC)
    live_beat, live_now, note = _live_clock(live)
    # The window is counted on the live server's clock, the one that wrote the heartbeat (no clock skew
    # between the drill's host and the server); this host's clock when the live server cannot be read.
    now = live_now or read_at
    out: dict[str, Any] = {
        "heartbeat": _iso(beat), "heartbeat_ts": beat.timestamp() if beat else None, "live_heartbeat": _iso(live_beat), "read_at": _iso(now),
        "clock": "live server" if live_now else "this host", "live_note": note,
        "window_seconds": round((now - beat).total_seconds(), 3) if beat else None,
        "live_age_seconds": round((now - live_beat).total_seconds(), 3) if live_beat else None,
        # What the archive lacked compared with the live server, to the heartbeat's one-minute grain.
        "behind_live_seconds": round((live_beat - beat).total_seconds(), 3) if beat and live_beat else None,
    }
    if beat is None:
        emit(StepFinished(step, Status.WARN, f"no heartbeat in the recovered {recovered.dbname}", time.monotonic() - t0))
    else:
        emit(StepFinished(step, Status.PASS, f"recovered heartbeat {out['heartbeat']}, "
                          f"{duration(out['window_seconds'])} old", time.monotonic() - t0, out))
    return out


def _live_clock(live: Target) -> tuple[datetime | None, datetime | None, str]:
    """(live heartbeat, live server's now, note): the server may be the one the drill pretends lost."""
    import psycopg

    from opstower_core.pg.tools import connect
    from opstower_core.pitr import read_heartbeat

    try:
        beat = read_heartbeat(live)
        with connect(live) as conn:
            now = conn.execute("SELECT clock_timestamp()").fetchone()[0]
    except OpsError as exc:
        return None, None, exc.sentence
    except psycopg.Error as exc:
        return None, None, str(exc).strip().splitlines()[0]
    return beat, now, "" if beat else f"no heartbeat in {live.dbname} on the live server"


def _discard(cluster: ScratchCluster, emit: EventSink) -> None:
    step = "discard"
    emit(StepStarted(step, f"Discarding the scratch cluster (port {cluster.port})"))
    t0 = time.monotonic()
    try:
        cluster.discard()
    except Exception as exc:  # noqa: BLE001 - reported; the measurement stands
        emit(StepFinished(step, Status.WARN, f"{cluster.directory} not removed: {exc}", time.monotonic() - t0))
        return
    emit(StepFinished(step, Status.PASS, f"{cluster.directory} removed", time.monotonic() - t0))


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(sep=" ", timespec="seconds") if value else None
