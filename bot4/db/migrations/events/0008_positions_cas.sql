-- bot4 events database, version 8: positions written by compare-and-set (issue 17).
--
-- A small batch with fills used to take two round trips on the events database: the
-- first inserted the rows and read the positions the fills move, the second wrote the
-- positions (computed by the loader: average cost, bot4.records.accounting), the load
-- position and COMMIT / PREPARE. A loader now keeps the positions it last committed and,
-- when it has every position a batch moves, sends the whole batch in one round trip: the
-- positions are written by bot4_positions_cas, which refuses (SQLSTATE B4003, so the
-- transaction cannot commit) unless
--
--   * every fill of the batch was inserted by this transaction (the executions INSERT
--     records how many it inserted in the transaction-local setting bot4.inserted_fills:
--     a duplicate or a conflict inserts fewer), and
--   * every position row is the one the loader computed from: its fills counter (which
--     only grows, one per fill) equals the expected one, or the row is absent where the
--     loader expected none (expect_fills 0; a row exists only once a fill made it).
--
-- On B4003 the loader rolls the batch back, forgets its positions and loads the batch the
-- two-round-trip way. Another loader moving the same positions meanwhile is therefore
-- either seen here or a serialization failure (SERIALIZABLE); nothing else changes.

CREATE FUNCTION bot4_positions_cas(
    fills_expected bigint,
    strategies integer[], instruments integer[], expect_fills bigint[],
    qtys bigint[], costs numeric[], realised numeric[], new_fees numeric[], bought bigint[],
    sold bigint[], new_fills bigint[], last_exec_ids numeric[], last_ts bigint[]
) RETURNS integer
    LANGUAGE plpgsql AS $$
DECLARE
    inserted text := current_setting('bot4.inserted_fills', true);
    n integer;
BEGIN
    IF inserted IS NULL OR inserted = '' OR inserted::bigint <> fills_expected THEN
        RAISE EXCEPTION 'positions: % fills expected inserted, % were', fills_expected,
            coalesce(nullif(inserted, ''), 'none') USING ERRCODE = 'B4003';
    END IF;
    FOR k IN 1 .. coalesce(array_length(strategies, 1), 0) LOOP
        IF expect_fills[k] = 0 THEN
            INSERT INTO positions AS p (strategy, instrument, qty, cost, realised_pnl, fees,
                                        bought_qty, sold_qty, fills, last_exec_id,
                                        last_ts_venue_ns, updated_at)
            VALUES (strategies[k], instruments[k], qtys[k], costs[k], realised[k], new_fees[k],
                    bought[k], sold[k], new_fills[k], last_exec_ids[k], last_ts[k], now())
            ON CONFLICT (strategy, instrument) DO NOTHING;
        ELSE
            UPDATE positions
               SET qty = qtys[k], cost = costs[k], realised_pnl = realised[k], fees = new_fees[k],
                   bought_qty = bought[k], sold_qty = sold[k], fills = new_fills[k],
                   last_exec_id = last_exec_ids[k], last_ts_venue_ns = last_ts[k],
                   updated_at = now()
             WHERE strategy = strategies[k] AND instrument = instruments[k]
               AND positions.fills = expect_fills[k];
        END IF;
        GET DIAGNOSTICS n = ROW_COUNT;
        IF n <> 1 THEN
            RAISE EXCEPTION 'positions: strategy % instrument % is not at % fills',
                strategies[k], instruments[k], expect_fills[k] USING ERRCODE = 'B4003';
        END IF;
    END LOOP;
    RETURN coalesce(array_length(strategies, 1), 0);
END
$$;
