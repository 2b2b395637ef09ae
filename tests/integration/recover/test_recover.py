"""Table recovery against the real server: merge after DELETE/UPDATE/TRUNCATE, replace after
DROP TABLE, a table without a key, a partitioned table, a copy under another name."""

from __future__ import annotations

import pytest

from opstower_core.errors import UsageError
from opstower_core.recover import RecoverOptions, preview_recovery, run_recovery
from opstower_core.repo.catalog import list_catalog


def _run(env, **kw):
    kw.setdefault("force", True)
    result = run_recovery(env.settings, str(env.artifact), RecoverOptions(**kw))
    return result


def _table(plan_or_result, name):
    rows = plan_or_result.tables
    return next(t for t in rows if t.table == name)


def test_delete_30_percent_then_merge_brings_them_back_and_keeps_new_rows(env):
    env.sql("DELETE FROM orders WHERE id % 10 < 3")  # 600 of 2000
    env.sql("INSERT INTO orders (customer_id, total, note) VALUES (1, 9.99, 'written after the backup')")
    env.sql("DELETE FROM events WHERE id % 4 = 0")  # both partitions
    plan = preview_recovery(env.settings, str(env.artifact), RecoverOptions(tables=["orders", "public.events"]))
    orders = _table(plan, "public.orders")
    assert (orders.backup_rows, orders.live_rows, orders.missing, orders.changed, orders.only_live) == \
        (2000, 1401, 600, 0, 1)
    assert orders.insert == 600 and orders.key == ["id"]
    assert any("orders_audit" in t for t in orders.triggers)  # said which trigger fires
    events = _table(plan, "public.events")
    assert events.kind == "partitioned" and events.missing == 150
    assert env.one("SELECT count(*) FROM orders") == 1401  # the preview changed nothing

    logged = env.one("SELECT count(*) FROM audit_log")
    result = _run(env, tables=["orders", "public.events"])
    assert result.ok, result.sentence
    assert _table(result, "public.orders").inserted == 600 and _table(result, "public.events").inserted == 150
    assert all(t.proven for t in result.tables)
    assert env.one("SELECT count(*) FROM orders") == 2001
    assert env.one("SELECT count(*) FROM orders WHERE note = 'written after the backup'") == 1
    assert env.one("SELECT count(*) FROM events_2025") + env.one("SELECT count(*) FROM events_2026") == 600
    # the trigger fired for the rows that came back (not disabled unless asked)
    assert env.one("SELECT count(*) FROM audit_log") == logged + 600
    # sequences are not behind the ids put back
    env.sql("INSERT INTO orders (customer_id, total) VALUES (2, 1)")
    env.sql("INSERT INTO events (at, what) VALUES ('2026-02-02', 'new')")
    # the pre-change copy is a listed, restorable artifact of just those tables
    pre = result.pre_change_artifact
    assert pre and pre.startswith(f"pre_restore_{env.db}_")
    entry = next(e for e in list_catalog(env.settings, database=env.db).entries if e.filename == pre)
    assert sorted(entry.meta["row_counts"]) == ["public.events_2025", "public.events_2026", "public.orders"]
    assert entry.meta["row_counts"]["public.orders"] == 1401
    assert not [d for (d,) in env.sql("SELECT datname FROM pg_database WHERE datname LIKE %s",
                                      (env.db + "\\_recover\\_%",))]  # scratch dropped


def test_update_gone_wrong_then_merge_with_overwrite_changed(env):
    before = env.sql("SELECT id, total FROM orders WHERE id <= 100 ORDER BY id")
    env.sql("UPDATE orders SET total = -1 WHERE id <= 100")
    logged = env.one("SELECT count(*) FROM audit_log")
    plain = _run(env, tables=["orders"], disable_triggers=True)
    assert plain.ok and _table(plain, "public.orders").updated == 0
    assert env.one("SELECT count(*) FROM orders WHERE total = -1 AND id <= 100") == 100
    assert _table(plain.plan, "public.orders").changed == 100
    result = _run(env, tables=["orders"], overwrite_changed=True, disable_triggers=True)
    assert result.ok, result.sentence
    t = _table(result, "public.orders")
    assert (t.inserted, t.updated) == (0, 100) and "backup's values" in t.proof
    assert env.sql("SELECT id, total FROM orders WHERE id <= 100 ORDER BY id") == before
    assert env.one("SELECT count(*) FROM audit_log") == logged  # triggers were disabled for the load
    assert env.one("SELECT count(*) FROM pg_trigger WHERE tgname = 'orders_audit' AND tgenabled = 'O'") == 1


def test_truncate_of_a_parent_with_children_comes_back_parent_first(env):
    env.sql("TRUNCATE customers CASCADE")  # orders go too
    result = _run(env, tables=["orders"], with_parents=True)
    assert result.ok, result.sentence
    names = [t.table for t in result.plan.tables]
    assert names.index("public.customers") < names.index("public.orders")  # parent first
    assert not _table(result.plan, "public.customers").requested
    assert env.one("SELECT count(*) FROM orders") == 2000
    assert env.one("SELECT count(*) FROM customers") == 200  # every customer has orders
    assert env.one("SELECT count(*) FROM customers WHERE favourite_order IS NOT NULL") == 50


def test_drop_table_then_replace_brings_back_indexes_keys_trigger_and_grants(env):
    env.sql("DROP TABLE orders CASCADE")  # takes customers_favourite_fk and the owned sequence with it
    plan = preview_recovery(env.settings, str(env.artifact), RecoverOptions(tables=["orders"], mode="replace"))
    assert _table(plan, "public.orders").action == "restore"
    result = _run(env, tables=["orders"], mode="replace")
    assert result.ok, result.sentence
    # A plain table is its own one leaf: the digests compare its 2,000 rows (once they compared nothing).
    assert _table(result, "public.orders").inserted == 2000
    assert "digest equal to the backup's (2,000 rows" in _table(result, "public.orders").proof
    assert env.one("SELECT count(*) FROM orders") == 2000
    assert {r[0] for r in env.sql("SELECT indexname FROM pg_indexes WHERE tablename = 'orders'")} == \
        {"orders_pkey", "orders_customer_idx"}
    cons = {r[0] for r in env.sql("SELECT conname FROM pg_constraint WHERE conrelid IN ('orders'::regclass, "
                                  "'customers'::regclass) AND contype = 'f' AND convalidated")}
    assert cons == {"orders_customer_id_fkey", "customers_favourite_fk"}
    assert env.one("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'orders'::regclass AND tgname = 'orders_audit'") == 1
    grants = {(g, p) for g, p in env.sql("SELECT grantee, privilege_type FROM information_schema.role_table_grants "
                                         "WHERE table_name = 'orders' AND grantee LIKE 'rec_%'")}
    assert grants == {("rec_reader", "SELECT"), ("rec_writer", "SELECT"), ("rec_writer", "INSERT"),
                      ("rec_writer", "UPDATE")}
    assert env.one("SELECT obj_description('orders'::regclass)") == "customer orders"
    env.sql("INSERT INTO orders (customer_id) VALUES (1)")  # the sequence is back and ahead
    assert env.one("SELECT max(id) FROM orders") == 2001


def test_replace_of_an_existing_table_removes_rows_written_since(env):
    env.sql("DELETE FROM orders WHERE id <= 10; UPDATE orders SET note = 'x' WHERE id BETWEEN 11 AND 20; "
            "INSERT INTO orders (customer_id) VALUES (1), (2)")
    result = _run(env, tables=["orders"], mode="replace", disable_triggers=True)
    assert result.ok, result.sentence
    t = _table(result, "public.orders")
    assert (t.inserted, t.updated, t.deleted) == (10, 10, 2) and t.proven
    assert env.one("SELECT count(*) FROM orders") == 2000
    assert env.one("SELECT count(*) FROM pg_indexes WHERE tablename = 'orders'") == 2


def test_table_without_a_key_is_replace_only(env):
    backed_up = env.one("SELECT count(*) FROM audit_log")
    env.sql("DELETE FROM audit_log WHERE what LIKE 'seed 1%%'")
    plan = preview_recovery(env.settings, str(env.artifact), RecoverOptions(tables=["audit_log"]))
    t = _table(plan, "public.audit_log")
    assert t.action == "blocked" and t.key is None and "only be replaced (--mode replace)" in " ".join(t.notes)
    refused = _run(env, tables=["audit_log"])
    assert not refused.ok and "only be replaced" in refused.sentence and "nothing was changed" in refused.sentence
    result = _run(env, tables=["audit_log"], mode="replace")
    assert result.ok, result.sentence
    assert env.one("SELECT count(*) FROM audit_log") == backed_up


def test_copy_under_another_name(env):
    env.sql("DELETE FROM customers WHERE id > 150")
    result = _run(env, tables=["customers"], mode="copy", into="public.customers_restored")
    assert result.ok, result.sentence
    assert env.one("SELECT count(*) FROM customers_restored") == 200
    assert env.one("SELECT embedding::text FROM customers_restored WHERE id = 7") == "[7,1,2]"
    assert env.one("SELECT count(*) FROM customers") == 150


def test_unknown_table_and_bad_options_are_refused(env):
    from opstower_core.recover import RecoverySession

    with pytest.raises(UsageError):
        RecoverySession(env.settings, str(env.artifact), RecoverOptions(tables=["orders"], into="x"))
    result = _run(env, tables=["no_such_table"])
    assert not result.ok and "neither in the backup nor in the live database" in result.sentence
