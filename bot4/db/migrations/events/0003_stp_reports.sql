-- bot4 events database, version 3: self-trade prevention reports (issue 14).
--
-- Records v2 added EXEC_STP_EXPIRED (10) and EXEC_STP_DECREMENTED (11): the venue's
-- self-trade prevention expired an order's rest, or took shares off a working order, by
-- EXEC_REPORT.prevented_qty. Neither is a fill (last_qty 0): no ledger leg, no position.
-- exec_reports accepts both types and keeps prevented_qty; exec_conflicts keeps the
-- column too (it holds a conflicting record whole). Rows loaded before carry 0.

ALTER TABLE exec_reports DROP CONSTRAINT exec_reports_exec_type_check;
ALTER TABLE exec_reports
    ADD CONSTRAINT exec_reports_exec_type_check CHECK (exec_type BETWEEN 1 AND 11);
ALTER TABLE exec_reports
    ADD COLUMN prevented_qty bigint NOT NULL DEFAULT 0 CHECK (prevented_qty >= 0);
ALTER TABLE exec_conflicts ADD COLUMN prevented_qty bigint NOT NULL DEFAULT 0;
