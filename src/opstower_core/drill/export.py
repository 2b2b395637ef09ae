"""Exporting a drill's markdown report, and telling the team about it.

The notification never fails the export: a broken [notify] table or an unreachable
endpoint is logged, and the report is written all the same.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from opstower_core.config import Settings
from opstower_core.drill.state import Drill, DrillStore
from opstower_core.errors import OpsError

LOG = logging.getLogger("opstower.drill")


def export_report(settings: Settings, drill: Drill | int | str, path: Path | str) -> Path:
    """Write the drill's markdown report to `path` and send a "drill" notification (never fails on it)."""
    from opstower_core.drill.report import render_drill_report

    d = drill if isinstance(drill, Drill) else DrillStore(settings.state_dir).load(drill)
    out = Path(path).expanduser()
    text = render_drill_report(d)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
    except OSError as exc:
        raise OpsError(f"Cannot write the report to {out} ({exc.strerror})", "the drill itself is saved",
                       "choose another path with -o") from None
    _notify_export(settings, d, out)
    return out


def _notify_export(settings: Settings, d: Drill, out: Path) -> None:
    try:
        from opstower_core.alerts import Notification, Notifier

        status = {"passed": "success", "failed": "failed", "aborted": "warning"}.get(d.status, "warning")
        s = d.summary()
        title = f"OpsTower DR drill {d.status.upper()}: {d.scenario.name} on {d.database}"
        message = (f"Drill {d.id} report exported to {out}. RTO {'met' if s['rto_met'] else 'MISSED'}, "
                   f"RPO {'met' if s['rpo_met'] else 'MISSED'}"
                   + (f"; failed phases: {', '.join(s['failed_phases'])}" if s["failed_phases"] else "") + ".")
        # Forced past the on_success policy: an exported report is a deliberate, rare event the team
        # should hear about, unlike an hourly backup that went fine.
        Notifier.from_settings(settings).notify(Notification(event="drill", status=status, title=title,
                                                             message=message, database=d.database,
                                                             details={**s, "report": str(out)}), force=True)
    except Exception:  # noqa: BLE001 - a notification never fails the export
        LOG.warning("drill report notification failed", exc_info=True)

