-- bot4 events database, version 6: an execution is identified by (venue, session, exec_id)
-- (issue 12).
--
-- Until now exec_reports was unique on exec_id alone. That holds for the simulated venue,
-- whose ids are its output sequence numbers (session << 32 | n: unique for the life of the
-- data), but not for an exchange: a gateway publishes the exchange's match number, unique
-- per venue and trading day only. The key is now
--
--   venue         EXEC_REPORT.venue: 0 the simulated venue, an order_gateway's venue_id;
--   exec_session  the bot4 session the report was received in: the OMS's seq >> 32 (every
--                 OMS record of session s is numbered from s << 32, docs/protocol.md). A
--                 gateway publishes only the executions of its own session's orders
--                 (other tokens are counted foreign), so an exchange day's execution is
--                 never received in two sessions, and a day's match numbers never meet
--                 another day's within one session;
--   exec_id       the venue's execution id.
--
-- exec_conflicts carries the same two columns: a conflict is a repeated (venue, session,
-- exec_id) with different content (bot4.db.conflicts joins on all three). Rows loaded
-- before this version get venue 0 (every one came from the simulated venue; the loader
-- did not store the field) and their session from seq.

ALTER TABLE exec_reports
    ADD COLUMN venue smallint NOT NULL DEFAULT 0 CHECK (venue BETWEEN 0 AND 255),
    ADD COLUMN exec_session integer GENERATED ALWAYS AS ((seq >> 32)::integer) STORED;
DROP INDEX exec_reports_exec_id;
CREATE UNIQUE INDEX exec_reports_identity
    ON exec_reports (venue, exec_session, exec_id) WHERE exec_id <> 0;

ALTER TABLE exec_conflicts
    ADD COLUMN venue smallint NOT NULL DEFAULT 0,
    ADD COLUMN exec_session integer GENERATED ALWAYS AS ((seq >> 32)::integer) STORED;
DROP INDEX exec_conflicts_exec_id;
CREATE INDEX exec_conflicts_identity ON exec_conflicts (venue, exec_session, exec_id);
