-- bot4 events database, version 2: execution identity conflicts (issue 12).
--
-- An execution is identified by its venue exec_id (exec_reports_exec_id). A record whose
-- exec_id is already in exec_reports with the same content (bot4.records.identity:
-- client_order_id, order_id, exec_type, status, reason, instrument, strategy, side,
-- last_qty, last_price, cum_qty, leaves_qty, fee) is the same execution again and loads
-- as a no-op. One with *different* content is a second execution under the id: it cannot
-- go into exec_reports (the id is taken), so the loader keeps it here, whole, with the
-- columns that differ and the row that holds the id, logs it at ERROR and raises an alarm.
-- It moves no position and writes no ledger leg; the reconciliation (bot4.db.reconcile)
-- then reports the journal and the database apart until an operator resolves it.

CREATE TABLE exec_conflicts (
    exec_id          numeric(20,0) NOT NULL,
    client_order_id  numeric(20,0) NOT NULL,
    order_id         numeric(20,0) NOT NULL,
    seq              bigint   NOT NULL,
    parent_seq       bigint   NOT NULL,
    exec_type        smallint NOT NULL,
    status           smallint NOT NULL,
    reason           integer  NOT NULL,
    instrument       integer  NOT NULL,
    strategy         integer  NOT NULL,
    side             smallint NOT NULL,
    last_qty         bigint   NOT NULL,
    last_price       numeric,                       -- currency (NULL: no scale for it)
    cum_qty          bigint   NOT NULL,
    leaves_qty       bigint   NOT NULL,
    fee              numeric,                       -- currency
    ts_event_ns      bigint NOT NULL,
    ts_recv_ns       bigint NOT NULL,
    ts_order_ns      bigint NOT NULL,
    ts_venue_ns      bigint NOT NULL,
    src_journal      text    NOT NULL,              -- the record kept here
    src_frame        bigint  NOT NULL,
    src_index        integer NOT NULL,
    differs          text[]  NOT NULL,              -- content columns unlike the kept row's
    kept_journal     text    NOT NULL,              -- the exec_reports row holding the id
    kept_frame       bigint  NOT NULL,
    kept_index       integer NOT NULL,
    detected_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (src_journal, src_frame, src_index)
);
CREATE INDEX exec_conflicts_exec_id ON exec_conflicts (exec_id);
