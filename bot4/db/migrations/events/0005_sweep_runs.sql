-- bot4 events database, version 5: research sweep results (issue 20).
--
-- One row per run of a sweep (`bot4 sweep`, bot4/research/db.py), written by the sweep's
-- driver as each run finishes (workers never connect). Keyed by (sweep, run_key): a resumed
-- sweep, or a failed run retried with --retry-failed, writes its row again and the last
-- result stands. The sweep's own Parquet table (OUT/results.parquet) has the same rows.

CREATE TABLE sweep_runs (
    sweep           text    NOT NULL,   -- the sweep's output directory, absolute
    run_key         text    NOT NULL CHECK (run_key ~ '^[0-9a-f]{16}$'),  -- bot4.research.runs.RunSpec.key
    run             integer NOT NULL CHECK (run >= 0),  -- place in the sweep's plan
    data            text    NOT NULL,   -- the data file as given
    params          jsonb   NOT NULL,   -- the point: parameter key -> value
    seed            bigint  NOT NULL,
    status          text    NOT NULL CHECK (status IN ('ok', 'failed')),
    error           text,               -- one line, failed runs only
    metrics         jsonb   NOT NULL DEFAULT '{}',  -- the table's metric columns (null = undefined)
    total_pnl       numeric,            -- currency; the usual objective, for ORDER BY
    report_html     text,               -- relative to the sweep directory
    journal_sha256  text,
    command         text,               -- the equivalent `bot4 replay`
    code_version    text    NOT NULL,
    wall_s          double precision,
    worker          text,               -- host:pid that ran it
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sweep, run_key),
    CHECK ((status = 'failed') = (error IS NOT NULL))
);

CREATE INDEX sweep_runs_by_pnl ON sweep_runs (sweep, total_pnl DESC NULLS LAST);
