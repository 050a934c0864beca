-- bot4 events database, version 7: which model produced each order (issue 21).
--
-- ORDER.model_id (records v2) is the model registry id whose intent became the order
-- (ORDER_INTENT.model_version copied by risk and the OMS; 0 = no registered model: the
-- topology's plain .npy model, an OMS cancel of its own, rows loaded before this version).
-- It is stored on both order tables, so outcomes can be attributed per model. An
-- EXEC_REPORT does not carry it: executions are attributed through their order
-- (exec_reports_by_model below), by client_order_id, which is unique per session.
-- bigint: the record field is a uint32 (model_registry.model_id is an integer > 0).

ALTER TABLE orders
    ADD COLUMN model_id bigint NOT NULL DEFAULT 0 CHECK (model_id >= 0);
ALTER TABLE order_actions
    ADD COLUMN model_id bigint NOT NULL DEFAULT 0 CHECK (model_id >= 0);
CREATE INDEX orders_model_id ON orders (model_id) WHERE model_id <> 0;

-- Every execution report with the model of the order it answers (0: none, or the order is
-- not in the database).
CREATE VIEW exec_reports_by_model AS
    SELECT e.*, coalesce(o.model_id, 0) AS model_id
    FROM exec_reports e
    LEFT JOIN LATERAL (
        SELECT model_id FROM orders o
        WHERE o.client_order_id = e.client_order_id
        ORDER BY o.order_id
        LIMIT 1
    ) o ON true;
