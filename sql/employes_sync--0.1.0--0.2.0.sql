-- employes_sync 0.1.0 -> 0.2.0
-- * pg_dump carries the history: every table that holds state, and its sequence, is registered
--   with pg_extension_config_dump.
-- * A session records the server and database its worker runs in (worker_instance), so a session
--   that was running in a dump, on an old primary or before a restart is recognised as dead.
-- * employes_sync_status() reads only (STABLE): it works over PostgREST GET and on a standby.
-- * employes_sync_trigger and employes_sync_cancel raise 25006 on a standby; errors a caller
--   causes map to HTTP 4xx over PostgREST: PT409 (cancel of an ended session, wait in the
--   triggering transaction) and PT408 (wait timed out), instead of 55000 and 57014.
-- Every row is kept: one column is added, nothing is dropped or rewritten.
\echo Use "ALTER EXTENSION employes_sync UPDATE TO '0.2.0'" to load this file. \quit

ALTER TABLE employes_sync_sessions ADD COLUMN worker_instance text;
COMMENT ON COLUMN employes_sync_sessions.worker_instance IS 'The server and database the session''s worker runs in (employes_sync_instance()): a queued or running session that came from another database (a restored dump), an old primary (a failover) or before a restart has no worker here.';

SELECT pg_extension_config_dump('employes_sync_sessions', '');
SELECT pg_extension_config_dump('employes_sync_logs', '');
SELECT pg_extension_config_dump('employes_sync_logs_id_seq', '');
SELECT pg_extension_config_dump('employes_raw_data', '');
SELECT pg_extension_config_dump('employes_raw_data_id_seq', '');
SELECT pg_extension_config_dump('employes_changes', '');
SELECT pg_extension_config_dump('employes_changes_id_seq', '');
SELECT pg_extension_config_dump('employes_timeline', '');

CREATE FUNCTION employes_sync_instance() RETURNS text
STRICT VOLATILE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'employes_sync_instance_wrapper';
COMMENT ON FUNCTION employes_sync_instance() IS
    'Where this backend runs (system identifier:timeline:postmaster start:database OID); NULL on a standby. A session records it: one from another instance has no worker here.';

CREATE FUNCTION employes_sync_session_stale_reason(status text, worker_pid integer, worker_instance text,
                                                   created_at timestamptz)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    here text[];
    there text[] := string_to_array(worker_instance, ':');
BEGIN
    IF status IS NULL OR status NOT IN ('queued', 'running') OR pg_is_in_recovery() THEN
        RETURN NULL;
    END IF;
    here := string_to_array(employes_sync_instance(), ':');
    IF cardinality(there) = 4 THEN
        IF there[1] <> here[1] OR there[4] <> here[4] THEN
            RETURN format('this session was %s in another database when its rows were copied here (a restored dump or a cloned database): no worker of this server runs it', status);
        ELSIF there[2] <> here[2] THEN
            RETURN format('the server failed over while the session was %s: it ran on the old primary (timeline %s), this server was promoted (timeline %s), and its worker is gone', status, there[2], here[2]);
        ELSIF there[3] <> here[3] THEN
            RETURN format('the server restarted while the session was %s: its background worker (pid %s) is gone', status, coalesce(worker_pid::text, 'none'));
        END IF;
    END IF;
    IF employes_sync_worker_alive(worker_pid) THEN
        RETURN NULL;
    END IF;
    -- a queued session's worker is started by the trigger that queued it: give it a moment
    IF status = 'queued' AND created_at >= clock_timestamp() - interval '10 seconds' THEN
        RETURN NULL;
    END IF;
    RETURN format('the background worker (pid %s) is gone while the session was %s: it was killed, crashed, or the server restarted',
                  coalesce(worker_pid::text, 'none'), status);
END
$$;
COMMENT ON FUNCTION employes_sync_session_stale_reason(text, integer, text, timestamptz) IS
    'Why a queued or running session has no live worker on this server (killed, crashed, restarted, failed over, or restored from another database); NULL while it has one, and always on a standby.';

CREATE OR REPLACE FUNCTION employes_sync_reap_stale() RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    n integer;
BEGIN
    -- Nothing can be written on a standby or in a read-only transaction: the watchdog of the
    -- primary (or of this server once promoted) records them.
    IF pg_is_in_recovery() OR current_setting('transaction_read_only')::boolean THEN
        RETURN 0;
    END IF;
    WITH stale AS (
        SELECT s.id, employes_sync_session_stale_reason(s.status, s.worker_pid, s.worker_instance, s.created_at) AS reason
          FROM employes_sync_sessions s
         WHERE s.status IN ('queued', 'running')
    ), dead AS (
        UPDATE employes_sync_sessions s
           SET status = 'error', completed_at = clock_timestamp(), errors = s.errors + 1, error = stale.reason
          FROM stale
         WHERE s.id = stale.id AND stale.reason IS NOT NULL AND s.status IN ('queued', 'running')
        RETURNING s.id, s.error)
    INSERT INTO employes_sync_logs (session_id, level, step, message)
    SELECT id, 'error', 'recovery', error FROM dead;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION employes_sync_reap_stale() IS
    'Marks queued/running sessions that have no live worker on this server as error, with the reason (employes_sync_session_stale_reason). Called by the watchdog, every trigger and every wait; does nothing on a standby or in a read-only transaction.';

CREATE OR REPLACE FUNCTION employes_sync_trigger(source text DEFAULT 'manual', triggered_by text DEFAULT NULL)
RETURNS employes_sync_sessions
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    s employes_sync_sessions;
    who text := employes_sync_trigger.triggered_by;
    src text := employes_sync_trigger.source;
    claims text;
    pid integer;
BEGIN
    IF src IS NULL OR src NOT IN ('manual', 'scheduler', 'api', 'webhook') THEN
        RAISE EXCEPTION 'invalid sync source: %', coalesce(quote_literal(src), 'NULL')
            USING ERRCODE = '22023', HINT = 'source must be one of: manual, scheduler, api, webhook';
    END IF;
    IF who IS NULL THEN
        claims := nullif(current_setting('request.jwt.claims', true), '');
        IF claims IS NOT NULL THEN
            BEGIN
                who := nullif(btrim(claims::jsonb ->> 'email'), '');
            EXCEPTION WHEN invalid_text_representation THEN
                who := NULL;
            END;
        END IF;
        who := coalesce(who, nullif(current_setting('role'), 'none'), session_user::text);
    END IF;
    IF length(who) = 0 OR length(who) > 320 OR who ~ '[[:cntrl:]]' THEN
        RAISE EXCEPTION 'invalid triggered_by: % characters; it must be 1 to 320 characters without control characters', length(who)
            USING ERRCODE = '22023';
    END IF;
    IF pg_is_in_recovery() THEN
        RAISE EXCEPTION 'cannot start a sync: this server is a read-only standby, and syncs run on the primary'
            USING ERRCODE = '25006',
                  HINT = 'call employes_sync_trigger() on the primary; employes_sync_status(), employes_sync_wait() and the views work here';
    END IF;
    IF current_setting('transaction_read_only')::boolean THEN
        RAISE EXCEPTION 'cannot start a sync in a read-only transaction'
            USING ERRCODE = '25006', HINT = 'over PostgREST, call /rpc/employes_sync_trigger with POST, not GET';
    END IF;

    -- Fast path: a live session is running, so join it without queueing behind the lock.
    SELECT * INTO s FROM employes_sync_sessions ss
     WHERE ss.status IN ('queued', 'running')
       AND employes_sync_session_stale_reason(ss.status, ss.worker_pid, ss.worker_instance, ss.created_at) IS NULL;
    IF NOT FOUND THEN
        -- Triggers that may start a sync queue up here, so every concurrent caller sees the one
        -- active session (the unique index makes a second one impossible in any case).
        PERFORM pg_advisory_xact_lock('employes_sync_sessions'::regclass::oid::integer, 0);
        PERFORM employes_sync_reap_stale();
        SELECT * INTO s FROM employes_sync_sessions WHERE status IN ('queued', 'running');
    END IF;
    IF FOUND THEN
        INSERT INTO employes_sync_logs (session_id, level, step, message, details)
        VALUES (s.id, 'info', 'trigger', format('%s trigger by %s joined this %s session', src, who, s.status),
                jsonb_build_object('source', src, 'triggered_by', who));
        RAISE NOTICE 'a sync is already %: returning session %', s.status, s.id;
        RETURN s;
    END IF;

    INSERT INTO employes_sync_sessions (source, triggered_by, requested_xid, worker_instance)
    VALUES (src, who, pg_current_xact_id(), employes_sync_instance())
    RETURNING * INTO s;
    INSERT INTO employes_sync_logs (session_id, level, step, message, details)
    VALUES (s.id, 'info', 'trigger', format('queued by %s (%s)', who, src), jsonb_build_object('source', src, 'triggered_by', who));

    pid := employes_sync_launch_worker(s.id, s.requested_xid::text);
    IF pid IS NULL THEN
        UPDATE employes_sync_sessions
           SET status = 'error', completed_at = clock_timestamp(), errors = 1,
               error = format('no background worker could be started: all max_worker_processes (%s) slots are in use; raise max_worker_processes or retry later',
                              current_setting('max_worker_processes'))
         WHERE id = s.id
        RETURNING * INTO s;
        INSERT INTO employes_sync_logs (session_id, level, step, message) VALUES (s.id, 'error', 'trigger', s.error);
        RAISE WARNING '%', s.error;
    ELSE
        UPDATE employes_sync_sessions SET worker_pid = pid WHERE id = s.id RETURNING * INTO s;
    END IF;
    RETURN s;
END
$$;
COMMENT ON FUNCTION employes_sync_trigger(text, text) IS
    'Starts a sync in a background worker and returns its session at once. source: manual, scheduler, api or webhook. triggered_by defaults to the PostgREST JWT email claim, else the role. If a sync is already queued or running, returns that session (with a NOTICE). SQLSTATE 22023 for a bad argument, 25006 on a standby or in a read-only transaction.';

CREATE OR REPLACE FUNCTION employes_sync_wait(session_id uuid, timeout_seconds integer DEFAULT 600)
RETURNS employes_sync_sessions
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    s employes_sync_sessions;
    deadline timestamptz;
    stale text;
BEGIN
    IF employes_sync_wait.session_id IS NULL THEN
        RAISE EXCEPTION 'session_id must not be NULL' USING ERRCODE = '22023';
    END IF;
    IF timeout_seconds IS NULL OR timeout_seconds < 0 OR timeout_seconds > 86400 THEN
        RAISE EXCEPTION 'timeout_seconds must be between 0 and 86400, got %', coalesce(timeout_seconds::text, 'NULL')
            USING ERRCODE = '22023';
    END IF;
    deadline := clock_timestamp() + make_interval(secs => timeout_seconds);
    LOOP
        PERFORM employes_sync_reap_stale();
        SELECT * INTO s FROM employes_sync_sessions WHERE id = employes_sync_wait.session_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'no sync session with id %', employes_sync_wait.session_id USING ERRCODE = '22023';
        END IF;
        IF s.status NOT IN ('queued', 'running') THEN
            RETURN s;
        END IF;
        -- Dead, but not recorded (a read-only transaction cannot): its end as it will be recorded.
        stale := employes_sync_session_stale_reason(s.status, s.worker_pid, s.worker_instance, s.created_at);
        IF stale IS NOT NULL THEN
            s.status := 'error';
            s.error := stale;
            s.completed_at := clock_timestamp();
            RETURN s;
        END IF;
        IF s.requested_xid = pg_current_xact_id_if_assigned() THEN
            RAISE EXCEPTION 'session % was triggered in this transaction: commit before waiting for it', s.id
                USING ERRCODE = 'PT409';
        END IF;
        IF clock_timestamp() >= deadline THEN
            RAISE EXCEPTION 'session % is still % after % seconds', s.id, s.status, timeout_seconds
                USING ERRCODE = 'PT408', HINT = 'wait again, or stop it with employes_sync_cancel()';
        END IF;
        PERFORM pg_sleep(0.05);
    END LOOP;
END
$$;
COMMENT ON FUNCTION employes_sync_wait(uuid, integer) IS
    'Blocks until the session ends and returns its final row. SQLSTATE PT408 (HTTP 408 over PostgREST) after timeout_seconds, PT409 when the session was triggered in this same transaction, 22023 for a bad argument or an unknown id.';

CREATE OR REPLACE FUNCTION employes_sync_cancel(session_id uuid)
RETURNS employes_sync_sessions
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    s employes_sync_sessions;
BEGIN
    IF employes_sync_cancel.session_id IS NULL THEN
        RAISE EXCEPTION 'session_id must not be NULL' USING ERRCODE = '22023';
    END IF;
    IF pg_is_in_recovery() THEN
        RAISE EXCEPTION 'cannot cancel a sync: this server is a read-only standby, and syncs run on the primary'
            USING ERRCODE = '25006', HINT = 'call employes_sync_cancel() on the primary';
    END IF;
    UPDATE employes_sync_sessions
       SET cancel_requested_at = coalesce(cancel_requested_at, clock_timestamp())
     WHERE id = employes_sync_cancel.session_id AND status IN ('queued', 'running')
    RETURNING * INTO s;
    IF FOUND THEN
        INSERT INTO employes_sync_logs (session_id, level, step, message)
        VALUES (s.id, 'info', 'cancel', format('cancel requested by %s', coalesce(nullif(current_setting('role'), 'none'), session_user::text)));
        RETURN s;
    END IF;
    SELECT * INTO s FROM employes_sync_sessions WHERE id = employes_sync_cancel.session_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no sync session with id %', employes_sync_cancel.session_id USING ERRCODE = '22023';
    END IF;
    RAISE EXCEPTION 'session % has already ended with status %', s.id, s.status
        USING ERRCODE = 'PT409', HINT = 'only a queued or running session can be cancelled';
END
$$;
COMMENT ON FUNCTION employes_sync_cancel(uuid) IS
    'Asks a queued or running sync to stop at the next page boundary; it ends as cancelled, with nothing half-applied and no deletions. SQLSTATE PT409 (HTTP 409 over PostgREST) when the session has already ended, 22023 for NULL or an unknown id, 25006 on a standby.';

CREATE OR REPLACE FUNCTION employes_sync_status()
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    running employes_sync_sessions;
    last_session employes_sync_sessions;
    deciding employes_sync_sessions;
    stale text;
    last_success timestamptz;
    scheduler jsonb;
    max_age interval := interval '6 hours';
    state text;
    running_json jsonb;
    last_json jsonb;
BEGIN
    scheduler := employes_sync_scheduler_status();
    IF (scheduler ->> 'enabled')::boolean AND (scheduler ->> 'interval_seconds')::bigint > 0 THEN
        max_age := make_interval(secs => (scheduler ->> 'interval_seconds')::bigint);
    END IF;

    SELECT * INTO last_session FROM employes_sync_sessions
     WHERE status NOT IN ('queued', 'running') ORDER BY completed_at DESC, created_at DESC LIMIT 1;
    -- A cancelled sync says nothing about the data: the state follows the last one that ran to an end.
    SELECT * INTO deciding FROM employes_sync_sessions
     WHERE status IN ('completed', 'partial', 'error') ORDER BY completed_at DESC, created_at DESC LIMIT 1;
    SELECT max(completed_at) INTO last_success FROM employes_sync_sessions WHERE status = 'completed';
    SELECT * INTO running FROM employes_sync_sessions
     WHERE status IN ('queued', 'running') ORDER BY created_at DESC LIMIT 1;
    IF running.id IS NOT NULL THEN
        stale := employes_sync_session_stale_reason(running.status, running.worker_pid, running.worker_instance,
                                                    running.created_at);
        IF stale IS NOT NULL THEN
            -- The newest session (none can start while one is active), ended as it will be recorded.
            last_session := running;
            last_session.status := 'error';
            last_session.error := stale;
            last_session.errors := running.errors + 1;
            last_session.completed_at := coalesce(running.heartbeat_at, running.started_at, running.created_at);
            deciding := last_session;
            running := NULL;
        END IF;
    END IF;

    state := CASE
        WHEN running.id IS NOT NULL THEN 'syncing'
        WHEN deciding.id IS NULL THEN 'never'
        WHEN deciding.status IN ('error', 'partial') THEN 'error'
        WHEN deciding.completed_at >= clock_timestamp() - max_age THEN 'current'
        ELSE 'outdated'
    END;

    IF running.id IS NOT NULL THEN
        running_json := jsonb_build_object(
            'id', running.id, 'status', running.status, 'source', running.source, 'triggered_by', running.triggered_by,
            'created_at', running.created_at, 'started_at', running.started_at, 'heartbeat_at', running.heartbeat_at,
            'pages_total', running.pages_total, 'pages_done', running.pages_done,
            'employees_total', running.employees_total, 'employees_done', running.employees_done,
            'api_requests', running.api_requests,
            -- One request per list page and one per employee's history: the work left.
            'progress_percent', CASE
                WHEN running.status = 'queued'
                  OR coalesce(running.pages_total, 0) + coalesce(running.employees_total, 0) = 0 THEN 0
                ELSE least(99, floor(100.0 * (running.pages_done + running.employees_done)
                    / (coalesce(running.pages_total, 0) + coalesce(running.employees_total, 0))))::integer
            END,
            'cancel_requested', running.cancel_requested_at IS NOT NULL);
    END IF;
    IF last_session.id IS NOT NULL THEN
        last_json := jsonb_build_object(
            'id', last_session.id, 'status', last_session.status, 'source', last_session.source,
            'triggered_by', last_session.triggered_by, 'created_at', last_session.created_at,
            'started_at', last_session.started_at, 'completed_at', last_session.completed_at,
            'duration_seconds', round(extract(epoch FROM last_session.completed_at - coalesce(last_session.started_at, last_session.created_at)), 1),
            'employees_total', last_session.employees_total, 'employees_done', last_session.employees_done,
            'api_requests', last_session.api_requests, 'versions_written', last_session.versions_written,
            'changes_detected', last_session.changes_detected, 'employees_deleted', last_session.employees_deleted,
            'errors', last_session.errors, 'error', last_session.error,
            'worker_gone', stale IS NOT NULL);
    END IF;

    RETURN jsonb_build_object(
        'state', state,
        'checked_at', clock_timestamp(),
        'standby', pg_is_in_recovery(),
        'last_session', last_json,
        'last_success_at', last_success,
        'running_session', running_json,
        'outdated_after_seconds', extract(epoch FROM max_age)::bigint,
        'employees_synced', (SELECT count(*) FROM employes_raw_data WHERE kind = 'employee' AND valid_to IS NULL),
        'changes_24h', (SELECT count(*) FROM employes_changes WHERE detected_at > clock_timestamp() - interval '24 hours'),
        'scheduler', scheduler);
END
$$;
COMMENT ON FUNCTION employes_sync_status() IS
    'Everything a "Sync now" panel shows, as jsonb: state (never, syncing, current, outdated = last completed sync older than the schedule''s interval or 6 hours when unscheduled, error = the last sync that ran to an end failed or was partial), standby, last_session (worker_gone: ended because its worker is gone, not yet recorded), last_success_at, running_session with progress_percent, employees_synced, changes_24h, scheduler (employes_sync_scheduler_status()). Reads only: works in a read-only transaction and on a standby.';

-- The new functions get nothing for PUBLIC (nor for Supabase's roles, which default privileges
-- may have handed them); the grants on the existing ones are the user's and stay as they are.
REVOKE ALL ON FUNCTION employes_sync_instance() FROM PUBLIC;
REVOKE ALL ON FUNCTION employes_sync_session_stale_reason(text, integer, text, timestamptz) FROM PUBLIC;
DO $$
DECLARE
    grantee text;
BEGIN
    FOR grantee IN SELECT rolname FROM pg_roles WHERE rolname IN ('anon', 'authenticated', 'service_role') LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION employes_sync_instance() FROM %I', grantee);
        EXECUTE format('REVOKE ALL ON FUNCTION employes_sync_session_stale_reason(text, integer, text, timestamptz) FROM %I', grantee);
    END LOOP;
END
$$;
