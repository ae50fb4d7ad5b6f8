"""The receiver's tables and views in PostgreSQL, as named migrations (docs/province.md).

The same tables and views as in SQLite, with PostgreSQL's types: times are `timestamptz`,
JSON is `jsonb`. Readings live in `readings` only, every other kind in `events`.
"""

from __future__ import annotations

TABLES = """
CREATE TABLE events (
    node text NOT NULL,
    epoch text NOT NULL,
    seq bigint NOT NULL,
    district text NOT NULL,
    stream text NOT NULL,
    ts timestamptz NOT NULL,
    kind text NOT NULL,
    data jsonb NOT NULL,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (node, epoch, seq)
);
CREATE INDEX events_ts ON events (ts);
CREATE INDEX events_node_ts ON events (node, ts);
CREATE INDEX events_kind_ts ON events (kind, ts);

CREATE TABLE readings (
    node text NOT NULL,
    epoch text NOT NULL,
    seq bigint NOT NULL,
    ts timestamptz NOT NULL,
    sensor text NOT NULL,
    quantity text NOT NULL,
    value double precision,
    unit text NOT NULL,
    quality text NOT NULL,
    stats jsonb,
    PRIMARY KEY (node, epoch, seq)
);
CREATE INDEX readings_sensor_ts ON readings (node, sensor, quantity, ts);
CREATE INDEX readings_quantity_ts ON readings (quantity, ts);

CREATE TABLE counts (
    node text NOT NULL,
    epoch text NOT NULL,
    seq bigint NOT NULL,
    camera text NOT NULL,
    zone text,
    line text,
    direction text NOT NULL,
    label text NOT NULL,
    ts_from timestamptz NOT NULL,
    ts_to timestamptz NOT NULL,
    interval_s double precision NOT NULL,
    objects integer,
    entries integer,
    crossings integer,
    PRIMARY KEY (node, epoch, seq, direction, label)
);
CREATE INDEX counts_camera_ts ON counts (node, camera, ts_from);

CREATE TABLE declared_gaps (
    node text NOT NULL,
    epoch text NOT NULL,
    seq bigint NOT NULL,
    ts timestamptz NOT NULL,
    reason text NOT NULL,
    priority text,
    applies_to_epoch text NOT NULL,
    first_seq bigint,
    last_seq bigint,
    count bigint,
    detail text,
    PRIMARY KEY (node, epoch, seq)
);
CREATE INDEX declared_gaps_range ON declared_gaps (node, applies_to_epoch);

CREATE TABLE sequences (
    node text NOT NULL,
    epoch text NOT NULL,
    first_received_at timestamptz NOT NULL,
    last_received_at timestamptz NOT NULL,
    max_seq bigint NOT NULL,
    contiguous_seq bigint NOT NULL DEFAULT 0,
    scanned_seq bigint NOT NULL DEFAULT 0,
    version bigint NOT NULL DEFAULT 1,
    scanned_version bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (node, epoch)
);

CREATE TABLE holes (
    id bigserial PRIMARY KEY,
    node text NOT NULL,
    epoch text NOT NULL,
    first_seq bigint NOT NULL,
    last_seq bigint NOT NULL,
    state text NOT NULL,
    noticed_at timestamptz NOT NULL,
    opened_at timestamptz,
    closed_at timestamptz,
    closed_by text
);
CREATE INDEX holes_tracked ON holes (node, epoch) WHERE state <> 'closed';

CREATE TABLE node_status (
    id bigserial PRIMARY KEY,
    node text NOT NULL,
    district text NOT NULL,
    state text NOT NULL,
    reason text NOT NULL,
    ts timestamptz NOT NULL,
    since timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    version text,
    config_hash text,
    epoch text,
    last_seq bigint,
    pending_rows bigint,
    area_code text,
    area_name text,
    retained boolean NOT NULL,
    UNIQUE (node, ts, state, reason)
);
CREATE INDEX node_status_node ON node_status (node, received_at);

CREATE TABLE nodes (
    node text PRIMARY KEY,
    district text NOT NULL,
    area_code text,
    area_name text,
    state text NOT NULL DEFAULT 'unknown',
    state_since timestamptz,
    status_ts timestamptz,
    version text,
    config_hash text,
    epoch text,
    last_seq_reported bigint,
    pending_rows bigint,
    pending_reported_at timestamptz,
    last_event_ts timestamptz,
    last_event_received_at timestamptz,
    health_verdict text,
    health_reasons jsonb,
    health_ts timestamptz,
    aqi_value double precision,
    aqi_sensor text,
    aqi_ts timestamptz
);
"""

VIEWS = """
CREATE VIEW latest_readings AS
SELECT DISTINCT ON (node, sensor, quantity)
       node, sensor, quantity, value, unit, quality, ts, epoch, seq
FROM readings
ORDER BY node, sensor, quantity, ts DESC;

CREATE VIEW hourly_counts AS
SELECT c.node, n.district, COALESCE(n.area_code, n.district) AS area_code,
       COALESCE(n.area_name, n.district) AS area_name, c.camera,
       COALESCE(c.zone, c.line) AS place, c.direction, c.label,
       date_trunc('hour', c.ts_from) AS hour,
       SUM(c.objects) AS objects, SUM(c.entries) AS entries, SUM(c.crossings) AS crossings
FROM counts c LEFT JOIN nodes n USING (node)
GROUP BY c.node, n.district, n.area_code, n.area_name, c.camera, COALESCE(c.zone, c.line),
         c.direction, c.label, date_trunc('hour', c.ts_from);

CREATE VIEW all_events AS
SELECT node, epoch, seq, ts, 'reading' AS kind,
       jsonb_build_object('sensor', sensor, 'quantity', quantity, 'value', value,
                          'unit', unit, 'quality', quality, 'stats', stats) AS data
FROM readings
UNION ALL
SELECT node, epoch, seq, ts, kind, data FROM events;

CREATE VIEW open_holes AS
SELECT node, epoch, first_seq, last_seq, last_seq - first_seq + 1 AS missing, noticed_at,
       opened_at
FROM holes WHERE state = 'open';

CREATE VIEW fleet AS
SELECT n.node, n.district, n.area_code, n.area_name,
       COALESCE(n.area_code, n.district) AS group_code,
       COALESCE(n.area_name, n.area_code, n.district) AS group_name,
       n.state, n.state_since, n.version, n.epoch, n.pending_rows, n.pending_reported_at,
       n.last_event_ts, n.last_event_received_at, n.health_verdict, n.health_ts,
       n.aqi_value, n.aqi_sensor, n.aqi_ts,
       (SELECT COUNT(*) FROM holes h WHERE h.node = n.node AND h.state = 'open')
         AS open_holes
FROM nodes n;

CREATE VIEW nodes_offline AS
SELECT * FROM fleet WHERE state = 'offline';

CREATE VIEW detections AS
SELECT node, epoch, seq, ts, data ->> 'camera' AS camera, data ->> 'zone' AS zone,
       data ->> 'label' AS label, (data ->> 'track_id')::bigint AS track_id,
       (data ->> 'score')::double precision AS score, data ->> 'snapshot' AS snapshot
FROM events WHERE kind = 'detection';

CREATE VIEW camera_events AS
SELECT node, epoch, seq, ts, data ->> 'camera' AS camera, data ->> 'event' AS event,
       data ->> 'state' AS state, data ->> 'detail' AS detail,
       data ->> 'from' AS gap_from, data ->> 'to' AS gap_to,
       (data ->> 'duration_s')::double precision AS duration_s
FROM events WHERE kind = 'camera';
"""

MIGRATIONS: list[tuple[str, str]] = [
    # Append only; a released name never changes.
    ("0001_tables", TABLES),
    ("0002_views", VIEWS),
]
