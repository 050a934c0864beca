-- bot4 events database, version 1: what the journal loader writes (bot4.db.loader).
--
-- Units at this edge: prices and money are NUMERIC in currency, converted exactly from the
-- int64 fixed point of the records (units * instruments.unit, unit = 1 / price_scale);
-- quantities are bigint shares / lots; ts_event_ns is source time, every other ts_*_ns a
-- host CLOCK_MONOTONIC stamp, both bigint ns; uint64 ids (client_order_id, order_id,
-- exec_id) are numeric(20,0). Every loaded row names its journal frame and record
-- (src_journal, src_frame, src_index): the first frame it was loaded from.

CREATE OR REPLACE FUNCTION bot4_u64(v bigint) RETURNS numeric
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT CASE WHEN v < 0 THEN v::numeric + 18446744073709551616 ELSE v::numeric END $$;
COMMENT ON FUNCTION bot4_u64(bigint) IS 'a uint64 carried in a bigint (two''s complement) as its numeric value';

CREATE SCHEMA IF NOT EXISTS bot4_stage;
COMMENT ON SCHEMA bot4_stage IS 'per-loader UNLOGGED staging tables (COPY targets), owned by the loader';

-- Instruments as the loaders know them: the scale converting fixed point to NUMERIC.
CREATE TABLE IF NOT EXISTS instruments (
    instrument   integer PRIMARY KEY,
    symbol       text    NOT NULL,
    price_scale  bigint  NOT NULL CHECK (price_scale > 0),   -- fixed-point units per 1 of currency
    unit         numeric NOT NULL,                           -- 1 / price_scale, exact
    tick_size    numeric NOT NULL,                           -- currency
    lot_size     bigint  NOT NULL CHECK (lot_size > 0),      -- shares
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (unit * price_scale = 1)
);

-- Exactly once: per journal, the first frame not yet loaded. Advanced only by the
-- transaction that loads the frames before it.
CREATE TABLE load_positions (
    journal_id          text   PRIMARY KEY,
    next_frame          bigint NOT NULL CHECK (next_frame >= 0),   -- global journal frame index
    records             bigint NOT NULL DEFAULT 0,   -- journal records (all types) in loaded frames
    batches             bigint NOT NULL DEFAULT 0,   -- committed load transactions
    journal_created_ns  bigint,                      -- the journal's first segment header: a
                                                     -- journal replaced under the same id is refused
    updated_at          timestamptz NOT NULL DEFAULT now()
);

-- Advance the load position of journal j from first_frame to end_frame, fenced: raises
-- SQLSTATE B4001 (so the transaction cannot commit) unless the stored position was
-- first_frame (or absent and first_frame is 0): another loader of the journal moved it.
CREATE FUNCTION bot4_advance(j text, first_frame bigint, end_frame bigint, n_records bigint,
                             created_ns bigint) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    IF first_frame = 0 THEN
        INSERT INTO load_positions AS p (journal_id, next_frame, records, batches,
                                         journal_created_ns)
        VALUES (j, end_frame, n_records, 1, created_ns)
        ON CONFLICT (journal_id) DO UPDATE
           SET next_frame = EXCLUDED.next_frame, records = p.records + EXCLUDED.records,
               batches = p.batches + 1, updated_at = now(),
               journal_created_ns = coalesce(p.journal_created_ns, EXCLUDED.journal_created_ns)
         WHERE p.next_frame = 0;
    ELSE
        UPDATE load_positions
           SET next_frame = end_frame, records = records + n_records, batches = batches + 1,
               journal_created_ns = coalesce(journal_created_ns, created_ns), updated_at = now()
         WHERE journal_id = j AND next_frame = first_frame;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'load position of journal % is no longer %', j, first_frame
            USING ERRCODE = 'B4001';
    END IF;
END
$$;

-- Orders (ORDER records that create an order: ACTION_NEW, ACTION_REPLACE), identified by
-- their idempotency key client_order_id:order_id.
CREATE TABLE orders (
    client_order_id       numeric(20,0) NOT NULL,
    order_id              numeric(20,0) NOT NULL,   -- venue order id from the OMS, 0 before it
    orig_client_order_id  numeric(20,0),            -- REPLACE: the order replaced, else NULL
    seq                   bigint   NOT NULL CHECK (seq >= 0),
    parent_seq            bigint   NOT NULL CHECK (parent_seq >= 0),
    action                smallint NOT NULL CHECK (action IN (1, 3)),
    instrument            integer  NOT NULL,
    strategy              integer  NOT NULL,
    side                  smallint NOT NULL CHECK (side IN (-1, 1)),
    order_type            smallint NOT NULL,
    tif                   smallint NOT NULL,
    qty                   bigint   NOT NULL CHECK (qty > 0),
    limit_price           numeric,                  -- currency; NULL = none (market)
    stop_price            numeric,                  -- currency; NULL = none
    ts_event_ns           bigint NOT NULL,
    ts_recv_ns            bigint NOT NULL,
    ts_signal_ns          bigint NOT NULL,
    ts_risk_ns            bigint NOT NULL,
    ts_order_ns           bigint NOT NULL,
    src_journal           text    NOT NULL,
    src_frame             bigint  NOT NULL,
    src_index             integer NOT NULL,
    loaded_at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (client_order_id, order_id)
);

-- Every other ORDER record (CANCEL, QUERY, CANCEL_ALL): requests about an order, identified
-- by the order, the action and the OMS sequence number (durable across OMS restarts).
CREATE TABLE order_actions (
    client_order_id       numeric(20,0) NOT NULL,
    order_id              numeric(20,0) NOT NULL,
    orig_client_order_id  numeric(20,0) NOT NULL,
    seq                   bigint   NOT NULL CHECK (seq >= 0),
    parent_seq            bigint   NOT NULL CHECK (parent_seq >= 0),
    action                smallint NOT NULL CHECK (action IN (2, 4, 5)),
    instrument            integer  NOT NULL,        -- CANCEL_ALL: 0 = every instrument
    strategy              integer  NOT NULL,
    side                  smallint NOT NULL CHECK (side IN (-1, 0, 1)),
    order_type            smallint NOT NULL,
    tif                   smallint NOT NULL,
    qty                   bigint   NOT NULL CHECK (qty >= 0),
    limit_price           numeric,
    stop_price            numeric,
    ts_event_ns           bigint NOT NULL,
    ts_recv_ns            bigint NOT NULL,
    ts_signal_ns          bigint NOT NULL,
    ts_risk_ns            bigint NOT NULL,
    ts_order_ns           bigint NOT NULL,
    src_journal           text    NOT NULL,
    src_frame             bigint  NOT NULL,
    src_index             integer NOT NULL,
    loaded_at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (client_order_id, order_id, action, seq)
);

-- Execution reports, identified by the venue's exec_id; reports the OMS generated itself
-- (exec_id 0: self-trade expiries, duplicate rejects) by order, type and OMS seq.
CREATE TABLE exec_reports (
    exec_id          numeric(20,0) NOT NULL,
    client_order_id  numeric(20,0) NOT NULL,
    order_id         numeric(20,0) NOT NULL,
    seq              bigint   NOT NULL CHECK (seq >= 0),
    parent_seq       bigint   NOT NULL CHECK (parent_seq >= 0),
    exec_type        smallint NOT NULL CHECK (exec_type BETWEEN 1 AND 9),
    status           smallint NOT NULL,
    reason           integer  NOT NULL,             -- bot4 errors.Code
    instrument       integer  NOT NULL,
    strategy         integer  NOT NULL,
    side             smallint NOT NULL CHECK (side IN (-1, 0, 1)),
    last_qty         bigint   NOT NULL CHECK (last_qty >= 0),
    last_price       numeric  NOT NULL,             -- currency
    cum_qty          bigint   NOT NULL CHECK (cum_qty >= 0),
    leaves_qty       bigint   NOT NULL CHECK (leaves_qty >= 0),
    fee              numeric  NOT NULL,             -- currency, rebate < 0
    ts_event_ns      bigint NOT NULL,
    ts_recv_ns       bigint NOT NULL,
    ts_order_ns      bigint NOT NULL,
    ts_venue_ns      bigint NOT NULL,
    src_journal      text    NOT NULL,
    src_frame        bigint  NOT NULL,
    src_index        integer NOT NULL,
    loaded_at        timestamptz NOT NULL DEFAULT now(),
    -- a fill carries the venue's id, a price and a side: the ledger is keyed on exec_id
    CONSTRAINT exec_reports_fill_valid
        CHECK (last_qty = 0 OR (exec_id <> 0 AND last_price > 0 AND side <> 0))
);
CREATE UNIQUE INDEX exec_reports_exec_id ON exec_reports (exec_id) WHERE exec_id <> 0;
CREATE UNIQUE INDEX exec_reports_oms_key
    ON exec_reports (client_order_id, order_id, exec_type, seq) WHERE exec_id = 0;

-- Risk decisions, identified by the intent decided on: (intent_producer, intent_seq).
CREATE TABLE risk_decisions (
    intent_producer  integer  NOT NULL,             -- producer id of the intents ring
    intent_seq       bigint   NOT NULL CHECK (intent_seq >= 0),
    seq              bigint   NOT NULL CHECK (seq >= 0),   -- the risk stage's own seq
    parent_seq       bigint   NOT NULL CHECK (parent_seq >= 0),
    decision         smallint NOT NULL CHECK (decision IN (1, 2)),   -- ACCEPT, DENY
    reason           integer  NOT NULL,             -- bot4 errors.Code, 0 when accepted
    instrument       integer  NOT NULL,
    strategy         integer  NOT NULL,
    side             smallint NOT NULL CHECK (side IN (-1, 1)),
    qty              bigint   NOT NULL,
    limit_price      numeric,                       -- currency; NULL = none
    stop_price       numeric,                       -- currency; NULL = none
    position         bigint   NOT NULL,             -- signed shares before the order
    exposure         numeric  NOT NULL,             -- signed currency, position + order
    checked_value    bigint   NOT NULL,             -- what the deciding rule measured, in its
    limit_value      bigint   NOT NULL,             --   own units (see errors.Code), raw
    ts_event_ns      bigint NOT NULL,
    ts_recv_ns       bigint NOT NULL,
    ts_signal_ns     bigint NOT NULL,
    ts_risk_ns       bigint NOT NULL,
    src_journal      text    NOT NULL,
    src_frame        bigint  NOT NULL,
    src_index        integer NOT NULL,
    loaded_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (intent_producer, intent_seq)
);

-- Operator actions, identified by (who, seq, ts_ns): seq numbers records of one operator
-- log segment and restarts with a new segment; ts_ns (host monotonic) tells those apart.
CREATE TABLE operator_actions (
    who          text     NOT NULL,
    seq          bigint   NOT NULL CHECK (seq >= 0),
    ts_ns        bigint   NOT NULL,
    parent_seq   bigint   NOT NULL CHECK (parent_seq >= 0),
    action       smallint NOT NULL CHECK (action BETWEEN 1 AND 5),
    target_kind  smallint NOT NULL,
    target       bigint   NOT NULL,
    reason       integer  NOT NULL,
    old_state    smallint NOT NULL,
    new_state    smallint NOT NULL,
    note         text     NOT NULL,
    src_journal  text    NOT NULL,
    src_frame    bigint  NOT NULL,
    src_index    integer NOT NULL,
    loaded_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (who, seq, ts_ns)
);

-- Positions per strategy and instrument, moved only by fills inserted into exec_reports
-- in the same transaction (a fill loaded twice moves nothing the second time). Average
-- cost: a reducing fill releases cost * closed / |qty| of the basis (rounded half-even to
-- the price unit times shares), so cost is exactly 0 whenever qty is 0.
CREATE TABLE positions (
    strategy          integer NOT NULL,
    instrument        integer NOT NULL,
    qty               bigint  NOT NULL,             -- signed shares: + long, - short
    cost              numeric NOT NULL,             -- signed cost basis of qty, currency
    realised_pnl      numeric NOT NULL,             -- currency, before fees
    fees              numeric NOT NULL,             -- currency, sum of fill fees
    bought_qty        bigint  NOT NULL,
    sold_qty          bigint  NOT NULL,
    fills             bigint  NOT NULL,
    last_exec_id      numeric(20,0),
    last_ts_venue_ns  bigint,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (strategy, instrument),
    CHECK (qty <> 0 OR cost = 0)
);

-- Model registry events (schema only: the registry writes it).
CREATE TABLE model_events (
    model          text    NOT NULL,                -- model / parameter set, e.g. 'garch:AAPL'
    version        integer NOT NULL,                -- ORDER_INTENT.model_version it is known by
    event          text    NOT NULL CHECK (event IN
                       ('registered', 'calibrated', 'promoted', 'retired', 'rolled_back')),
    ts_ns          bigint  NOT NULL,                -- wall clock (time.time_ns) of the event
    who            text    NOT NULL DEFAULT current_user,
    params_sha256  text,                            -- hash of the parameter document
    details        jsonb   NOT NULL DEFAULT '{}',
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, version, event, ts_ns)
);

-- Records the database refused (constraint or data errors) or the loader could not convert
-- (unknown instrument): kept with their bytes; the rest of their batch was committed.
CREATE TABLE rejected_rows (
    src_journal  text     NOT NULL,
    src_frame    bigint   NOT NULL,
    src_index    integer  NOT NULL,
    record_type  smallint NOT NULL,                 -- RT_* of the record
    code         integer  NOT NULL,                 -- bot4 errors.Code
    sqlstate     text,                              -- PostgreSQL's, when the database refused it
    reason       text     NOT NULL,
    payload      bytea    NOT NULL,                 -- the record as journaled (its numpy dtype)
    rejected_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (src_journal, src_frame, src_index)
);
