"""A restore never loses its own source to the retention its pre-restore backup applies."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from opstower_core.restore import RestoreOptions, plan_restore, run_restore
from support.restore import make_live, plain_sql, write_artifact


def test_restoring_a_45_day_old_backup_keeps_it_through_the_pre_restore_retention(pg, make_settings, source) -> None:
    live = make_live(pg, make_settings, source=source, damage=False)
    sql, meta = plain_sql(live)
    stamp = (datetime.now(UTC) - timedelta(days=45)).strftime("%Y%m%d_%H%M%SZ")
    old = write_artifact(live.settings.backup_dir, live.db, stamp, sql, meta)
    # Retention would delete it: past 30 days, and the fresh backup of the fixture is the newest good one.
    settings = replace(live.settings, retention_days=30, keep_last=1)
    live.damage()
    plan = plan_restore(settings, str(old), options=RestoreOptions(force=True))
    result = run_restore(settings, plan)
    assert result.ok, result.sentence
    assert old.exists() and old.with_name(old.name.replace(".sql.gz", ".meta.json")).exists()
    assert live.now() == live.backed_up
    assert result.pre_restore_artifact  # the pre-restore backup (and its retention) did run
