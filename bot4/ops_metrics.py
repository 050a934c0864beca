"""Prometheus exposition and health for one pipeline instance: ``bot4 metrics serve``.

One read-only exporter process per instance. At each scrape a custom collector
(:class:`bot4.ops_metrics_collector.Bot4Collector`, the metric families) takes the
same snapshot ``bot4 stats --json`` takes (:func:`bot4.ops_stats.snapshot`: every segment
mapped ``PROT_READ``, read once, unmapped) and turns it into metric families; nothing is
mirrored or counted here, so a scrape and a ``bot4 stats --json`` taken at the same moment
agree. Per stage process, psutil adds CPU seconds, resident memory, context switches and
the core it last ran on (``/proc``, read-only).

Conventions (every family prefixed ``bot4_``, the label ``bot4_instance``, base units,
``LATENCY_BUCKETS_S``): :mod:`bot4.ops_metrics_collector`. Names and meanings:
docs/operations.md.

Endpoints (``ThreadingHTTPServer``, loopback by default):

* ``/metrics`` — the exposition (OpenMetrics when the scraper asks for it, else text 0.0.4);
* ``/healthz`` — 200 while this process serves;
* ``/readyz`` — 200 ``ready`` when every stage is RUNNING with a heartbeat younger than
  ``stale_after`` seconds, the supervisor's liveness verdict (``bot4.pipeline.liveness``,
  published in the control block) finds no stage stuck and the pipeline not stuck — a
  stage blocked on a full output is backpressure, not a stall, and stays ready —, no ring
  is full with its consumer stuck on it, and the database answers when one is configured
  (``--dsn`` / ``$BOT4_DSN``); else 503 with one reason per line.
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client.core import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from bot4.ops_metrics_collector import Bot4Collector
from bot4.ops_stats import snapshot
from bot4.records.errors import Bot4Error, Code

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9478
STALE_AFTER_S = 2.0  # readiness: a stage heartbeat older than this is stale
DB_CHECK_EVERY_S = 5.0  # readiness: the database is asked at most this often


# --- readiness ---------------------------------------------------------------------------------


def readiness(snap: dict, stale_after_s: float = STALE_AFTER_S) -> list[str]:
    """Why the instance is not ready ([] when it is), from one snapshot: stage states,
    heartbeats and the supervisor's liveness verdicts (never a rule of its own)."""
    inst = snap["instance"]
    if not snap["exists"]:
        return [f"instance {inst} has no segments"]
    if snap["pipeline"] is None:
        return [f"instance {inst} has no control block"]
    out = []
    if snap["pipeline"] != "running":
        out.append(f"pipeline {snap['pipeline']}")
    if snap.get("pipeline_stuck_for_ns"):
        out.append(f"pipeline stuck: no ring moved for {snap['pipeline_stuck_for_ns'] / 1e9:.1f} s")
    stuck_on: dict[str, str] = {}
    for s in snap["stages"]:
        name = s["name"]
        if s["state"] != "running":
            out.append(f"stage {name} {s['state']}")
            continue
        age = s["heartbeat_age_ns"]
        if age is None:
            out.append(f"stage {name}: no heartbeat yet")
        elif age > stale_after_s * 1e9:
            out.append(f"stage {name}: heartbeat {age / 1e9:.1f} s old")
        if s["liveness"] == "stuck":
            ring = s.get("liveness_ring") or "?"
            stuck_on[ring] = name
            out.append(
                f"stage {name} stuck: input {ring} holds {s['liveness_records']} records, "
                f"no progress for {(s['stuck_for_ns'] or 0) / 1e9:.1f} s"
            )
    for r in snap["rings"]:
        if r["depth"] >= r["capacity"] and r["ring"] in stuck_on:
            out.append(f"ring {r['ring']} stuck full (consumer {stuck_on[r['ring']]} stuck)")
    return out


class DbCheck:
    """Whether the configured database answers (``SELECT 1``), asked at most every
    ``DB_CHECK_EVERY_S`` seconds; None without a DSN."""

    def __init__(self, dsn: str | None) -> None:
        self.dsn = dsn
        self._at = -math.inf
        self._verdict: str | None = None
        self._lock = threading.Lock()

    def problem(self) -> str | None:
        if not self.dsn:
            return None
        with self._lock:
            if time.monotonic() - self._at >= DB_CHECK_EVERY_S:
                self._verdict = self._ask()
                self._at = time.monotonic()
            return self._verdict

    def _ask(self) -> str | None:
        import psycopg

        try:
            with psycopg.connect(self.dsn, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return f"database unreachable: {first}"
        return None


# --- the server --------------------------------------------------------------------------------


class Exporter:
    """The registry, the readiness check and the HTTP server of one instance."""

    def __init__(
        self,
        instance: str,
        stage_names: list[str] | None = None,
        *,
        dsn: str | None = None,
        stale_after_s: float = STALE_AFTER_S,
    ) -> None:
        self.instance = instance
        self.stage_names = stage_names
        self.collector = Bot4Collector(instance, stage_names)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        self.db = DbCheck(dsn)
        self.stale_after_s = stale_after_s
        self._scrape_lock = threading.Lock()  # the collector keeps psutil handles

    def metrics(self, accept: str | None) -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept)
        with self._scrape_lock:
            return encoder(self.registry), content_type

    def ready(self) -> list[str]:
        reasons = readiness(snapshot(self.instance, self.stage_names), self.stale_after_s)
        db = self.db.problem()
        if db:
            reasons.append(db)
        return reasons

    def server(self, host: str, port: int) -> ThreadingHTTPServer:
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                try:
                    self._get()
                except Exception as exc:  # a segment gone mid-read: one line, not a traceback
                    line = f"{type(exc).__name__}: {exc}".splitlines()[0]
                    print(f"bot4: error: metrics: {self.path}: {line}", file=sys.stderr)
                    self._send(500, f"{line}\n".encode())

            def _get(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body, ctype = exporter.metrics(self.headers.get("Accept"))
                    self._send(200, body, ctype)
                elif path == "/healthz":
                    self._send(200, b"ok\n")
                elif path == "/readyz":
                    reasons = exporter.ready()
                    if reasons:
                        self._send(503, ("\n".join(reasons) + "\n").encode())
                    else:
                        self._send(200, b"ready\n")
                else:
                    self._send(404, b"not found: /metrics, /healthz, /readyz\n")

            def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8"):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)

            def log_message(self, format, *args) -> None:  # noqa: A002
                pass  # a scrape a second is not news

        srv = ThreadingHTTPServer((host, port), Handler)
        srv.daemon_threads = True
        return srv


def serve(
    instance: str,
    stage_names: list[str] | None = None,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    dsn: str | None = None,
    stale_after_s: float = STALE_AFTER_S,
) -> int:
    """Serve until SIGTERM/SIGINT; prints the address it listens on (``--port 0``: the
    kernel's choice) as its first line."""
    import signal

    exp = Exporter(instance, stage_names, dsn=dsn, stale_after_s=stale_after_s)
    try:
        srv = exp.server(host, port)
    except OSError as exc:  # port taken, address not ours: one line, not a traceback
        raise Bot4Error(
            f"metrics: cannot listen on {host}:{port}: {exc.strerror or exc}", Code.CONFIG_INVALID
        ) from None
    h, p = srv.server_address[:2]
    print(f"bot4: metrics of instance {instance} on http://{h}:{p}/metrics", flush=True)

    def stop(signum, frame) -> None:
        threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        srv.serve_forever(poll_interval=0.2)
    finally:
        srv.server_close()
    return 0
