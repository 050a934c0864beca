"""The model registry's PostgreSQL mirror (events migration 0004: ``model_registry``,
``model_lifecycle``).

:class:`PgMirror` is the ``mirror`` of :class:`bot4.models.registry.Registry`: ``sync``
inserts model documents and events with ``ON CONFLICT DO NOTHING`` on their ids, in one
transaction, so sending the whole log again (the registry does at every command) inserts
each row once. The files commit a change; the database follows them.
"""

from __future__ import annotations

import json

__all__ = ["PgMirror", "fetch_events"]


class PgMirror:
    """Mirror into the events database at ``dsn`` (migrated on first use)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._migrated = False

    def _connect(self):
        import psycopg

        from bot4.db.pool import db_errors

        with db_errors("models: connect"):
            return psycopg.connect(self.dsn, connect_timeout=5)

    def sync(self, models: list[dict], events: list[dict]) -> None:
        if not self._migrated:
            from bot4.db.migrate import migrate

            migrate(self.dsn, ("events",))
            self._migrated = True
        if not models and not events:
            return
        from bot4.db.pool import db_errors

        with db_errors("models: sync"), self._connect() as conn, conn.transaction():
            for m in models:
                ev = m["registered"]
                conn.execute(
                    "INSERT INTO model_registry (model_id, name, kind, sha256, bytes, n_params,"
                    " features, fingerprint, training, parity, registered_ts_ns, registered_by)"
                    " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
                    " ON CONFLICT (model_id) DO NOTHING",
                    (m["id"], m["name"], m["kind"], m["sha256"], m["bytes"], m["n_params"],
                     json.dumps(m["features"]), m["fingerprint"], json.dumps(m["training"]),
                     json.dumps(m.get("parity", {})), ev["ts_ns"], ev["who"]),
                )  # fmt: skip
            for e in events:
                conn.execute(
                    "INSERT INTO model_lifecycle (event_id, model_id, event, slot, generation,"
                    " ts_ns, who, why, details) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)"
                    " ON CONFLICT (event_id) DO NOTHING",
                    (e["id"], e["model"], e["event"], e["slot"], e["generation"], e["ts_ns"],
                     e["who"], e["why"], json.dumps(e["details"])),
                )  # fmt: skip


def fetch_events(dsn: str) -> list[dict]:
    """Every lifecycle event in the database, oldest first (tests, ``status``)."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT event_id::text, model_id, event, slot, generation, ts_ns, who, why, details"
            " FROM model_lifecycle ORDER BY ts_ns, event_id"
        ).fetchall()
    keys = ("id", "model", "event", "slot", "generation", "ts_ns", "who", "why", "details")
    return [dict(zip(keys, r, strict=True)) for r in rows]
