-- bot4 events database, version 10: trade busts (issue 19).
--
-- Records add EXEC_BROKEN (12): the venue broke an execution it had reported (OUCH Broken
-- Trade). A bust is a row of its own, never an update of the fill's row: its exec_id is
-- 2^62 | the broken execution's exec_id (bot4.records.BROKEN_EXEC_ID_BIT), so it has its
-- own identity (venue, exec_session, exec_id) under exec_reports_identity and is inserted
-- once by the same ON CONFLICT DO NOTHING as every execution, whatever the journal replays.
-- Its last_qty / last_price / fee / side are those of the broken fill, so it passes
-- exec_reports_fill_valid as it is; what makes it a reversal is the type:
--
--   positions    the loader applies it as the opposite fill at the same price, the fee
--                given back (bot4.db.positions.apply_fill, broken); fills counts it;
--   ledger       its legs are the broken fill's legs with debit and credit swapped (the
--                other side, the fee given back), under the bust's own exec_id;
--   reconcile    net quantities count it with the opposite sign.
--
-- The fill's row stays as loaded; view broken_fills pairs each broken fill with its bust.

ALTER TABLE exec_reports DROP CONSTRAINT exec_reports_exec_type_check;
ALTER TABLE exec_reports
    ADD CONSTRAINT exec_reports_exec_type_check CHECK (exec_type BETWEEN 1 AND 12);

CREATE VIEW broken_fills AS
SELECT f.venue, f.exec_session, f.exec_id, f.client_order_id, f.order_id, f.instrument,
       f.strategy, f.side, f.last_qty, f.last_price, f.fee, f.ts_venue_ns,
       b.exec_id AS bust_exec_id, b.seq AS bust_seq, b.ts_venue_ns AS bust_ts_venue_ns
FROM exec_reports b
JOIN exec_reports f ON f.venue = b.venue AND f.exec_session = b.exec_session
                   AND f.exec_id = b.exec_id - 4611686018427387904
WHERE b.exec_type = 12;
