-- bot4 ledger database, version 1: double-entry rows of every fill (bot4.db.loader).
--
-- Each fill (EXEC_REPORT with last_qty > 0) is one compound entry of 2 or 3 legs, in
-- currency, with notional = last_price * last_qty and cash = the fill's net cash flow
-- (sell: notional - fee, buy: -(notional + fee)):
--   leg 1  position:<symbol>  buy: debit notional    sell: credit notional
--   leg 2  fees               fee > 0: debit fee     rebate (fee < 0): credit -fee   (fee <> 0)
--   leg 3  cash               cash > 0: debit cash   cash < 0: credit -cash          (cash <> 0)
-- so debits equal credits per fill. A fill's legs are inserted by one statement, which
-- checks that they balance. With two-phase commit a fill is in the events database and
-- here, or in neither.

CREATE OR REPLACE FUNCTION bot4_u64(v bigint) RETURNS numeric
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT CASE WHEN v < 0 THEN v::numeric + 18446744073709551616 ELSE v::numeric END $$;

CREATE SCHEMA IF NOT EXISTS bot4_stage;

CREATE TABLE IF NOT EXISTS instruments (
    instrument   integer PRIMARY KEY,
    symbol       text    NOT NULL,
    price_scale  bigint  NOT NULL CHECK (price_scale > 0),
    unit         numeric NOT NULL,
    tick_size    numeric NOT NULL,
    lot_size     bigint  NOT NULL CHECK (lot_size > 0),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (unit * price_scale = 1)
);

CREATE TABLE ledger_entries (
    exec_id      numeric(20,0) NOT NULL CHECK (exec_id > 0),   -- the fill's venue execution id
    leg          smallint NOT NULL CHECK (leg BETWEEN 1 AND 3),
    account      text     NOT NULL,
    instrument   integer  NOT NULL,
    strategy     integer  NOT NULL,
    debit        numeric  NOT NULL DEFAULT 0,       -- currency
    credit       numeric  NOT NULL DEFAULT 0,       -- currency
    ts_venue_ns  bigint   NOT NULL,
    src_journal  text     NOT NULL,
    src_frame    bigint   NOT NULL,
    src_index    integer  NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (exec_id, leg),
    CHECK (debit >= 0 AND credit >= 0 AND (debit = 0) <> (credit = 0))
);

-- Every INSERT statement must add a balanced set of legs per exec_id; with UPDATE and
-- DELETE refused below, that keeps every fill's legs balanced, checked on the statement's
-- own rows only (no scan of the table).
CREATE FUNCTION ledger_check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT n.exec_id, sum(n.debit) AS debit, sum(n.credit) AS credit INTO bad
    FROM new_rows n
    GROUP BY n.exec_id
    HAVING sum(n.debit) <> sum(n.credit)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger legs of exec_id % do not balance: debit % <> credit %',
            bad.exec_id, bad.debit, bad.credit
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER ledger_entries_balanced
    AFTER INSERT ON ledger_entries
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_check_balanced();

CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger_entries is append-only: % refused', TG_OP
        USING ERRCODE = 'restrict_violation';
END
$$;

CREATE TRIGGER ledger_entries_append_only
    BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();

CREATE VIEW ledger_balances AS
    SELECT account,
           sum(debit) AS debit,
           sum(credit) AS credit,
           sum(debit) - sum(credit) AS balance,
           count(*) AS entries
    FROM ledger_entries
    GROUP BY account;
