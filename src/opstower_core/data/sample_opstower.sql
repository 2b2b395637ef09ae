-- OpsTower demo database: a small ride-hailing / field-operations platform.
--
-- 47 ordinary tables over three schemas (public: 33, billing: 9, audit: 5), with primary and
-- foreign keys, indexes, identity columns and sequences, enums, views and one materialized view,
-- and about 14,000 rows.
-- Data is generated with generate_series and arithmetic on the series index only, so every load
-- produces exactly the same rows (no random(), no now()); the clock starts on 2025-09-01 UTC.
-- Runs as one multi-statement execute on an autocommit connection in a fresh database.

SET client_min_messages = warning;
-- Dates and date + interval arithmetic below become timestamptz in UTC whatever the server's TimeZone.
SET TimeZone = 'UTC';

CREATE SCHEMA billing;
CREATE SCHEMA audit;
COMMENT ON SCHEMA billing IS 'Fares, payments, invoicing and driver payouts';
COMMENT ON SCHEMA audit IS 'Append-only trail of operator and system actions';

CREATE TYPE public.booking_status AS ENUM ('requested', 'assigned', 'en_route', 'in_progress', 'completed', 'cancelled');
CREATE TYPE public.incident_severity AS ENUM ('low', 'medium', 'high', 'critical');
CREATE TYPE billing.payment_status AS ENUM ('pending', 'captured', 'failed', 'refunded');

CREATE SEQUENCE billing.invoice_number_seq START 1001;

-- ---------------------------------------------------------------- geography and fleet

CREATE TABLE public.regions (
    id          smallint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code        text NOT NULL UNIQUE,
    name        text NOT NULL,
    timezone    text NOT NULL,
    currency    char(3) NOT NULL,
    launched_on date NOT NULL
);

CREATE TABLE public.cities (
    id           integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    region_id    smallint NOT NULL REFERENCES public.regions (id),
    name         text NOT NULL,
    country_code char(2) NOT NULL,
    population   integer NOT NULL CHECK (population > 0),
    lat          numeric(8, 5) NOT NULL,
    lon          numeric(8, 5) NOT NULL
);
CREATE INDEX cities_region_id_idx ON public.cities (region_id);

CREATE TABLE public.zones (
    id         integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    city_id    integer NOT NULL REFERENCES public.cities (id),
    code       text NOT NULL UNIQUE,
    name       text NOT NULL,
    is_airport boolean NOT NULL DEFAULT false
);
CREATE INDEX zones_city_id_idx ON public.zones (city_id);

CREATE TABLE public.depots (
    id       integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    city_id  integer NOT NULL REFERENCES public.cities (id),
    name     text NOT NULL,
    address  text NOT NULL,
    capacity integer NOT NULL
);

CREATE TABLE public.vehicle_makes (
    id   integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE
);

CREATE TABLE public.vehicle_models (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    make_id     integer NOT NULL REFERENCES public.vehicle_makes (id),
    name        text NOT NULL,
    seats       smallint NOT NULL,
    is_electric boolean NOT NULL,
    UNIQUE (make_id, name)
);

CREATE TABLE public.vehicles (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_id    integer NOT NULL REFERENCES public.vehicle_models (id),
    depot_id    integer NOT NULL REFERENCES public.depots (id),
    plate       text NOT NULL UNIQUE,
    vin         char(17) NOT NULL UNIQUE,
    model_year  smallint NOT NULL,
    colour      text NOT NULL,
    odometer_km integer NOT NULL,
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'maintenance', 'retired'))
);
CREATE INDEX vehicles_depot_id_idx ON public.vehicles (depot_id);

CREATE TABLE public.drivers (
    id           integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    home_city_id integer NOT NULL REFERENCES public.cities (id),
    full_name    text NOT NULL,
    email        text NOT NULL UNIQUE,
    phone        text NOT NULL,
    licence_no   text NOT NULL UNIQUE,
    hired_on     date NOT NULL,
    status       text NOT NULL DEFAULT 'active' CHECK (status IN ('onboarding', 'active', 'suspended', 'left')),
    rating       numeric(3, 2)
);
CREATE INDEX drivers_home_city_id_idx ON public.drivers (home_city_id);

CREATE TABLE public.driver_documents (
    id         integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    driver_id  integer NOT NULL REFERENCES public.drivers (id) ON DELETE CASCADE,
    kind       text NOT NULL CHECK (kind IN ('licence', 'insurance', 'background_check')),
    number     text NOT NULL,
    expires_on date NOT NULL,
    verified   boolean NOT NULL DEFAULT false
);
CREATE INDEX driver_documents_driver_id_idx ON public.driver_documents (driver_id);
CREATE INDEX driver_documents_expires_on_idx ON public.driver_documents (expires_on) WHERE NOT verified;

CREATE TABLE public.driver_vehicle_assignments (
    id            integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    driver_id     integer NOT NULL REFERENCES public.drivers (id),
    vehicle_id    integer NOT NULL REFERENCES public.vehicles (id),
    assigned_from date NOT NULL,
    assigned_to   date,
    UNIQUE (vehicle_id, assigned_from)
);
CREATE INDEX driver_vehicle_assignments_driver_id_idx ON public.driver_vehicle_assignments (driver_id);

CREATE TABLE public.shifts (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    driver_id  integer NOT NULL REFERENCES public.drivers (id),
    vehicle_id integer NOT NULL REFERENCES public.vehicles (id),
    zone_id    integer NOT NULL REFERENCES public.zones (id),
    starts_at  timestamptz NOT NULL,
    ends_at    timestamptz NOT NULL,
    CHECK (ends_at > starts_at)
);
CREATE INDEX shifts_driver_id_starts_at_idx ON public.shifts (driver_id, starts_at);

CREATE TABLE public.shift_breaks (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    shift_id  bigint NOT NULL REFERENCES public.shifts (id) ON DELETE CASCADE,
    starts_at timestamptz NOT NULL,
    minutes   smallint NOT NULL CHECK (minutes BETWEEN 5 AND 60)
);
CREATE INDEX shift_breaks_shift_id_idx ON public.shift_breaks (shift_id);

-- ---------------------------------------------------------------- customers and bookings

CREATE TABLE public.customers (
    id               integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    home_city_id     integer NOT NULL REFERENCES public.cities (id),
    full_name        text NOT NULL,
    email            text NOT NULL UNIQUE,
    phone            text,
    signed_up_at     timestamptz NOT NULL,
    marketing_opt_in boolean NOT NULL DEFAULT false
);
CREATE INDEX customers_home_city_id_idx ON public.customers (home_city_id);

CREATE TABLE public.customer_addresses (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES public.customers (id) ON DELETE CASCADE,
    label       text NOT NULL,
    line1       text NOT NULL,
    city_id     integer NOT NULL REFERENCES public.cities (id),
    is_default  boolean NOT NULL DEFAULT false
);
CREATE INDEX customer_addresses_customer_id_idx ON public.customer_addresses (customer_id);

CREATE TABLE public.corporate_accounts (
    id            integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          text NOT NULL UNIQUE,
    vat_number    text NOT NULL,
    billing_email text NOT NULL,
    credit_limit  numeric(12, 2) NOT NULL
);

CREATE TABLE public.corporate_members (
    corporate_account_id integer NOT NULL REFERENCES public.corporate_accounts (id),
    customer_id          integer NOT NULL REFERENCES public.customers (id),
    role                 text NOT NULL DEFAULT 'rider',
    PRIMARY KEY (corporate_account_id, customer_id)
);
CREATE INDEX corporate_members_customer_id_idx ON public.corporate_members (customer_id);

CREATE TABLE public.promo_codes (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code        text NOT NULL UNIQUE,
    percent_off smallint NOT NULL CHECK (percent_off BETWEEN 1 AND 100),
    valid_from  date NOT NULL,
    valid_to    date NOT NULL,
    max_uses    integer
);

CREATE TABLE public.bookings (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id          integer NOT NULL REFERENCES public.customers (id),
    pickup_zone_id       integer NOT NULL REFERENCES public.zones (id),
    dropoff_zone_id      integer NOT NULL REFERENCES public.zones (id),
    requested_at         timestamptz NOT NULL,
    scheduled_for        timestamptz,
    status               public.booking_status NOT NULL DEFAULT 'requested',
    passengers           smallint NOT NULL DEFAULT 1,
    promo_code_id        integer REFERENCES public.promo_codes (id),
    corporate_account_id integer REFERENCES public.corporate_accounts (id)
);
CREATE INDEX bookings_customer_id_idx ON public.bookings (customer_id);
CREATE INDEX bookings_requested_at_idx ON public.bookings (requested_at);
CREATE INDEX bookings_open_idx ON public.bookings (status) WHERE status NOT IN ('completed', 'cancelled');

CREATE TABLE public.booking_status_history (
    id         bigserial PRIMARY KEY,
    booking_id bigint NOT NULL REFERENCES public.bookings (id) ON DELETE CASCADE,
    status     public.booking_status NOT NULL,
    changed_at timestamptz NOT NULL
);
CREATE INDEX booking_status_history_booking_id_idx ON public.booking_status_history (booking_id);

-- ---------------------------------------------------------------- trips and operations

CREATE TABLE public.trips (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    booking_id  bigint NOT NULL UNIQUE REFERENCES public.bookings (id),
    driver_id   integer NOT NULL REFERENCES public.drivers (id),
    vehicle_id  integer NOT NULL REFERENCES public.vehicles (id),
    started_at  timestamptz NOT NULL,
    ended_at    timestamptz,
    distance_km numeric(7, 2),
    duration_s  integer,
    fare        numeric(10, 2),
    currency    char(3) NOT NULL DEFAULT 'EUR'
);
CREATE INDEX trips_driver_id_idx ON public.trips (driver_id);
CREATE INDEX trips_vehicle_id_idx ON public.trips (vehicle_id);
CREATE INDEX trips_started_at_idx ON public.trips (started_at);

CREATE TABLE public.trip_waypoints (
    id          bigserial PRIMARY KEY,
    trip_id     bigint NOT NULL REFERENCES public.trips (id) ON DELETE CASCADE,
    seq         smallint NOT NULL,
    lat         numeric(8, 5) NOT NULL,
    lon         numeric(8, 5) NOT NULL,
    recorded_at timestamptz NOT NULL,
    UNIQUE (trip_id, seq)
);

CREATE TABLE public.trip_ratings (
    trip_id  bigint PRIMARY KEY REFERENCES public.trips (id) ON DELETE CASCADE,
    stars    smallint NOT NULL CHECK (stars BETWEEN 1 AND 5),
    comment  text,
    rated_at timestamptz NOT NULL
);

CREATE TABLE public.surge_windows (
    id         integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    zone_id    integer NOT NULL REFERENCES public.zones (id),
    starts_at  timestamptz NOT NULL,
    ends_at    timestamptz NOT NULL,
    multiplier numeric(3, 2) NOT NULL CHECK (multiplier >= 1)
);
CREATE INDEX surge_windows_zone_id_starts_at_idx ON public.surge_windows (zone_id, starts_at);

CREATE TABLE public.incidents (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    trip_id     bigint REFERENCES public.trips (id),
    driver_id   integer NOT NULL REFERENCES public.drivers (id),
    vehicle_id  integer REFERENCES public.vehicles (id),
    severity    public.incident_severity NOT NULL,
    category    text NOT NULL,
    description text NOT NULL,
    reported_at timestamptz NOT NULL,
    resolved_at timestamptz
);
CREATE INDEX incidents_driver_id_idx ON public.incidents (driver_id);
CREATE INDEX incidents_unresolved_idx ON public.incidents (severity) WHERE resolved_at IS NULL;

CREATE TABLE public.incident_notes (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    incident_id integer NOT NULL REFERENCES public.incidents (id) ON DELETE CASCADE,
    author      text NOT NULL,
    body        text NOT NULL,
    created_at  timestamptz NOT NULL
);
CREATE INDEX incident_notes_incident_id_idx ON public.incident_notes (incident_id);

CREATE TABLE public.parts (
    id        integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sku       text NOT NULL UNIQUE,
    name      text NOT NULL,
    unit_cost numeric(10, 2) NOT NULL
);

CREATE TABLE public.maintenance_orders (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    vehicle_id  integer NOT NULL REFERENCES public.vehicles (id),
    depot_id    integer NOT NULL REFERENCES public.depots (id),
    reason      text NOT NULL,
    odometer_km integer NOT NULL,
    opened_at   timestamptz NOT NULL,
    closed_at   timestamptz
);
CREATE INDEX maintenance_orders_vehicle_id_idx ON public.maintenance_orders (vehicle_id);

CREATE TABLE public.maintenance_parts (
    order_id integer NOT NULL REFERENCES public.maintenance_orders (id) ON DELETE CASCADE,
    part_id  integer NOT NULL REFERENCES public.parts (id),
    quantity smallint NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, part_id)
);

CREATE TABLE public.fuel_logs (
    id         integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    vehicle_id integer NOT NULL REFERENCES public.vehicles (id),
    driver_id  integer NOT NULL REFERENCES public.drivers (id),
    filled_at  timestamptz NOT NULL,
    litres     numeric(6, 2),
    kwh        numeric(6, 2),
    cost       numeric(8, 2) NOT NULL
);
CREATE INDEX fuel_logs_vehicle_id_idx ON public.fuel_logs (vehicle_id);

CREATE TABLE public.support_tickets (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES public.customers (id),
    trip_id     bigint REFERENCES public.trips (id),
    subject     text NOT NULL,
    status      text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'pending', 'closed')),
    priority    smallint NOT NULL DEFAULT 3,
    opened_at   timestamptz NOT NULL
);
CREATE INDEX support_tickets_customer_id_idx ON public.support_tickets (customer_id);

CREATE TABLE public.support_messages (
    id            integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ticket_id     integer NOT NULL REFERENCES public.support_tickets (id) ON DELETE CASCADE,
    from_customer boolean NOT NULL,
    body          text NOT NULL,
    sent_at       timestamptz NOT NULL
);
CREATE INDEX support_messages_ticket_id_idx ON public.support_messages (ticket_id);

CREATE TABLE public.notifications (
    id          bigserial PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES public.customers (id),
    channel     text NOT NULL CHECK (channel IN ('push', 'sms', 'email')),
    template    text NOT NULL,
    sent_at     timestamptz NOT NULL,
    delivered   boolean NOT NULL
);
CREATE INDEX notifications_customer_id_idx ON public.notifications (customer_id);

CREATE TABLE public.app_settings (
    key        text PRIMARY KEY,
    value      jsonb NOT NULL,
    updated_at timestamptz NOT NULL
);

-- ---------------------------------------------------------------- billing

CREATE TABLE billing.tax_rates (
    id         integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    region_id  smallint NOT NULL REFERENCES public.regions (id),
    name       text NOT NULL,
    rate       numeric(5, 4) NOT NULL,
    valid_from date NOT NULL,
    UNIQUE (region_id, valid_from)
);

CREATE TABLE billing.tariffs (
    id           integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    city_id      integer NOT NULL REFERENCES public.cities (id),
    name         text NOT NULL,
    base_fare    numeric(6, 2) NOT NULL,
    per_km       numeric(6, 2) NOT NULL,
    per_minute   numeric(6, 2) NOT NULL,
    minimum_fare numeric(6, 2) NOT NULL,
    valid_from   date NOT NULL
);
CREATE INDEX tariffs_city_id_idx ON billing.tariffs (city_id);

CREATE TABLE billing.payment_methods (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES public.customers (id),
    kind        text NOT NULL CHECK (kind IN ('card', 'wallet', 'invoice')),
    brand       text,
    last4       char(4),
    expires_on  date,
    is_default  boolean NOT NULL DEFAULT false
);
CREATE INDEX payment_methods_customer_id_idx ON billing.payment_methods (customer_id);

CREATE TABLE billing.payments (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    trip_id           bigint NOT NULL REFERENCES public.trips (id),
    payment_method_id integer NOT NULL REFERENCES billing.payment_methods (id),
    amount            numeric(10, 2) NOT NULL,
    currency          char(3) NOT NULL,
    status            billing.payment_status NOT NULL DEFAULT 'pending',
    provider_ref      text NOT NULL UNIQUE,
    captured_at       timestamptz
);
CREATE INDEX payments_trip_id_idx ON billing.payments (trip_id);

CREATE TABLE billing.refunds (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payment_id  bigint NOT NULL REFERENCES billing.payments (id),
    amount      numeric(10, 2) NOT NULL CHECK (amount > 0),
    reason      text NOT NULL,
    refunded_at timestamptz NOT NULL
);
CREATE INDEX refunds_payment_id_idx ON billing.refunds (payment_id);

CREATE TABLE billing.invoices (
    id                   integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    number               text NOT NULL UNIQUE
                         DEFAULT 'INV-' || lpad(nextval('billing.invoice_number_seq')::text, 7, '0'),
    corporate_account_id integer NOT NULL REFERENCES public.corporate_accounts (id),
    period_start         date NOT NULL,
    period_end           date NOT NULL,
    issued_at            timestamptz NOT NULL,
    due_on               date NOT NULL,
    total                numeric(12, 2) NOT NULL DEFAULT 0,
    paid_at              timestamptz,
    UNIQUE (corporate_account_id, period_start)
);

CREATE TABLE billing.invoice_lines (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    invoice_id  integer NOT NULL REFERENCES billing.invoices (id) ON DELETE CASCADE,
    trip_id     bigint NOT NULL REFERENCES public.trips (id),
    description text NOT NULL,
    amount      numeric(10, 2) NOT NULL
);
CREATE INDEX invoice_lines_invoice_id_idx ON billing.invoice_lines (invoice_id);

CREATE TABLE billing.driver_payouts (
    id           integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    driver_id    integer NOT NULL REFERENCES public.drivers (id),
    period_start date NOT NULL,
    period_end   date NOT NULL,
    amount       numeric(10, 2) NOT NULL,
    paid_at      timestamptz,
    UNIQUE (driver_id, period_start)
);

CREATE TABLE billing.payout_items (
    id        integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payout_id integer NOT NULL REFERENCES billing.driver_payouts (id) ON DELETE CASCADE,
    trip_id   bigint NOT NULL REFERENCES public.trips (id),
    amount    numeric(10, 2) NOT NULL
);
CREATE INDEX payout_items_payout_id_idx ON billing.payout_items (payout_id);

-- ---------------------------------------------------------------- audit

CREATE TABLE audit.log (
    id          bigserial PRIMARY KEY,
    occurred_at timestamptz NOT NULL,
    actor       text NOT NULL,
    action      text NOT NULL,
    entity      text NOT NULL,
    entity_id   bigint,
    details     jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX log_occurred_at_idx ON audit.log (occurred_at);
CREATE INDEX log_entity_idx ON audit.log (entity, entity_id);

CREATE TABLE audit.login_events (
    id          bigserial PRIMARY KEY,
    actor       text NOT NULL,
    succeeded   boolean NOT NULL,
    ip          inet NOT NULL,
    user_agent  text NOT NULL,
    occurred_at timestamptz NOT NULL
);
CREATE INDEX login_events_actor_idx ON audit.login_events (actor, occurred_at);

CREATE TABLE audit.data_exports (
    id           integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    requested_by text NOT NULL,
    dataset      text NOT NULL,
    row_count    integer NOT NULL,
    requested_at timestamptz NOT NULL,
    completed_at timestamptz
);

CREATE TABLE audit.config_changes (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    setting_key text NOT NULL REFERENCES public.app_settings (key),
    old_value   jsonb,
    new_value   jsonb NOT NULL,
    changed_by  text NOT NULL,
    changed_at  timestamptz NOT NULL
);

CREATE TABLE audit.api_keys (
    id         integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text NOT NULL,
    prefix     char(8) NOT NULL UNIQUE,
    scopes     text[] NOT NULL,
    created_at timestamptz NOT NULL,
    revoked_at timestamptz
);

COMMENT ON TABLE public.bookings IS 'A ride requested by a customer; becomes a trip once a driver picks it up';
COMMENT ON TABLE public.trips IS 'A driven ride, one per completed booking';
COMMENT ON TABLE audit.log IS 'Who did what to which entity, written by the app and the ops console';
COMMENT ON COLUMN billing.payments.provider_ref IS 'Reference at the payment provider, unique per capture';

-- ================================================================ data

INSERT INTO public.regions (code, name, timezone, currency, launched_on) VALUES
    ('eu-west', 'Western Europe', 'Europe/Paris', 'EUR', '2019-03-01'),
    ('eu-north', 'Nordics', 'Europe/Stockholm', 'SEK', '2020-05-15'),
    ('eu-central', 'Central Europe', 'Europe/Berlin', 'EUR', '2019-09-01'),
    ('uk', 'United Kingdom', 'Europe/London', 'GBP', '2021-01-10'),
    ('iberia', 'Iberia', 'Europe/Madrid', 'EUR', '2022-04-01'),
    ('ch', 'Switzerland', 'Europe/Zurich', 'CHF', '2023-02-01');

INSERT INTO public.cities (region_id, name, country_code, population, lat, lon)
SELECT r, c.name, c.cc, c.pop, c.lat, c.lon
FROM (VALUES
    (1, 'Paris', 'FR', 2102650, 48.85661, 2.35222), (1, 'Lyon', 'FR', 522250, 45.76404, 4.83566),
    (1, 'Brussels', 'BE', 1222637, 50.85034, 4.35171), (1, 'Amsterdam', 'NL', 921402, 52.36757, 4.90414),
    (2, 'Stockholm', 'SE', 984748, 59.32932, 18.06858), (2, 'Oslo', 'NO', 709037, 59.91387, 10.75225),
    (2, 'Copenhagen', 'DK', 660842, 55.67611, 12.56834), (2, 'Helsinki', 'FI', 664028, 60.16986, 24.93838),
    (3, 'Berlin', 'DE', 3878100, 52.52001, 13.40495), (3, 'Munich', 'DE', 1512491, 48.13513, 11.58198),
    (3, 'Vienna', 'AT', 2005760, 48.20817, 16.37382), (3, 'Prague', 'CZ', 1357326, 50.07554, 14.43780),
    (4, 'London', 'GB', 8866180, 51.50735, -0.12776), (4, 'Manchester', 'GB', 568996, 53.48077, -2.24263),
    (4, 'Edinburgh', 'GB', 514990, 55.95325, -3.18827), (4, 'Bristol', 'GB', 472465, 51.45451, -2.58791),
    (5, 'Madrid', 'ES', 3416771, 40.41678, -3.70379), (5, 'Barcelona', 'ES', 1702814, 41.38506, 2.17340),
    (5, 'Lisbon', 'PT', 567131, 38.72225, -9.13934), (5, 'Porto', 'PT', 248769, 41.15794, -8.62911),
    (6, 'Zürich', 'CH', 443037, 47.37689, 8.54169), (6, 'Geneva', 'CH', 203951, 46.20439, 6.14316),
    (6, 'Basel', 'CH', 177571, 47.55960, 7.58858), (6, 'Bern', 'CH', 146121, 46.94797, 7.44745)
) AS c(r, name, cc, pop, lat, lon);

INSERT INTO public.zones (city_id, code, name, is_airport)
SELECT (i - 1) / 4 + 1,
       'Z' || lpad(i::text, 3, '0'),
       (ARRAY['Centre', 'North', 'South', 'Airport'])[(i - 1) % 4 + 1] || ' ' || ((i - 1) / 4 + 1),
       (i - 1) % 4 = 3
FROM generate_series(1, 96) AS i;

INSERT INTO public.depots (city_id, name, address, capacity)
SELECT i * 2, 'Depot ' || i, (10 + i * 7) || ' Industrial Way', 20 + (i * 13) % 30
FROM generate_series(1, 12) AS i;

INSERT INTO public.vehicle_makes (name)
VALUES ('Toyota'), ('Skoda'), ('Tesla'), ('Volkswagen'), ('Kia'), ('Hyundai'), ('Mercedes-Benz'), ('Renault');

INSERT INTO public.vehicle_models (make_id, name, seats, is_electric)
SELECT (i - 1) / 3 + 1,
       (ARRAY['Standard', 'Estate', 'EV'])[(i - 1) % 3 + 1] || ' ' || ((i - 1) / 3 + 1),
       CASE WHEN i % 5 = 0 THEN 7 ELSE 4 END,
       (i - 1) % 3 = 2
FROM generate_series(1, 24) AS i;

INSERT INTO public.vehicles (model_id, depot_id, plate, vin, model_year, colour, odometer_km, status)
SELECT (i * 7) % 24 + 1,
       (i - 1) % 12 + 1,
       'OT-' || lpad(i::text, 4, '0') || '-' || chr(65 + i % 26),
       upper(substr(md5('vin' || i), 1, 17)),
       2017 + i % 8,
       (ARRAY['black', 'white', 'silver', 'blue', 'grey'])[i % 5 + 1],
       12000 + (i * 7919) % 180000,
       CASE WHEN i % 40 = 0 THEN 'retired' WHEN i % 17 = 0 THEN 'maintenance' ELSE 'active' END
FROM generate_series(1, 240) AS i;

INSERT INTO public.drivers (home_city_id, full_name, email, phone, licence_no, hired_on, status, rating)
SELECT (i - 1) % 24 + 1,
       (ARRAY['Ana', 'Ben', 'Chloé', 'Dmitri', 'Elif', 'Farid', 'Greta', 'Hugo', 'Ines', 'Jonas', 'Kai', 'Lena'])[i % 12 + 1]
           || ' ' ||
       (ARRAY['Martin', 'Novak', 'Okafor', 'Petersen', 'Quinn', 'Rossi', 'Schmidt', 'Tanaka', 'Ulrich', 'Varga'])[i % 10 + 1],
       'driver' || i || '@fleet.opstower.example',
       '+33 6 ' || lpad(((i * 104729) % 100000000)::text, 8, '0'),
       'L' || lpad((i * 7907)::text, 9, '0'),
       DATE '2019-03-01' + (i * 5),
       CASE WHEN i % 29 = 0 THEN 'suspended' WHEN i % 23 = 0 THEN 'left' WHEN i > 290 THEN 'onboarding' ELSE 'active' END,
       round(3.6 + ((i * 37) % 140) / 100.0, 2)
FROM generate_series(1, 300) AS i;

INSERT INTO public.driver_documents (driver_id, kind, number, expires_on, verified)
SELECT (i - 1) / 2 + 1,
       (ARRAY['licence', 'insurance'])[(i - 1) % 2 + 1],
       upper(substr(md5('doc' || i), 1, 10)),
       DATE '2025-10-01' + (i * 11) % 900,
       i % 13 <> 0
FROM generate_series(1, 600) AS i;

INSERT INTO public.driver_vehicle_assignments (driver_id, vehicle_id, assigned_from, assigned_to)
SELECT d, (d - 1) % 240 + 1, DATE '2025-01-01' + (d / 240) * 120, CASE WHEN d <= 60 THEN DATE '2025-04-30' END
FROM generate_series(1, 300) AS d;

INSERT INTO public.shifts (driver_id, vehicle_id, zone_id, starts_at, ends_at)
SELECT (i * 13) % 300 + 1,
       ((i * 13) % 300) % 240 + 1,
       (i * 7) % 96 + 1,
       TIMESTAMPTZ '2025-09-01 05:00+00' + (i / 10) * INTERVAL '1 day' + (i % 10) * INTERVAL '1 hour',
       TIMESTAMPTZ '2025-09-01 05:00+00' + (i / 10) * INTERVAL '1 day' + (i % 10) * INTERVAL '1 hour'
           + (6 + i % 5) * INTERVAL '1 hour'
FROM generate_series(1, 600) AS i;

INSERT INTO public.shift_breaks (shift_id, starts_at, minutes)
SELECT s.id, s.starts_at + INTERVAL '3 hours', 15 + (s.id % 4) * 10
FROM public.shifts AS s
WHERE s.id % 2 = 0
ORDER BY s.id;

INSERT INTO public.customers (home_city_id, full_name, email, phone, signed_up_at, marketing_opt_in)
SELECT (i * 7) % 24 + 1,
       (ARRAY['Amira', 'Bruno', 'Carla', 'Daan', 'Emma', 'Finn', 'Giulia', 'Hanna', 'Ivan', 'Julia', 'Karim',
              'Lucía', 'Mateo', 'Noor', 'Olga', 'Pavel'])[i % 16 + 1]
           || ' ' ||
       (ARRAY['Andersen', 'Berg', 'Costa', 'Dubois', 'Eriksson', 'Fischer', 'García', 'Horvat', 'Jensen',
              'Kowalski', 'Laurent', 'Müller', 'Nilsen'])[i % 13 + 1],
       'customer' || i || '@mail.example',
       CASE WHEN i % 9 = 0 THEN NULL ELSE '+44 7' || lpad(((i::bigint * 15485863) % 1000000000)::text, 9, '0') END,
       TIMESTAMPTZ '2023-01-01 00:00+00' + i * INTERVAL '21 hours',
       i % 3 = 0
FROM generate_series(1, 800) AS i;

INSERT INTO public.customer_addresses (customer_id, label, line1, city_id, is_default)
SELECT (i - 1) % 800 + 1,
       CASE WHEN i <= 800 THEN 'home' ELSE 'work' END,
       (1 + (i * 31) % 250) || ' ' || (ARRAY['High Street', 'Rue de la Paix', 'Hauptstraße', 'Calle Mayor', 'Kungsgatan'])[i % 5 + 1],
       ((i - 1) % 800 * 7) % 24 + 1,
       i <= 800
FROM generate_series(1, 900) AS i;

INSERT INTO public.corporate_accounts (name, vat_number, billing_email, credit_limit)
SELECT (ARRAY['Acme', 'Globex', 'Initech', 'Umbrella', 'Hooli'])[(i - 1) % 5 + 1] || ' '
           || (ARRAY['Logistics', 'Consulting', 'Pharma'])[(i - 1) / 5 + 1],
       'EU' || lpad((i::bigint * 982451653 % 1000000000)::text, 9, '0'),
       'ap' || i || '@corp.example',
       5000 + i * 2500
FROM generate_series(1, 15) AS i;

INSERT INTO public.corporate_members (corporate_account_id, customer_id, role)
SELECT (i - 1) % 15 + 1, i * 8, CASE WHEN i <= 15 THEN 'admin' ELSE 'rider' END
FROM generate_series(1, 90) AS i;

INSERT INTO public.promo_codes (code, percent_off, valid_from, valid_to, max_uses)
SELECT 'RIDE' || (5 * i), 5 + (i % 6) * 5, DATE '2025-08-01' + i * 3, DATE '2025-08-01' + i * 3 + 60,
       CASE WHEN i % 4 = 0 THEN NULL ELSE 500 * i END
FROM generate_series(1, 20) AS i;

-- 800 bookings over 90 days; 80 % complete, the rest cancelled, the last few still open.
INSERT INTO public.bookings (customer_id, pickup_zone_id, dropoff_zone_id, requested_at, scheduled_for, status,
                             passengers, promo_code_id, corporate_account_id)
SELECT (i * 37) % 800 + 1,
       (i * 11) % 96 + 1,
       (i * 11 + 1 + i % 3) % 96 + 1,
       TIMESTAMPTZ '2025-09-01 00:00+00' + i * INTERVAL '161 minutes' + (i * 37 % 60) * INTERVAL '1 second',
       CASE WHEN i % 12 = 0 THEN TIMESTAMPTZ '2025-09-01 00:00+00' + i * INTERVAL '161 minutes' + INTERVAL '1 day' END,
       CASE WHEN i > 790 THEN (ARRAY['requested', 'assigned', 'en_route', 'in_progress'])[i % 4 + 1]::public.booking_status
            WHEN i % 10 < 8 THEN 'completed'
            ELSE 'cancelled' END,
       1 + (i % 7 = 0)::int + (i % 19 = 0)::int,
       CASE WHEN i % 15 = 0 THEN (i / 15) % 20 + 1 END,
       CASE WHEN i % 7 = 0 THEN (i / 7) % 15 + 1 END
FROM generate_series(1, 800) AS i;

INSERT INTO public.booking_status_history (booking_id, status, changed_at)
SELECT b.id, s.status, b.requested_at + s.offs
FROM public.bookings AS b
CROSS JOIN LATERAL (VALUES ('requested'::public.booking_status, INTERVAL '0'),
                           (b.status, INTERVAL '4 minutes' + (b.id % 30) * INTERVAL '1 minute')) AS s(status, offs)
WHERE s.offs = INTERVAL '0' OR b.status <> 'requested'
ORDER BY b.id, s.offs;

-- Driver d always drives vehicle (d - 1) % 240 + 1, matching driver_vehicle_assignments.
INSERT INTO public.trips (booking_id, driver_id, vehicle_id, started_at, ended_at, distance_km, duration_s, fare, currency)
SELECT b.id, d.driver_id, (d.driver_id - 1) % 240 + 1, t.started_at,
       t.started_at + t.duration_s * INTERVAL '1 second',
       t.distance_km, t.duration_s,
       round(3.50 + t.distance_km * 1.20 + t.duration_s / 60.0 * 0.30, 2),
       r.currency
FROM public.bookings AS b
JOIN public.zones AS z ON z.id = b.pickup_zone_id
JOIN public.cities AS c ON c.id = z.city_id
JOIN public.regions AS r ON r.id = c.region_id
CROSS JOIN LATERAL (SELECT (b.id * 53) % 290 + 1 AS driver_id) AS d
CROSS JOIN LATERAL (SELECT b.requested_at + (3 + b.id % 9) * INTERVAL '1 minute' AS started_at,
                           round(1.5 + ((b.id * 53) % 250) / 10.0, 2) AS distance_km,
                           (300 + (b.id * 97) % 2400)::int AS duration_s) AS t
WHERE b.status = 'completed'
ORDER BY b.id;

INSERT INTO public.trip_waypoints (trip_id, seq, lat, lon, recorded_at)
SELECT t.id, w.seq, c.lat + w.seq * 0.003 + (t.id % 7) * 0.001, c.lon + w.seq * 0.002,
       t.started_at + w.seq * (t.duration_s / 3) * INTERVAL '1 second'
FROM public.trips AS t
JOIN public.bookings AS b ON b.id = t.booking_id
JOIN public.zones AS z ON z.id = b.pickup_zone_id
JOIN public.cities AS c ON c.id = z.city_id
CROSS JOIN generate_series(0, 2) AS w(seq)
WHERE t.id <= 200
ORDER BY t.id, w.seq;

INSERT INTO public.trip_ratings (trip_id, stars, comment, rated_at)
SELECT t.id,
       CASE WHEN t.id % 23 = 0 THEN 2 WHEN t.id % 7 = 0 THEN 4 ELSE 5 END,
       CASE WHEN t.id % 23 = 0 THEN 'Driver took a long detour'
            WHEN t.id % 11 = 0 THEN 'Clean car, friendly driver' END,
       t.ended_at + INTERVAL '10 minutes'
FROM public.trips AS t
WHERE t.id % 4 <> 0
ORDER BY t.id;

INSERT INTO public.surge_windows (zone_id, starts_at, ends_at, multiplier)
SELECT (i * 5) % 96 + 1,
       TIMESTAMPTZ '2025-09-01 07:00+00' + (i * 37 % 90) * INTERVAL '1 day',
       TIMESTAMPTZ '2025-09-01 07:00+00' + (i * 37 % 90) * INTERVAL '1 day' + INTERVAL '2 hours',
       1.2 + (i % 5) * 0.2
FROM generate_series(1, 60) AS i;

INSERT INTO public.incidents (trip_id, driver_id, vehicle_id, severity, category, description, reported_at, resolved_at)
SELECT t.id, t.driver_id, t.vehicle_id,
       (ARRAY['low', 'low', 'medium', 'high', 'critical'])[(t.id / 10) % 5 + 1]::public.incident_severity,
       (ARRAY['minor collision', 'passenger complaint', 'lost item', 'vehicle fault'])[(t.id / 10) % 4 + 1],
       'Reported by ' || CASE WHEN t.id % 20 = 0 THEN 'passenger' ELSE 'driver' END || ' after trip ' || t.id,
       t.ended_at + INTERVAL '30 minutes',
       CASE WHEN t.id > 580 THEN NULL ELSE t.ended_at + (2 + t.id % 40) * INTERVAL '1 hour' END
FROM public.trips AS t
WHERE t.id % 10 = 0
ORDER BY t.id;

INSERT INTO public.incident_notes (incident_id, author, body, created_at)
SELECT i.id, (ARRAY['ops.maria', 'ops.tom', 'ops.yuki'])[n], 'Note ' || n || ': ' ||
       (ARRAY['called driver', 'reviewed dashcam', 'closed with customer'])[n], i.reported_at + n * INTERVAL '1 hour'
FROM public.incidents AS i
CROSS JOIN generate_series(1, 2) AS n
ORDER BY i.id, n;

INSERT INTO public.parts (sku, name, unit_cost)
SELECT 'P-' || lpad(i::text, 5, '0'),
       (ARRAY['Brake pad set', 'Tyre', 'Wiper blade', 'Cabin filter', 'Headlight bulb'])[i % 5 + 1] || ' type ' || i,
       round(8 + (i * 41 % 300) * 1.05, 2)
FROM generate_series(1, 40) AS i;

INSERT INTO public.maintenance_orders (vehicle_id, depot_id, reason, odometer_km, opened_at, closed_at)
SELECT v, (v - 1) % 12 + 1,
       (ARRAY['scheduled service', 'brake wear', 'tyre replacement', 'warning light'])[i % 4 + 1],
       15000 + i * 500,
       TIMESTAMPTZ '2025-09-02 08:00+00' + (i * 17 % 88) * INTERVAL '1 day',
       CASE WHEN i % 9 = 0 THEN NULL
            ELSE TIMESTAMPTZ '2025-09-02 08:00+00' + (i * 17 % 88) * INTERVAL '1 day' + INTERVAL '6 hours' END
FROM generate_series(1, 120) AS i
CROSS JOIN LATERAL (SELECT (i * 2) % 240 + 1 AS v) AS x;

INSERT INTO public.maintenance_parts (order_id, part_id, quantity)
SELECT o, (o * 3 + k * 7) % 40 + 1, 1 + (o + k) % 4
FROM generate_series(1, 120) AS o
CROSS JOIN generate_series(0, 1) AS k;

INSERT INTO public.fuel_logs (vehicle_id, driver_id, filled_at, litres, kwh, cost)
SELECT (i - 1) % 240 + 1, (i - 1) % 240 + 1,
       TIMESTAMPTZ '2025-09-01 06:00+00' + i * INTERVAL '217 minutes',
       CASE WHEN ((i - 1) % 240 * 7) % 24 % 3 = 2 THEN NULL ELSE 30 + i % 25 END,
       CASE WHEN ((i - 1) % 240 * 7) % 24 % 3 = 2 THEN 40 + i % 30 END,
       round(45 + (i * 13 % 40) * 1.1, 2)
FROM generate_series(1, 360) AS i;

INSERT INTO public.support_tickets (customer_id, trip_id, subject, status, priority, opened_at)
SELECT (i * 53) % 800 + 1,
       CASE WHEN i % 3 = 0 THEN NULL ELSE (i * 5) % 600 + 1 END,
       (ARRAY['Charged twice', 'Lost item', 'Driver late', 'Cannot add card', 'Receipt missing'])[i % 5 + 1],
       CASE WHEN i > 130 THEN 'open' WHEN i % 8 = 0 THEN 'pending' ELSE 'closed' END,
       1 + i % 3,
       TIMESTAMPTZ '2025-09-03 09:00+00' + i * INTERVAL '14 hours'
FROM generate_series(1, 150) AS i;

INSERT INTO public.support_messages (ticket_id, from_customer, body, sent_at)
SELECT t.id, m % 2 = 1,
       CASE WHEN m % 2 = 1 THEN 'Hello, about "' || t.subject || '"…' ELSE 'Thanks, we are looking into it.' END,
       t.opened_at + m * INTERVAL '2 hours'
FROM public.support_tickets AS t
CROSS JOIN generate_series(1, 2) AS m
ORDER BY t.id, m;

INSERT INTO public.notifications (customer_id, channel, template, sent_at, delivered)
SELECT (i * 29) % 800 + 1,
       (ARRAY['push', 'push', 'sms', 'email'])[i % 4 + 1],
       (ARRAY['driver_arriving', 'trip_receipt', 'promo_weekend', 'rate_your_trip'])[(i / 4) % 4 + 1],
       TIMESTAMPTZ '2025-09-01 00:00+00' + i * INTERVAL '173 minutes',
       i % 31 <> 0
FROM generate_series(1, 400) AS i;

INSERT INTO public.app_settings (key, value, updated_at) VALUES
    ('dispatch.max_radius_km', '8', '2025-06-01 10:00+00'),
    ('dispatch.offer_timeout_s', '15', '2025-06-01 10:00+00'),
    ('pricing.surge_cap', '2.5', '2025-07-12 09:30+00'),
    ('pricing.cancellation_fee', '{"amount": 5, "currency": "EUR"}', '2025-07-12 09:30+00'),
    ('support.auto_close_days', '7', '2025-05-20 14:00+00'),
    ('drivers.min_rating', '4.2', '2025-04-02 08:00+00'),
    ('drivers.max_shift_hours', '10', '2025-04-02 08:00+00'),
    ('features.scheduled_rides', 'true', '2025-08-18 16:45+00'),
    ('features.ev_only_zones', '["Z004", "Z008"]', '2025-08-18 16:45+00'),
    ('notifications.quiet_hours', '{"from": "22:00", "to": "07:00"}', '2025-03-03 12:00+00'),
    ('billing.invoice_day', '1', '2025-01-15 12:00+00'),
    ('audit.retention_days', '400', '2025-01-15 12:00+00');

INSERT INTO billing.tax_rates (region_id, name, rate, valid_from)
SELECT id, 'VAT ' || code, (ARRAY[0.1000, 0.0600, 0.0700, 0.2000, 0.1000, 0.0810])[id], DATE '2025-01-01'
FROM public.regions
ORDER BY id;

INSERT INTO billing.tariffs (city_id, name, base_fare, per_km, per_minute, minimum_fare, valid_from)
SELECT id, 'Standard ' || name, 3.50, 1.20, 0.30, 7.00 + (id % 4), DATE '2025-01-01'
FROM public.cities
ORDER BY id;

-- Payment method id = customer id for the first 800; then 100 second cards.
INSERT INTO billing.payment_methods (customer_id, kind, brand, last4, expires_on, is_default)
SELECT (i - 1) % 800 + 1,
       CASE WHEN i % 25 = 0 THEN 'wallet' ELSE 'card' END,
       CASE WHEN i % 25 = 0 THEN NULL ELSE (ARRAY['visa', 'mastercard', 'amex'])[i % 3 + 1] END,
       CASE WHEN i % 25 = 0 THEN NULL ELSE lpad(((i * 7919) % 10000)::text, 4, '0') END,
       CASE WHEN i % 25 = 0 THEN NULL ELSE DATE '2026-01-31' + (i % 36) * 30 END,
       i <= 800
FROM generate_series(1, 900) AS i;

INSERT INTO billing.payments (trip_id, payment_method_id, amount, currency, status, provider_ref, captured_at)
SELECT t.id, b.customer_id, t.fare, t.currency,
       CASE WHEN t.id % 97 = 0 THEN 'failed' WHEN t.id % 41 = 0 THEN 'refunded' ELSE 'captured' END::billing.payment_status,
       'ch_' || substr(md5('pay' || t.id), 1, 24),
       CASE WHEN t.id % 97 = 0 THEN NULL ELSE t.ended_at + INTERVAL '1 minute' END
FROM public.trips AS t
JOIN public.bookings AS b ON b.id = t.booking_id
ORDER BY t.id;

INSERT INTO billing.refunds (payment_id, amount, reason, refunded_at)
SELECT p.id, p.amount, 'Refunded after support review', p.captured_at + INTERVAL '2 days'
FROM billing.payments AS p
WHERE p.status = 'refunded'
ORDER BY p.id;

INSERT INTO billing.invoices (corporate_account_id, period_start, period_end, issued_at, due_on, paid_at)
SELECT a, m, (m + INTERVAL '1 month - 1 day')::date, m + INTERVAL '1 month 2 days', (m + INTERVAL '1 month 32 days')::date,
       CASE WHEN m < DATE '2025-11-01' AND a % 4 <> 0 THEN m + INTERVAL '1 month 20 days' END
FROM generate_series(1, 15) AS a
CROSS JOIN (VALUES (DATE '2025-09-01'), (DATE '2025-10-01'), (DATE '2025-11-01')) AS mm(m)
ORDER BY a, m;

INSERT INTO billing.invoice_lines (invoice_id, trip_id, description, amount)
SELECT inv.id, t.id, 'Trip ' || t.id || ' on ' || to_char(t.started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD'), t.fare
FROM public.trips AS t
JOIN public.bookings AS b ON b.id = t.booking_id
JOIN billing.invoices AS inv
  ON inv.corporate_account_id = b.corporate_account_id
 AND inv.period_start = date_trunc('month', t.started_at AT TIME ZONE 'UTC')::date
ORDER BY t.id;

UPDATE billing.invoices AS inv
SET total = l.total
FROM (SELECT invoice_id, sum(amount) AS total FROM billing.invoice_lines GROUP BY invoice_id) AS l
WHERE l.invoice_id = inv.id;

INSERT INTO billing.driver_payouts (driver_id, period_start, period_end, amount, paid_at)
SELECT driver_id, DATE '2025-09-01', DATE '2025-11-30', round(sum(fare) * 0.75, 2), TIMESTAMPTZ '2025-12-05 10:00+00'
FROM public.trips
GROUP BY driver_id
ORDER BY driver_id;

INSERT INTO billing.payout_items (payout_id, trip_id, amount)
SELECT p.id, t.id, round(t.fare * 0.75, 2)
FROM public.trips AS t
JOIN billing.driver_payouts AS p ON p.driver_id = t.driver_id
ORDER BY t.id;

INSERT INTO audit.log (occurred_at, actor, action, entity, entity_id, details)
SELECT TIMESTAMPTZ '2025-09-01 00:00+00' + i * INTERVAL '97 minutes',
       (ARRAY['ops.maria', 'ops.tom', 'ops.yuki', 'system', 'dispatcher'])[i % 5 + 1],
       (ARRAY['update', 'create', 'assign', 'refund', 'suspend'])[(i / 5) % 5 + 1],
       (ARRAY['booking', 'driver', 'vehicle', 'payment'])[i % 4 + 1],
       (i * 7) % 800 + 1,
       jsonb_build_object('source', CASE WHEN i % 5 = 3 THEN 'scheduler' ELSE 'console' END, 'seq', i)
FROM generate_series(1, 600) AS i;

INSERT INTO audit.login_events (actor, succeeded, ip, user_agent, occurred_at)
SELECT (ARRAY['ops.maria', 'ops.tom', 'ops.yuki', 'admin', 'finance.lee'])[i % 5 + 1],
       i % 17 <> 0,
       ('10.' || (i % 4) || '.' || (i * 7 % 256) || '.' || (i * 13 % 254 + 1))::inet,
       (ARRAY['Mozilla/5.0 (X11; Linux x86_64)', 'Mozilla/5.0 (Macintosh)', 'opstower-cli/0.1'])[i % 3 + 1],
       TIMESTAMPTZ '2025-09-01 07:30+00' + i * INTERVAL '5 hours 11 minutes'
FROM generate_series(1, 240) AS i;

INSERT INTO audit.data_exports (requested_by, dataset, row_count, requested_at, completed_at)
SELECT (ARRAY['finance.lee', 'ops.maria', 'admin'])[i % 3 + 1],
       (ARRAY['payments', 'trips', 'driver_payouts', 'incidents'])[i % 4 + 1],
       100 + i * 37,
       TIMESTAMPTZ '2025-09-05 09:00+00' + i * INTERVAL '4 days',
       TIMESTAMPTZ '2025-09-05 09:00+00' + i * INTERVAL '4 days' + INTERVAL '3 minutes'
FROM generate_series(1, 20) AS i;

INSERT INTO audit.config_changes (setting_key, old_value, new_value, changed_by, changed_at)
SELECT s.key, CASE WHEN i > 12 THEN s.value END, s.value, (ARRAY['admin', 'ops.maria'])[i % 2 + 1],
       s.updated_at - (i / 12) * INTERVAL '30 days'
FROM generate_series(1, 24) AS i
JOIN (SELECT key, value, updated_at, row_number() OVER (ORDER BY key) AS n FROM public.app_settings) AS s
  ON s.n = (i - 1) % 12 + 1
ORDER BY i;

INSERT INTO audit.api_keys (name, prefix, scopes, created_at, revoked_at) VALUES
    ('dispatch-service', 'ot_disp1', '{bookings:write,trips:write}', '2025-01-10 09:00+00', NULL),
    ('billing-worker', 'ot_bill1', '{payments:write,invoices:write}', '2025-01-10 09:00+00', NULL),
    ('bi-export', 'ot_bi_01', '{trips:read,payments:read}', '2025-02-01 12:00+00', NULL),
    ('mobile-app', 'ot_app_1', '{bookings:write}', '2025-02-14 08:00+00', '2025-06-01 08:00+00'),
    ('mobile-app-v2', 'ot_app_2', '{bookings:write,ratings:write}', '2025-06-01 08:00+00', NULL),
    ('support-desk', 'ot_sup_1', '{tickets:write,trips:read}', '2025-03-03 10:00+00', NULL),
    ('legacy-import', 'ot_leg_1', '{drivers:write}', '2024-11-20 16:00+00', '2025-01-31 00:00+00'),
    ('ops-console', 'ot_ops_1', '{*}', '2025-04-01 09:00+00', NULL);

-- ================================================================ views

CREATE VIEW public.active_drivers AS
SELECT d.id, d.full_name, d.rating, c.name AS home_city, r.code AS region
FROM public.drivers AS d
JOIN public.cities AS c ON c.id = d.home_city_id
JOIN public.regions AS r ON r.id = c.region_id
WHERE d.status = 'active';

CREATE VIEW public.trip_details AS
SELECT t.id AS trip_id, b.id AS booking_id, b.customer_id, t.driver_id, t.vehicle_id, pz.code AS pickup_zone,
       dz.code AS dropoff_zone, t.started_at, t.ended_at, t.distance_km, t.fare, t.currency
FROM public.trips AS t
JOIN public.bookings AS b ON b.id = t.booking_id
JOIN public.zones AS pz ON pz.id = b.pickup_zone_id
JOIN public.zones AS dz ON dz.id = b.dropoff_zone_id;

CREATE VIEW public.open_incidents AS
SELECT i.id, i.severity, i.category, i.reported_at, d.full_name AS driver
FROM public.incidents AS i
JOIN public.drivers AS d ON d.id = i.driver_id
WHERE i.resolved_at IS NULL;

CREATE VIEW billing.outstanding_invoices AS
SELECT inv.number, a.name AS account, inv.total, inv.due_on
FROM billing.invoices AS inv
JOIN public.corporate_accounts AS a ON a.id = inv.corporate_account_id
WHERE inv.paid_at IS NULL;

CREATE VIEW audit.failed_logins AS
SELECT actor, count(*) AS failures, max(occurred_at) AS last_failure
FROM audit.login_events
WHERE NOT succeeded
GROUP BY actor;

CREATE MATERIALIZED VIEW billing.monthly_revenue_by_region AS
SELECT r.code AS region, date_trunc('month', t.started_at AT TIME ZONE 'UTC')::date AS month,
       count(*) AS trips, sum(p.amount) AS revenue
FROM billing.payments AS p
JOIN public.trips AS t ON t.id = p.trip_id
JOIN public.bookings AS b ON b.id = t.booking_id
JOIN public.zones AS z ON z.id = b.pickup_zone_id
JOIN public.cities AS c ON c.id = z.city_id
JOIN public.regions AS r ON r.id = c.region_id
WHERE p.status = 'captured'
GROUP BY 1, 2;
-- Unique so the console's refresh can be CONCURRENTLY.
CREATE UNIQUE INDEX monthly_revenue_by_region_key ON billing.monthly_revenue_by_region (region, month);

COMMENT ON VIEW public.trip_details IS 'Trips with their booking and zones, for the dispatch dashboard';
COMMENT ON MATERIALIZED VIEW billing.monthly_revenue_by_region IS 'Captured revenue per region and month';
