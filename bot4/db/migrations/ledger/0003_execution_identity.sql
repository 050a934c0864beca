-- bot4 ledger database, version 3: legs keyed by the execution's identity (issue 12).
--
-- The events database identifies an execution by (venue, exec_session, exec_id) since its
-- migration 0006: an exchange's match number received in another session is another
-- execution. The ledger still keyed legs on (exec_id, leg), so such a second execution's
-- legs met the first one's and were kept in ledger_conflicts instead of being entered.
-- The key is now (venue, exec_session, exec_id, leg), the same three as the events side:
--
--   venue         EXEC_REPORT.venue (0: the simulated venue);
--   exec_session  the bot4 session the report was received in, the OMS's seq >> 32. The
--                 ledger has no seq column, so the loader writes it. Legs entered before
--                 this version keep -1: their session was not recorded (every such leg was
--                 entered for a fill that was new to exec_reports, so no later fill can be
--                 the same execution again; a repeated fill never reaches the ledger).
--
-- The balance trigger groups a statement's legs by the same identity.

ALTER TABLE ledger_entries
    ADD COLUMN venue smallint NOT NULL DEFAULT 0 CHECK (venue BETWEEN 0 AND 255),
    ADD COLUMN exec_session integer NOT NULL DEFAULT -1 CHECK (exec_session >= -1);
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_pkey;
ALTER TABLE ledger_entries ADD PRIMARY KEY (venue, exec_session, exec_id, leg);

ALTER TABLE ledger_conflicts
    ADD COLUMN venue smallint NOT NULL DEFAULT 0,
    ADD COLUMN exec_session integer NOT NULL DEFAULT -1;
DROP INDEX ledger_conflicts_exec_id;
CREATE INDEX ledger_conflicts_identity ON ledger_conflicts (venue, exec_session, exec_id);

CREATE OR REPLACE FUNCTION ledger_check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT n.venue, n.exec_session, n.exec_id, sum(n.debit) AS debit,
           sum(n.credit) AS credit INTO bad
    FROM new_rows n
    GROUP BY n.venue, n.exec_session, n.exec_id
    HAVING sum(n.debit) <> sum(n.credit)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger legs of venue % session % exec_id % do not balance: debit % <> credit %',
            bad.venue, bad.exec_session, bad.exec_id, bad.debit, bad.credit
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END
$$;
