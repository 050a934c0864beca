-- bot4 events database, version 4: the model registry (issue 21).
--
-- The registry's files (bot4/models/registry.py, $BOT4_DATA_DIR/models) are where a
-- change commits (a rename); these tables mirror them: one row per registered model,
-- immutable, and one row per lifecycle event, keyed by the event's own id so the mirror
-- can send the whole log again after a crash and each event lands once.

CREATE TABLE model_registry (
    model_id        integer PRIMARY KEY CHECK (model_id > 0),  -- ORDER_INTENT.model_version, ORDER.model_id
    name            text    NOT NULL,
    kind            text    NOT NULL CHECK (kind IN ('linear', 'trees')),
    sha256          text    NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),  -- the artifact's address
    bytes           bigint  NOT NULL CHECK (bytes > 0),
    n_params        integer NOT NULL CHECK (n_params >= 0),
    features        jsonb   NOT NULL,                -- feature names, in the order scored
    fingerprint     text    NOT NULL,                -- sha256 of the names, 16 hex digits
    training        jsonb   NOT NULL DEFAULT '{}',   -- as given at register
    parity          jsonb   NOT NULL DEFAULT '{}',   -- the register-time parity check
    registered_ts_ns bigint NOT NULL,                -- wall clock (time.time_ns)
    registered_by   text    NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now()
);

-- A registered model never changes: its id names exactly one artifact for ever.
CREATE FUNCTION bot4_model_registry_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'model_registry rows are immutable (model %)', OLD.model_id
        USING ERRCODE = 'B4002';
END $$;
CREATE TRIGGER model_registry_immutable BEFORE UPDATE OR DELETE ON model_registry
    FOR EACH ROW EXECUTE FUNCTION bot4_model_registry_immutable();

CREATE TABLE model_lifecycle (
    event_id     uuid    PRIMARY KEY,               -- the registry's event id
    model_id     integer NOT NULL REFERENCES model_registry (model_id),
    event        text    NOT NULL CHECK (event IN ('registered', 'shadow', 'canary', 'ab',
                     'ramp', 'champion', 'retired', 'rolled_back')),
    slot         text    NOT NULL,                  -- '' for 'registered'
    generation   bigint  NOT NULL CHECK (generation >= 0),  -- the slot's generation it made
    ts_ns        bigint  NOT NULL,                  -- wall clock (time.time_ns)
    who          text    NOT NULL,
    why          text    NOT NULL DEFAULT '',
    details      jsonb   NOT NULL DEFAULT '{}',     -- pct, split, ramp; a rollback's tests
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX model_lifecycle_slot ON model_lifecycle (slot, generation);
