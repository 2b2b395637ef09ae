"""Retention, local and S3: it never deletes what it cannot prove is redundant.

Older than retention_days may go, but only while the newest `keep_last` backups that are
*proven good* stay. Proven good means: its sha256 re-checked against its metadata (S3:
the size and sha256 the store recorded match its metadata object), or, where no sha256
exists, a verification PASS; a backup whose last verification FAILED never counts,
whatever its size. If fewer than `keep_last` can be proven good, nothing past retention
is deleted and the report says why (when unsure, keep).

Never deleted either, whatever their age:
- an artifact someone holds (a restore reading it, see `repo.holds`);
- a pre-restore copy whose restore kept the old database (`<db>_pre_restore_<ts>`): until
  the operator discards that database, the copy may be the way back.

Pre-restore safety copies have their own, shorter retention (the reference's
recommendation: 7 days) and keep the newest one. Every artifact gets a decision with its
reason (`RetentionReport.decisions`, shown by `opstower prune --dry-run`). Leftovers of
killed runs (temp files, open multipart uploads) are cleaned here too (`repo.leaks`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from opstower_core import fmt
from opstower_core.advice import say
from opstower_core.artifacts.names import (
    FUTURE_TOLERANCE,
    ArtifactName,
    created_at,
    parse_name,
    read_metadata,
)
from opstower_core.config import Settings
from opstower_core.repo.holds import Hold, active_holds
from opstower_core.repo.leaks import (
    TEMP_MIN_AGE,
    UPLOAD_MIN_AGE,
    Leftover,
    local_leftovers,
    remove_leftover,
    s3_leftovers,
)
from opstower_core.runs.history import RunRecord, StateStore
from opstower_core.storage.local import LocalStore
from opstower_core.storage.s3 import S3Store

_KEPT_DB_RE = re.compile(r"^(?P<db>.+)_pre_restore_(?P<ts>\d{8}_\d{6})(_\d+)?$")


@dataclass(frozen=True)
class Decision:
    """What retention does with one artifact, and why (one line of `prune --dry-run`)."""

    where: str  # "local" or "s3"
    artifact: str  # file name (local) or key (S3)
    action: str  # "keep" or "delete"
    reason: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class RetentionReport:
    deleted: list[str] = field(default_factory=list)
    kept_for_safety: list[str] = field(default_factory=list)  # past retention, among the newest good
    kept_unproven: list[str] = field(default_factory=list)  # past retention, redundancy not provable
    kept_held: list[str] = field(default_factory=list)  # past retention, held or needed by a restore
    decisions: list[Decision] = field(default_factory=list)
    leftovers: list[Leftover] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    dry_run: bool = False
    s3_error: str | None = None  # S3 retention could not run; local retention still did

    @property
    def cleaned(self) -> list[Leftover]:
        return [item for item in self.leftovers if item.remove]

    @property
    def summary(self) -> str:
        verb = "Would delete" if self.dry_run else "Deleted"
        text = f"{verb} {len(self.deleted)} old backup(s)"
        if self.s3_error:
            text += f"; S3 left untouched ({self.s3_error})"
        if self.kept_for_safety:
            text += f"; kept {len(self.kept_for_safety)} past retention as the newest good backups"
        if self.kept_unproven:
            text += f"; kept {len(self.kept_unproven)} past retention (too few backups proven good to delete them)"
        if self.kept_held:
            text += f"; kept {len(self.kept_held)} past retention (in use)"
        if self.cleaned:
            text += f"; {'would remove' if self.dry_run else 'removed'} {len(self.cleaned)} leftover(s) of killed runs"
        return text


@dataclass
class _Candidate:
    name: ArtifactName
    label: str  # as reported: file name, or "s3:<key>"
    created: datetime
    prove: Callable[[], tuple[bool, str]]  # (proven good, how / why not); called lazily, newest first


def apply_retention(settings: Settings, database: str, dry_run: bool = False, s3: S3Store | None = None,
                    now: datetime | None = None, *, state: StateStore | None = None,
                    kept_databases: Collection[str] | None = None, clean_leftovers: bool = True,
                    temp_min_age: timedelta = TEMP_MIN_AGE, upload_min_age: timedelta = UPLOAD_MIN_AGE,
                    replica: S3Store | None = None) -> RetentionReport:
    """Delete expired artifacts of `database` locally (and in S3 when `s3` is given, and on the
    replica when `replica` is given: the same rules, each copy proven on its own store).

    `kept_databases`: the `<db>_pre_restore_<ts>` databases that exist on the server, when
    the caller could list them; None means unknown (the run history decides, see module doc).
    """
    now = now or datetime.now(UTC)
    report = RetentionReport(dry_run=dry_run)
    if state is None:
        with contextlib.suppress(Exception):  # no state file: no verdicts, the sha256 checks still run
            state = StateStore(settings.state_dir)
    verdicts = state.verdicts() if state is not None else {}
    holds = active_holds(settings, tidy=not dry_run)
    links, kept_dbs = _kept_database_links(state, kept_databases)
    _local_retention(settings, database, now, report, verdicts, holds, links, kept_dbs)
    if clean_leftovers:
        report.leftovers += local_leftovers(settings.backup_dir, now.timestamp(), temp_min_age)
    if s3 is not None:
        try:
            _s3_retention(settings, database, s3, now, report, verdicts, holds)
            if clean_leftovers:
                report.leftovers += s3_leftovers(s3, now, upload_min_age)
        except Exception as exc:  # noqa: BLE001 - an S3 outage must not hide what was done locally
            from opstower_core.storage.s3 import s3_error_text

            report.s3_error = f"S3 retention failed: {s3_error_text(exc)}"
            report.lines.append(f"{report.s3_error}; local retention was applied, S3 was not")
    if replica is not None:
        try:
            _s3_retention(settings, database, replica, now, report, verdicts, holds, where="replica")
        except Exception as exc:  # noqa: BLE001 - the replica down must not hide what was done elsewhere
            from opstower_core.storage.s3 import s3_error_text

            report.s3_error = (report.s3_error + "; " if report.s3_error else "") + \
                f"replica retention failed: {s3_error_text(exc)}"
            report.lines.append(f"Replica retention failed ({s3_error_text(exc)}); the other copies' retention "
                                "was applied")
    _remove_leftovers(report, s3, dry_run)
    return report


# -- local ---------------------------------------------------------------------------------

def _local_retention(settings: Settings, database: str, now: datetime, report: RetentionReport,
                     verdicts: dict[str, RunRecord], holds: dict[str, list[Hold]], links: dict[str, str],
                     kept_dbs: list[str]) -> None:
    store = LocalStore(settings.backup_dir)
    arts = store.artifacts(database)
    if database:  # the reference's pre-restore copies name no database: every target's retention covers them
        arts += [a for a in store.artifacts() if a.name.pre_restore and not a.name.database]
    for pre in (False, True):
        cands = []
        for a in (a for a in arts if a.name.pre_restore == pre):
            meta, problem = read_metadata(store.directory / a.name.meta_filename)
            cands.append(_Candidate(a.name, a.name.filename, created_at(a.name, meta),
                                    _local_proof(a.path, a.size, meta, problem, verdicts.get(a.name.filename))))

        def protect(c: _Candidate) -> str | None:
            db = links.get(c.name.filename) or _kept_db_for(c, kept_dbs)
            return (f"the restore that made it kept the old database {db}; it stays until that database is "
                    f"discarded ({say('discard_old', db=db)})") if db else None

        days = settings.pre_restore_retention_days if pre else settings.retention_days
        decided = _decide(cands, now, days, 1 if pre else settings.keep_last, holds, protect if pre else None,
                          "pre-restore copy" if pre else "backup", show_proofs=report.dry_run)
        for c, v in decided:
            report.decisions.append(Decision("local", c.label, v.action, v.reason))
            _note_kept(report, c.label, v)
            if v.action == "delete":
                if not report.dry_run:
                    store.delete(c.name)
                report.deleted.append(c.label)
    count = sum(1 for d in report.decisions if d.where == "local" and d.action == "delete")
    if count:
        report.lines.insert(0, f"{'Would delete' if report.dry_run else 'Deleted'} {count} old local backup(s)")


def _note_kept(report: RetentionReport, label: str, v: _Verdict) -> None:
    """An artifact kept past retention goes on the report's list for its reason, with a line."""
    if v.kept_as == "safety":
        report.kept_for_safety.append(label)
        report.lines.append(f"Kept {label} past retention: it is one of the newest good backups")
    elif v.kept_as in ("unproven", "held"):
        (report.kept_unproven if v.kept_as == "unproven" else report.kept_held).append(label)
        report.lines.append(f"Kept {label} past retention: {v.reason}")


def _local_proof(path: Any, size: int, meta: dict[str, Any] | None, problem: str | None,
                 verdict: RunRecord | None) -> Callable[[], tuple[bool, str]]:
    def prove() -> tuple[bool, str]:
        if verdict is not None and verdict.status == "FAIL":
            return False, f"its last verification FAILED ({fmt.when(verdict.finished_at)})"
        passed = verdict is not None and verdict.status == "PASS"
        if meta is None:  # the reference's pre-restore copies have none: a verification can still prove them
            return (True, "verified PASS") if passed else (False, f"{problem or 'no metadata'} and never verified")
        try:
            recorded = int(meta.get("size_bytes", meta.get("backup_size")))
        except (TypeError, ValueError):
            return False, "its metadata records no size"
        if recorded != size:
            return False, "its size differs from its metadata"
        expected = meta.get("sha256")
        if isinstance(expected, str) and expected:
            try:
                with open(path, "rb") as fh:
                    actual = hashlib.file_digest(fh, "sha256").hexdigest()
            except OSError as exc:
                return False, f"unreadable ({exc.strerror})"
            if actual != expected:
                return False, "its sha256 does not match its metadata"
            return True, "sha256 re-checked" + (", verified PASS" if passed else "")
        if passed:
            return True, "verified PASS"
        return False, "no sha256 in its metadata and never verified"

    return prove


# -- the decision, the same for every group ---------------------------------------------------

@dataclass(frozen=True)
class _Verdict:
    action: str
    reason: str
    kept_as: str | None = None  # past retention yet kept: "safety" (newest good), "unproven", "held"


def _decide(cands: list[_Candidate], now: datetime, days: int, keep_last: int, holds: dict[str, list[Hold]],
            protect: Callable[[_Candidate], str | None] | None, kind: str,
            show_proofs: bool = False) -> list[tuple[_Candidate, _Verdict]]:
    """A keep/delete verdict for each candidate, newest first."""
    cutoff = now - timedelta(days=days)
    newest_first = sorted(cands, key=lambda c: (c.created, c.label), reverse=True)
    # The newest keep_last proven good; proofs (a sha256 each) stop as soon as there are enough.
    good: dict[str, str] = {}
    bad: dict[str, str] = {}
    # A proof only decides whether something past retention is redundant. With nothing past retention
    # that could go (the usual hourly run), none is made: each re-reads a whole artifact (0.5 s of a
    # 6 s backup at 0.6 GB, issue 18). A dry run shows them anyway: the operator asked for every reason.
    prove = show_proofs or any(
        c.created < cutoff and not holds.get(c.name.filename) and not (protect and protect(c)) for c in cands)
    for c in newest_first if prove else ():
        if len(good) >= keep_last:
            break
        ok, how = c.prove()
        (good if ok else bad)[c.label] = how
    enough = len(good) >= keep_last
    out = []
    for c in newest_first:
        age = (now - c.created).total_seconds()
        expired = c.created < cutoff
        held = holds.get(c.name.filename)
        needed = protect(c) if protect else None
        if held:
            v = _Verdict("keep", "; ".join(h.describe() for h in held))
        elif needed:
            v = _Verdict("keep", needed)
        elif c.label in good:
            v = _Verdict("keep", f"one of the newest {keep_last} good {kind}s ({good[c.label]})"
                         + (f", {fmt.duration(age)} old" if expired else ""))
        elif c.created > now + FUTURE_TOLERANCE:
            v = _Verdict("keep", f"dated {fmt.duration(-age)} in the future (a wrong clock?): not deleted, "
                         "never 'latest'")
        elif not expired:
            v = _Verdict("keep", f"{fmt.duration(age)} old, within retention ({days} days)"
                         + (f"; not good: {bad[c.label]}" if c.label in bad else ""))
        elif not enough:
            v = _Verdict("keep", f"{fmt.duration(age)} old, past retention ({days} days), but only {len(good)} of the "
                         f"newest {keep_last} {kind}s could be proven good, so none is redundant"
                         + (f" (this one: {bad[c.label]})" if c.label in bad else "")
                         + f"; take a new backup or {say('verify_any')}")
        else:
            v = _Verdict("delete", f"{fmt.duration(age)} old, past retention ({days} days); the newest {keep_last} "
                         f"good {kind}s are kept" + (f"; this one: {bad[c.label]}" if c.label in bad else ""))
        if v.action == "keep" and expired:
            kept_as = "held" if held or needed else "safety" if c.label in good else "unproven"
            v = _Verdict(v.action, v.reason, kept_as)
        out.append((c, v))
    return out


# -- pre-restore copies and the databases their restores kept --------------------------------------

def _kept_database_links(state: StateStore | None, kept_databases: Collection[str] | None
                         ) -> tuple[dict[str, str], list[str]]:
    """(pre-restore artifact -> the old database its restore kept and that still exists, kept databases).

    The server's own list (`kept_databases`) says what exists, when the caller could read it;
    otherwise the run history does: kept by a swap and not discarded since.
    """
    links: dict[str, str] = {}
    if state is not None:
        try:
            discarded = {r.database: r.started_at for r in state.runs("discard_old", limit=5000)}
            for r in reversed(state.runs("restore", limit=5000)):
                art, old = r.details.get("pre_restore_artifact"), r.details.get("old_database")
                if not art or not old:
                    continue
                exists = old in kept_databases if kept_databases is not None else discarded.get(old, 0) < r.started_at
                if exists:
                    links[art] = old
        except Exception:  # noqa: BLE001 - a damaged history: the server's list still protects by name
            pass
    return links, list(kept_databases or ())


def _kept_db_for(c: _Candidate, kept_dbs: list[str]) -> str | None:
    """A kept database of the same database made within a day of this copy (a restore whose record was lost)."""
    for db in kept_dbs:
        m = _KEPT_DB_RE.match(db)
        if not m or not c.name.database or not c.name.database.startswith(m["db"]):
            continue  # a long name is cut to fit 63 bytes: a prefix counts
        try:
            made = datetime.strptime(m["ts"], "%Y%m%d_%H%M%S").astimezone()
        except ValueError:
            continue
        if abs((made - c.created).total_seconds()) <= 86400:
            return db
    return None


# -- S3 ------------------------------------------------------------------------------------------

def _s3_retention(settings: Settings, database: str, s3: S3Store, now: datetime, report: RetentionReport,
                  verdicts: dict[str, RunRecord], holds: dict[str, list[Hold]], where: str = "s3") -> None:
    # The replica is labelled "replica:<key>" so a report never confuses its copies with the primary's.
    tag = "s3" if where == "s3" else "replica"
    keys: dict[str, str] = {}
    names: list[ArtifactName] = []
    metas: set[str] = set()
    for obj in s3.iter_objects():
        base = obj.key.rsplit("/", 1)[-1]
        if base.endswith(".meta.json"):
            metas.add(obj.key)
            continue
        name = parse_name(base)
        if name and name.database == database and not name.pre_restore:
            names.append(name)
            keys[name.filename] = obj.key
    cands = [_Candidate(n, f"{tag}:{keys[n.filename]}", n.created,
                        _s3_proof(s3, keys[n.filename], n, metas, verdicts.get(n.filename))) for n in names]
    decided = _decide(cands, now, settings.retention_days, settings.keep_last, holds, None, "backup",
                      show_proofs=report.dry_run)
    for c, v in decided:
        key = keys[c.name.filename]
        report.decisions.append(Decision(where, key, v.action, v.reason))
        # kept_for_safety has always named S3 copies by file name ("s3:<file>"), deleted ones by key.
        _note_kept(report, f"{tag}:{c.name.filename}" if v.kept_as == "safety" else c.label, v)
        if v.action != "delete":
            continue
        folder = key.rsplit("/", 1)[0]
        if not report.dry_run:
            for fn in (c.name.filename, c.name.meta_filename, c.name.globals_filename):
                s3.delete(f"{folder}/{fn}")
        report.deleted.append(c.label)
        report.lines.append(f"{'Would delete' if report.dry_run else 'Deleted'} old "
                            f"{'S3' if where == 's3' else 'replica'} backup: {key}")


def _s3_proof(s3: S3Store, key: str, name: ArtifactName, metas: set[str],
              verdict: RunRecord | None) -> Callable[[], tuple[bool, str]]:
    def prove() -> tuple[bool, str]:
        if verdict is not None and verdict.status == "FAIL":
            return False, f"its last verification FAILED ({fmt.when(verdict.finished_at)})"
        meta_key = key.rsplit("/", 1)[0] + "/" + name.meta_filename
        if meta_key not in metas:  # the upload writes it last: without it the upload never finished
            return False, "no metadata object beside it"
        try:
            meta = json.loads(s3.get_bytes(meta_key))
            head = s3.head(key)
        except Exception:  # noqa: BLE001 - unreadable is not proven
            return False, "its metadata object could not be read"
        if not isinstance(meta, dict) or head is None:
            return False, "its metadata object is not valid"
        size, expected = meta.get("size_bytes"), meta.get("sha256")
        if size is not None and str(size) != str(head.get("ContentLength")):
            return False, "its size differs from its metadata"
        if isinstance(expected, str) and expected:
            recorded = s3.remote_sha256(key, head)
            if recorded == expected and size is not None:
                return True, "size and the sha256 recorded at upload match its metadata"
            if recorded and recorded != expected:
                return False, "the sha256 recorded at upload differs from its metadata"
        if verdict is not None and verdict.status == "PASS":
            return True, "verified PASS"
        return False, "no sha256 recorded to check it against, and never verified"

    return prove


# -- leftovers --------------------------------------------------------------------------------------

def _remove_leftovers(report: RetentionReport, s3: S3Store | None, dry_run: bool) -> None:
    for item in report.cleaned:
        name = item.what.rsplit("/", 1)[-1] if item.where == "local" else f"s3:{item.what} (upload {item.upload_id})"
        if not dry_run:
            try:
                remove_leftover(item, s3)
            except Exception as exc:  # noqa: BLE001 - a leftover that cannot go is reported, not fatal
                item.remove, item.reason = False, f"could not be removed ({getattr(exc, 'strerror', None) or exc})"
                report.lines.append(f"Could not remove {name}: {item.reason}")
                continue
        report.lines.append(f"{'Would remove' if dry_run else 'Removed'} {name} ({item.reason})")
