"""The "opstower" demo database: a small ride-hailing operations schema with data.

`create_sample_database` loads `data/sample_opstower.sql` (47 tables in three schemas, about
14,000 deterministic rows); `add_activity` appends new bookings, trips, payments and audit
lines so that successive backups of the demo differ a little.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import psycopg
from psycopg import sql

SAMPLE_SQL = "sample_opstower.sql"


def sample_sql() -> str:
    """The SQL script that builds the demo schema and its data."""
    return resources.files("opstower_core.data").joinpath(SAMPLE_SQL).read_text(encoding="utf-8")


def _connect(conninfo: dict[str, Any], dbname: str | None = None) -> psycopg.Connection:
    params = dict(conninfo)
    if dbname is not None:
        params["dbname"] = dbname
    # Autocommit: CREATE/DROP DATABASE cannot run inside a transaction block.
    return psycopg.connect(**params, autocommit=True)


def database_exists(conninfo: dict[str, Any], dbname: str) -> bool:
    """Whether `dbname` exists on the server `conninfo` points at."""
    with _connect(conninfo) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone() is not None


def create_sample_database(conninfo: dict[str, Any], dbname: str = "opstower", replace: bool = False) -> None:
    """Create the demo database `dbname` and load the sample schema and data into it.

    `conninfo` (psycopg keyword arguments) names the maintenance database to connect to,
    e.g. `EmbeddedPostgres.conninfo("postgres")`. An existing `dbname` is left untouched
    unless `replace`, in which case it is dropped first (disconnecting its sessions).
    """
    with _connect(conninfo) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone() is not None
        if exists and not replace:
            return
        if exists:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(dbname)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    try:
        with _connect(conninfo, dbname) as conn:
            conn.execute(sample_sql())
            # Fresh statistics so the console's size/row estimates (reltuples) are right at once.
            conn.execute("ANALYZE")
    except BaseException:
        # A half-loaded demo would be skipped by the next non-replace call: remove it, but let
        # the original error through even if the clean-up fails too.
        try:
            with _connect(conninfo) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
        except Exception:
            pass
        raise


# One statement, so a run adds bookings, their history, trips, payments and audit lines together.
# Ids come from the identity columns; foreign keys are picked among existing rows (customers with a
# default payment method, active drivers), so it also works after the demo data has been edited.
_ACTIVITY_SQL = """
WITH params AS (
    SELECT (SELECT array_agg(customer_id ORDER BY id) FROM billing.payment_methods WHERE is_default) AS customers,
           (SELECT array_agg(id ORDER BY id) FROM public.zones) AS zones,
           (SELECT array_agg(id ORDER BY id) FROM public.drivers WHERE status = 'active') AS drivers,
           (SELECT array_agg(id ORDER BY id) FROM public.vehicles WHERE status = 'active') AS vehicles
),
new_bookings AS (
    INSERT INTO public.bookings (customer_id, pickup_zone_id, dropoff_zone_id, requested_at, status, passengers)
    SELECT p.customers[1 + floor(random() * cardinality(p.customers))::int],
           p.zones[1 + floor(random() * cardinality(p.zones))::int],
           p.zones[1 + floor(random() * cardinality(p.zones))::int],
           now() - (%(rows)s::int - g) * interval '45 seconds',
           CASE WHEN random() < 0.85 THEN 'completed' ELSE 'cancelled' END::public.booking_status,
           1 + (random() < 0.2)::int
    FROM params AS p CROSS JOIN generate_series(1, %(rows)s::int) AS g
    RETURNING id, customer_id, requested_at, status
),
history AS (
    INSERT INTO public.booking_status_history (booking_id, status, changed_at)
    SELECT id, status, requested_at + interval '5 minutes' FROM new_bookings
),
new_trips AS (
    INSERT INTO public.trips (booking_id, driver_id, vehicle_id, started_at, ended_at, distance_km, duration_s, fare)
    SELECT b.id, x.driver_id, p.vehicles[1 + (x.driver_id - 1) %% cardinality(p.vehicles)], b.requested_at + interval '4 minutes',
           b.requested_at + interval '4 minutes' + x.duration_s * interval '1 second',
           x.distance_km, x.duration_s, round(3.50 + x.distance_km * 1.20 + x.duration_s / 60.0 * 0.30, 2)
    FROM new_bookings AS b
    CROSS JOIN params AS p
    CROSS JOIN LATERAL (
        SELECT p.drivers[1 + floor(random() * cardinality(p.drivers))::int] AS driver_id,
               round((1.5 + random() * 25)::numeric, 2) AS distance_km,
               (300 + floor(random() * 2400))::int AS duration_s
        -- Referencing b makes the lateral run once per booking, so each trip gets its own values.
        WHERE b.id IS NOT NULL
    ) AS x
    WHERE b.status = 'completed'
    RETURNING id, booking_id, fare, currency, ended_at
),
new_payments AS (
    INSERT INTO billing.payments (trip_id, payment_method_id, amount, currency, status, provider_ref, captured_at)
    SELECT t.id, pm.id, t.fare, t.currency, 'captured', 'ch_' || md5(random()::text || t.id), t.ended_at
    FROM new_trips AS t
    JOIN new_bookings AS b ON b.id = t.booking_id
    CROSS JOIN LATERAL (
        SELECT id FROM billing.payment_methods
        WHERE customer_id = b.customer_id AND is_default ORDER BY id LIMIT 1
    ) AS pm
)
INSERT INTO audit.log (occurred_at, actor, action, entity, entity_id, details)
SELECT requested_at, 'dispatcher', 'create', 'booking', id, jsonb_build_object('source', 'add_activity')
FROM new_bookings
"""


def add_activity(conninfo: dict[str, Any], dbname: str = "opstower", rows: int = 100) -> None:
    """Append `rows` new bookings (most become trips with a payment) and their audit lines.

    Timestamps are "now", and the content is random, so each call grows the demo database a
    little and makes its next backup differ from the last one.
    """
    if rows <= 0:
        return
    with _connect(conninfo, dbname) as conn, conn.transaction():
        conn.execute(_ACTIVITY_SQL, {"rows": rows})
        # Keep the dashboard's materialized view in step with the new payments.
        conn.execute("REFRESH MATERIALIZED VIEW billing.monthly_revenue_by_region")
