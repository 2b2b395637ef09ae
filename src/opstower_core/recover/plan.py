"""Which tables a recovery touches, in which order, and what it does to each (before any row is
compared): read from the source's and the live catalog."""

from __future__ import annotations

import psycopg

from opstower_core.advice import say
from opstower_core.errors import UsageError
from opstower_core.recover.model import MODES, RecoverOptions, TablePlan
from opstower_core.recover.stage import Work
from opstower_core.recover.tables import (
    TableInfo,
    TableKey,
    label,
    list_tables,
    parent_first,
    read_table,
    resolve_names,
)

_ON_DELETE = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}


def check_options(o: RecoverOptions) -> RecoverOptions:
    if o.mode not in MODES:
        raise UsageError(f"{say('opt_mode', mode=o.mode)} is not one of {', '.join(MODES)}", "nothing was changed", "")
    if o.mode != "merge" and (o.overwrite_changed or o.with_parents):
        raise UsageError(f"{say('opt_overwrite')} and {say('opt_with_parents')} belong to "
                         f"{say('opt_mode', mode='merge')}", "nothing was changed", "")
    if o.into and o.mode != "copy":
        raise UsageError(f"{say('opt_into')} belongs to {say('opt_mode', mode='copy')}", "nothing was changed", "")
    if o.mode == "copy" and len([t for t in o.tables if t.strip()]) != 1:
        raise UsageError(f"{say('opt_mode', mode='copy')} takes one table at a time", "nothing was changed", "")
    return o


def plan_works(src: psycopg.Connection, live: psycopg.Connection, o: RecoverOptions) -> tuple[list[Work], list[str]]:
    """The tables of the recovery, parent first, each with its action and plan; and notes."""
    src_tables, live_tables = list_tables(src), list_tables(live)
    keys = resolve_names(o.tables, src_tables, live_tables)
    notes: list[str] = []
    for k in keys:
        if k not in src_tables:
            raise UsageError(f"Table {label(k)} is not in the backup (it was created after it)", "nothing was changed",
                             "pick a later backup, or leave the table out")
    srcs = {k: read_table(src, k, src_tables[k]) for k in keys}
    lives = {k: read_table(live, k, live_tables[k]) for k in keys if k in live_tables}
    requested = set(keys)
    if o.with_parents:
        _add_parents(src, live, src_tables, live_tables, srcs, lives, notes)
    infos: dict[TableKey, TableInfo] = {k: lives.get(k) or srcs[k] for k in srcs}
    order, cycles = parent_first(infos)
    for a, b in cycles:
        notes.append(f"{label(a)} and {label(b)} reference each other: rows go in {label(b)} first; a foreign key "
                     "between them that is not DEFERRABLE may refuse a row (then nothing is changed)")
    works = []
    for n, k in enumerate(order, 1):
        w = Work(k, srcs[k], lives.get(k), "", k in requested, n)
        w.plan = TablePlan(label(k), "", requested=w.requested, kind=(w.live or w.src).kind if (w.live or w.src)
                           else "table")
        _decide(w, o, live_tables)
        w.action = w.plan.action
        works.append(w)
    return works, notes


def _add_parents(src: psycopg.Connection, live: psycopg.Connection, src_tables: dict, live_tables: dict,
                 srcs: dict[TableKey, TableInfo], lives: dict[TableKey, TableInfo], notes: list[str]) -> None:
    todo = list(lives.values())
    while todo:
        info = todo.pop()
        for fk in info.fks:
            p = fk.parent
            if p in srcs or p == info.key:
                continue
            if p not in src_tables:
                notes.append(f"{label(p)} (parent of {info.name}) is not in the backup: its rows cannot be pulled in")
                continue
            if p not in live_tables:
                notes.append(f"{label(p)} (parent of {info.name}) does not exist live: "
                             + say("recover_parent", table=label(p)))
                continue
            srcs[p] = read_table(src, p, src_tables[p])
            lives[p] = read_table(live, p, live_tables[p])
            todo.append(lives[p])


def _decide(w: Work, o: RecoverOptions, live_tables: dict[TableKey, str]) -> None:
    p, src, live = w.plan, w.src, w.live
    assert p is not None and src is not None
    if o.mode == "copy":
        into = o.into or f"{w.key[0]}.{w.key[1]}_restored"
        if "." not in into:
            into = f"{w.key[0]}.{into}"
        p.action, p.into = "copy", into
        schema, _, name = into.partition(".")
        if (schema, name) in live_tables:
            _block(w, f"{into} exists live; {say('recover_into_other')}")
        return
    if live is None:
        p.action = "restore"
        p.notes.append("dropped since the backup: restored whole, with its indexes, constraints, triggers, grants, "
                       "comments and owned sequences, and the foreign keys of live tables that pointed at it")
        return
    p.action = o.mode
    p.key, p.key_name = live.key_columns, live.key_name
    src_cols = {c.name for c in src.columns}
    w.columns = [c.name for c in live.columns if not c.generated and c.name in src_cols]
    gone = [c.name for c in src.columns if c.name not in {x.name for x in live.columns}]
    if gone:
        p.notes.append(f"backup columns no longer live, not restored: {', '.join(gone)}")
    new = [c.name for c in live.columns if c.name not in src_cols and not c.generated]
    if new:
        p.notes.append(f"live columns the backup lacks (their defaults fill inserted rows): {', '.join(new)}")
    required = [c.name for c in live.columns if c.name not in src_cols and c.not_null and not c.has_default
                and not c.generated]
    if required:
        _block(w, f"live NOT NULL columns without a default are not in the backup: {', '.join(required)}")
        return
    if live.key_columns is None:
        if o.mode == "merge":
            _block(w, "no primary key or unique key of NOT NULL columns: rows cannot be matched, so this table can "
                      f"only be replaced ({say('opt_mode', mode='replace')})")
            return
        p.notes.append("no primary key or unique key of NOT NULL columns: every live row is replaced")
    elif not set(live.key_columns) <= set(w.columns):
        _block(w, f"its key ({', '.join(live.key_columns)}) is not in the backup's columns")
        return
    if live.kind == "partitioned":
        p.notes.append("partitioned: rows go through the partitioned table into their partitions")
    _triggers(w, o)
    if o.mode == "replace":
        for fk in live.children:
            p.notes.append(f"rows deleted here are checked by {label(fk.table)}'s foreign key {fk.name} "
                           f"(ON DELETE {_ON_DELETE.get(fk.on_delete, fk.on_delete)})")


def _triggers(w: Work, o: RecoverOptions) -> None:
    assert w.plan is not None and w.live is not None
    events = {"INSERT"} | ({"UPDATE"} if o.overwrite_changed or o.mode == "replace" else set()) | (
        {"DELETE"} if o.mode == "replace" else set())
    firing = [f"{t.name} ({t.timing} {'/'.join(e for e in t.events if e in events)})" for t in w.live.triggers
              if t.enabled and events & set(t.events)]
    if not firing:
        return
    if o.disable_triggers:
        w.plan.notes.append(f"triggers disabled for the load ({say('opt_disable_triggers')}): {', '.join(firing)}")
    else:
        w.plan.triggers = firing
        w.plan.notes.append(f"triggers that fire for the recovered rows: {', '.join(firing)} "
                            f"({say('opt_disable_triggers')} keeps them from firing)")


def _block(w: Work, why: str) -> None:
    assert w.plan is not None
    w.action = w.plan.action = "blocked"
    w.plan.notes.append(why)
