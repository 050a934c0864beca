-- bot4 events database, version 9: the two-phase commit decision lives here (issue 17).
--
-- A batch with fills and a separate ledger database used to prepare both branches, append
-- its commit decision to a file (fsync), then COMMIT PREPARED both: three durable writes
-- one after the other. Now only the ledger branch is prepared; the events branch inserts
-- its decision row here and commits in one phase, and that COMMIT is the commit point: the
-- decision and the events rows become durable in one WAL flush. Then the ledger branch is
-- committed (COMMIT PREPARED).
--
-- Recovery, for each prepared ledger branch of a journal (gid bot4:<journal>:...:<token>:l):
-- INSERT (token, committed = false) ON CONFLICT (token) DO NOTHING. If that inserts, nothing
-- decided the branch (and nothing can any more: an events COMMIT still in flight would
-- meet the row under its token and fail): roll it back. If the token already holds a row,
-- that row decides. (An events transaction whose decision INSERT is uncommitted makes the
-- recovery INSERT wait for its outcome, so no decision can slip past a recovery.)
--
-- Rows are dead once their ledger branch is resolved; the loader deletes its journal's
-- rows when every decision it made since its last recovery completed (prune_after).

CREATE TABLE bot4_txn_decisions (
    token       bigint PRIMARY KEY,            -- the transaction's random 63-bit token
    journal_id  text NOT NULL,
    first_frame bigint NOT NULL,               -- the batch's journal frames [first, end)
    end_frame   bigint NOT NULL,
    fills       integer NOT NULL,
    committed   boolean NOT NULL,              -- false: rolled back by a recovery
    decided_ns  bigint NOT NULL                -- wall clock, for operators
);
CREATE INDEX bot4_txn_decisions_journal ON bot4_txn_decisions (journal_id);
