-- bot4 ledger database, version 2: ledger identity conflicts (issue 12).
--
-- Ledger legs are identified by (exec_id, leg). A fill's legs that find legs of the same
-- exec_id and leg already there with the same account, instrument, strategy and amounts
-- are the same entry again (a no-op); legs that differ are a second execution under the
-- id: kept here with the legs they met, logged at ERROR, alarmed — never dropped silently.

CREATE TABLE ledger_conflicts (
    exec_id          numeric(20,0) NOT NULL,
    leg              smallint NOT NULL,
    account          text     NOT NULL,
    instrument       integer  NOT NULL,
    strategy         integer  NOT NULL,
    debit            numeric  NOT NULL,
    credit           numeric  NOT NULL,
    ts_venue_ns      bigint   NOT NULL,
    src_journal      text     NOT NULL,
    src_frame        bigint   NOT NULL,
    src_index        integer  NOT NULL,
    kept_account     text     NOT NULL,             -- the ledger_entries leg holding the key
    kept_instrument  integer  NOT NULL,
    kept_strategy    integer  NOT NULL,
    kept_debit       numeric  NOT NULL,
    kept_credit      numeric  NOT NULL,
    kept_journal     text     NOT NULL,
    kept_frame       bigint   NOT NULL,
    kept_index       integer  NOT NULL,
    detected_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (src_journal, src_frame, src_index, leg)
);
CREATE INDEX ledger_conflicts_exec_id ON ledger_conflicts (exec_id);
