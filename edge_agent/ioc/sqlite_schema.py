"""The receiver's tables and views in SQLite, as named migrations (docs/province.md).

Readings, the bulk of every feed, live in `readings` only, with their fields as columns;
every other kind in `events` with its `data` as JSON; the view `all_events` joins the two.
Times are RFC 3339 UTC text with milliseconds (`2026-11-27T18:26:06.123Z`): they sort as
text and SQLite's date functions read them (`strftime('%H', ts)`, `julianday(ts)`). JSON
columns are text that SQLite's `->` / `->>` operators read.
"""

from __future__ import annotations

TABLES = """
CREATE TABLE events (
    node TEXT NOT NULL,
    epoch TEXT NOT NULL,
    seq INTEGER NOT NULL,
    district TEXT NOT NULL,
    stream TEXT NOT NULL,
    ts TEXT NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    received_at TEXT NOT NULL,
    PRIMARY KEY (node, epoch, seq)
);
CREATE INDEX events_ts ON events (ts);
CREATE INDEX events_node_ts ON events (node, ts);
CREATE INDEX events_kind_ts ON events (kind, ts);

CREATE TABLE readings (
    node TEXT NOT NULL,
    epoch TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts TEXT NOT NULL,
    sensor TEXT NOT NULL,
    quantity TEXT NOT NULL,
    value REAL,
    unit TEXT NOT NULL,
    quality TEXT NOT NULL,
    stats TEXT,
    PRIMARY KEY (node, epoch, seq)
) WITHOUT ROWID;
CREATE INDEX readings_sensor_ts ON readings (node, sensor, quantity, ts);
CREATE INDEX readings_quantity_ts ON readings (quantity, ts);

CREATE TABLE counts (
    node TEXT NOT NULL,
    epoch TEXT NOT NULL,
    seq INTEGER NOT NULL,
    camera TEXT NOT NULL,
    zone TEXT,
    line TEXT,
    direction TEXT NOT NULL,
    label TEXT NOT NULL,
    ts_from TEXT NOT NULL,
    ts_to TEXT NOT NULL,
    interval_s REAL NOT NULL,
    objects INTEGER,
    entries INTEGER,
    crossings INTEGER,
    PRIMARY KEY (node, epoch, seq, direction, label)
);
CREATE INDEX counts_camera_ts ON counts (node, camera, ts_from);

CREATE TABLE declared_gaps (
    node TEXT NOT NULL,
    epoch TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts TEXT NOT NULL,
    reason TEXT NOT NULL,
    priority TEXT,
    applies_to_epoch TEXT NOT NULL,
    first_seq INTEGER,
    last_seq INTEGER,
    count INTEGER,
    detail TEXT,
    PRIMARY KEY (node, epoch, seq)
);
CREATE INDEX declared_gaps_range ON declared_gaps (node, applies_to_epoch);

CREATE TABLE sequences (
    node TEXT NOT NULL,
    epoch TEXT NOT NULL,
    first_received_at TEXT NOT NULL,
    last_received_at TEXT NOT NULL,
    max_seq INTEGER NOT NULL,
    contiguous_seq INTEGER NOT NULL DEFAULT 0,
    scanned_seq INTEGER NOT NULL DEFAULT 0,
    version INTEGER NOT NULL DEFAULT 1,
    scanned_version INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (node, epoch)
);

CREATE TABLE holes (
    id INTEGER PRIMARY KEY,
    node TEXT NOT NULL,
    epoch TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    state TEXT NOT NULL,
    noticed_at TEXT NOT NULL,
    opened_at TEXT,
    closed_at TEXT,
    closed_by TEXT
);
CREATE INDEX holes_tracked ON holes (node, epoch) WHERE state <> 'closed';

CREATE TABLE node_status (
    id INTEGER PRIMARY KEY,
    node TEXT NOT NULL,
    district TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL,
    ts TEXT NOT NULL,
    since TEXT NOT NULL,
    received_at TEXT NOT NULL,
    version TEXT,
    config_hash TEXT,
    epoch TEXT,
    last_seq INTEGER,
    pending_rows INTEGER,
    area_code TEXT,
    area_name TEXT,
    retained INTEGER NOT NULL,
    UNIQUE (node, ts, state, reason)
);
CREATE INDEX node_status_node ON node_status (node, received_at);

CREATE TABLE nodes (
    node TEXT PRIMARY KEY,
    district TEXT NOT NULL,
    area_code TEXT,
    area_name TEXT,
    state TEXT NOT NULL DEFAULT 'unknown',
    state_since TEXT,
    status_ts TEXT,
    version TEXT,
    config_hash TEXT,
    epoch TEXT,
    last_seq_reported INTEGER,
    pending_rows INTEGER,
    pending_reported_at TEXT,
    last_event_ts TEXT,
    last_event_received_at TEXT,
    health_verdict TEXT,
    health_reasons TEXT,
    health_ts TEXT,
    aqi_value REAL,
    aqi_sensor TEXT,
    aqi_ts TEXT
);
"""

VIEWS = """
CREATE VIEW latest_readings AS
SELECT r.node, r.sensor, r.quantity, r.value, r.unit, r.quality, r.ts, r.epoch, r.seq
FROM readings r
JOIN (SELECT node, sensor, quantity, MAX(ts) AS ts FROM readings
      GROUP BY node, sensor, quantity) newest
  USING (node, sensor, quantity, ts);

CREATE VIEW hourly_counts AS
SELECT c.node, n.district, COALESCE(n.area_code, n.district) AS area_code,
       COALESCE(n.area_name, n.district) AS area_name, c.camera,
       COALESCE(c.zone, c.line) AS place, c.direction, c.label,
       strftime('%Y-%m-%dT%H:00:00Z', c.ts_from) AS hour,
       SUM(c.objects) AS objects, SUM(c.entries) AS entries, SUM(c.crossings) AS crossings
FROM counts c LEFT JOIN nodes n USING (node)
GROUP BY c.node, c.camera, place, c.direction, c.label, hour;

CREATE VIEW all_events AS
SELECT node, epoch, seq, ts, 'reading' AS kind,
       json_object('sensor', sensor, 'quantity', quantity, 'value', value, 'unit', unit,
                   'quality', quality, 'stats', json(stats)) AS data
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
       data ->> 'label' AS label, data ->> 'track_id' AS track_id,
       data ->> 'score' AS score, data ->> 'snapshot' AS snapshot
FROM events WHERE kind = 'detection';

CREATE VIEW camera_events AS
SELECT node, epoch, seq, ts, data ->> 'camera' AS camera, data ->> 'event' AS event,
       data ->> 'state' AS state, data ->> 'detail' AS detail,
       data ->> 'from' AS gap_from, data ->> 'to' AS gap_to,
       data ->> 'duration_s' AS duration_s
FROM events WHERE kind = 'camera';
"""

MIGRATIONS: list[tuple[str, str]] = [
    # Append only; a released name never changes.
    ("0001_tables", TABLES),
    ("0002_views", VIEWS),
]
