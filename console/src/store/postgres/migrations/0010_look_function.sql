-- A long poll's look in one round trip (look.rs): the same steps, locks and order as the
-- statements it replaces, run in the database. At thousands of tasks a second the client's
-- round trips (a transaction's BEGIN and COMMIT and one per step) cost the database more than
-- the steps themselves.
--
-- Rows out, by r_kind:
--   'requeued' r_id, r_group  an assigned task the agent does not hold, queued again
--   'lost'     r_id           a running task the agent does not hold
--   'cancel'   r_id           a held task the agent must kill
--   'assigned' r_id, r_lease, r_script, r_timeout, r_submitted
--   'full'                    the server has no free slot left (or had none)
-- p_take NULL: reconcile only. A missing or draining server takes nothing.
CREATE FUNCTION tasknode_look(p_server BIGINT, p_held_ids BIGINT[], p_held_leases BIGINT[],
                              p_take BIGINT, p_now BIGINT, p_requeue_reason TEXT,
                              p_lost_reason TEXT)
RETURNS TABLE (r_kind TEXT, r_id BIGINT, r_group BIGINT, r_lease BIGINT, r_script TEXT,
               r_timeout BIGINT, r_submitted BIGINT)
LANGUAGE plpgsql
-- Its statements' plans are made once per connection. Left to choose, PostgreSQL planned
-- them again at every call, which cost twice what running them did.
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    srv_group BIGINT;
    srv_draining BOOLEAN;
    found_server BOOLEAN;
    act RECORD;
    still BIGINT := 0;
    free BIGINT;
    taken BIGINT;
BEGIN
    -- The server's lock first, then its tasks', as every other writer takes them.
    SELECT s.group_id, s.draining_ms IS NOT NULL INTO srv_group, srv_draining
    FROM servers s WHERE s.id = p_server FOR NO KEY UPDATE;
    found_server := FOUND;
    FOR act IN
        SELECT t.id, t.state, t.lease, t.group_id FROM tasks t
        WHERE t.server_id = p_server AND t.state IN ('assigned', 'running')
        ORDER BY t.id FOR UPDATE
    LOOP
        IF EXISTS (SELECT 1 FROM unnest(p_held_ids, p_held_leases) AS h(id, lease)
                   WHERE h.id = act.id AND h.lease = act.lease) THEN
            still := still + 1;
        ELSIF act.state = 'assigned' THEN
            UPDATE tasks SET state = 'queued', server_id = NULL, assigned_ms = NULL,
                   reason = p_requeue_reason
            WHERE tasks.id = act.id;
            RETURN QUERY SELECT 'requeued'::TEXT, act.id, act.group_id, NULL::BIGINT,
                                NULL::TEXT, NULL::BIGINT, NULL::BIGINT;
        ELSE
            UPDATE tasks SET state = 'lost', finished_ms = p_now, reason = p_lost_reason
            WHERE tasks.id = act.id;
            RETURN QUERY SELECT 'lost'::TEXT, act.id, NULL::BIGINT, NULL::BIGINT, NULL::TEXT,
                                NULL::BIGINT, NULL::BIGINT;
        END IF;
    END LOOP;
    -- A held task stays only if it is this server's under that lease and not cancelled (a
    -- lost one's result may still come).
    RETURN QUERY
        SELECT 'cancel'::TEXT, h.id, NULL::BIGINT, NULL::BIGINT, NULL::TEXT, NULL::BIGINT,
               NULL::BIGINT
        FROM unnest(p_held_ids, p_held_leases) WITH ORDINALITY AS h(id, lease, n)
        LEFT JOIN tasks t ON t.id = h.id
        WHERE t.id IS NULL OR t.server_id IS DISTINCT FROM p_server OR t.lease <> h.lease
           OR t.cancel_requested OR t.state = 'cancelled'
        ORDER BY h.n;
    IF p_take IS NULL OR NOT found_server OR srv_draining THEN
        RETURN;
    END IF;
    free := greatest(p_take - still, 0);
    IF free = 0 THEN
        RETURN QUERY SELECT 'full'::TEXT, NULL::BIGINT, NULL::BIGINT, NULL::BIGINT,
                            NULL::TEXT, NULL::BIGINT, NULL::BIGINT;
        RETURN;
    END IF;
    RETURN QUERY
        WITH picked AS (
            SELECT t.id FROM tasks t WHERE t.group_id = srv_group AND t.state = 'queued'
            ORDER BY t.id LIMIT free FOR UPDATE SKIP LOCKED),
        done AS (
            UPDATE tasks t SET state = 'assigned', server_id = p_server, lease = t.lease + 1,
                   assigned_ms = p_now, reason = NULL
            FROM picked WHERE t.id = picked.id
            RETURNING t.id, t.lease, t.script, t.timeout_secs, t.submitted_ms)
        SELECT 'assigned'::TEXT, done.id, NULL::BIGINT, done.lease, done.script,
               done.timeout_secs, done.submitted_ms
        FROM done;
    GET DIAGNOSTICS taken = ROW_COUNT;
    IF taken >= free THEN
        RETURN QUERY SELECT 'full'::TEXT, NULL::BIGINT, NULL::BIGINT, NULL::BIGINT,
                            NULL::TEXT, NULL::BIGINT, NULL::BIGINT;
    END IF;
END
$$;
