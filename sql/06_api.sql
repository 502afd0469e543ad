-- The SQL API: trigger, wait, cancel, point-in-time reads. SECURITY DEFINER functions pin their
-- search_path (pg_catalog first) so nothing planted in a caller's path can run in their place.

COMMENT ON FUNCTION employes_sync_worker_alive(integer) IS
    'Whether a sync worker with this pid is running (from the background-worker slots, as pg_stat_activity.backend_type shows it).';

COMMENT ON FUNCTION employes_sync_instance() IS
    'Where this backend runs (system identifier:timeline:postmaster start:database OID); NULL on a standby. A session records it: one from another instance has no worker here.';

-- Why a queued or running session has no live worker, or NULL while it has one (or may have:
-- on a standby the sync runs on the primary, which a standby cannot ask). Reads only, so that
-- employes_sync_status() can report a dead run in a read-only transaction or on a standby, and
-- employes_sync_reap_stale() records what it says.
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

CREATE FUNCTION employes_sync_reap_stale() RETURNS integer
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
        RETURNING s.id, s.error
    ), parts AS (
        -- and the part of the company it was syncing
        UPDATE employes_sync_session_companies sc
           SET status = 'error', completed_at = clock_timestamp(), errors = sc.errors + 1, error = dead.error
          FROM dead
         WHERE sc.session_id = dead.id AND sc.status = 'running')
    INSERT INTO employes_sync_logs (session_id, level, step, message)
    SELECT id, 'error', 'recovery', error FROM dead;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION employes_sync_reap_stale() IS
    'Marks queued/running sessions that have no live worker on this server as error (and the company each was syncing), with the reason (employes_sync_session_stale_reason). Called by the watchdog, every trigger and every wait; does nothing on a standby or in a read-only transaction.';

CREATE FUNCTION employes_sync_trigger(source text DEFAULT 'manual', triggered_by text DEFAULT NULL,
                                      company_id uuid DEFAULT NULL)
RETURNS employes_sync_sessions
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    s employes_sync_sessions;
    who text := employes_sync_trigger.triggered_by;
    src text := employes_sync_trigger.source;
    company uuid := employes_sync_trigger.company_id;
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
    IF company IS NOT NULL THEN
        PERFORM employes_sync_check_company(company, 'sync');
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

    -- The company of employes_sync.company_id is one of the companies to sync (0.1.0's setup).
    PERFORM employes_sync_register_setting_company();

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

    INSERT INTO employes_sync_sessions (source, triggered_by, requested_xid, worker_instance, requested_company)
    VALUES (src, who, pg_current_xact_id(), employes_sync_instance(), company)
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
COMMENT ON FUNCTION employes_sync_trigger(text, text, uuid) IS
    'Starts a sync in a background worker and returns its session at once: of every enabled company, or of company_id alone. source: manual, scheduler, api or webhook. triggered_by defaults to the PostgREST JWT email claim, else the role. If a sync is already queued or running, returns that session (with a NOTICE). SQLSTATE 22023 for a bad argument or an unknown or removed company, PT409 for a paused one, 25006 on a standby or in a read-only transaction.';

CREATE FUNCTION employes_sync_wait(session_id uuid, timeout_seconds integer DEFAULT 600)
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

CREATE FUNCTION employes_sync_cancel(session_id uuid)
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

CREATE FUNCTION employes_employee_as_of(employee_id text, at timestamptz DEFAULT now(), company_id uuid DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    companies uuid[];
    record jsonb;
BEGIN
    IF employee_id IS NULL OR at IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT array_agg(DISTINCT r.company_id) INTO companies
      FROM employes_raw_data r
     WHERE r.kind = 'employee' AND r.employee_id = employes_employee_as_of.employee_id
       AND (employes_employee_as_of.company_id IS NULL OR r.company_id = employes_employee_as_of.company_id);
    IF cardinality(companies) > 1 THEN
        RAISE EXCEPTION 'employee % exists in % companies', employee_id, cardinality(companies)
            USING ERRCODE = '21000', HINT = 'give company_id: employes_employee_as_of(employee_id, at, company_id)';
    END IF;
    SELECT r.payload INTO record
      FROM employes_raw_data r
     WHERE r.company_id = companies[1] AND r.kind = 'employee' AND r.employee_id = employes_employee_as_of.employee_id
       AND r.valid_from <= at AND (r.valid_to IS NULL OR r.valid_to > at);
    RETURN record;
END
$$;
COMMENT ON FUNCTION employes_employee_as_of(text, timestamptz, uuid) IS
    'The employee record as we knew it at that moment; NULL before we first saw the employee or while deleted. company_id may be left out unless the id exists in several companies (SQLSTATE 21000).';

-- Nothing for PUBLIC: grants are given explicitly (see README, "Security and grants").
REVOKE ALL ON FUNCTION employes_sync_instance() FROM PUBLIC;
REVOKE ALL ON FUNCTION employes_sync_session_stale_reason(text, integer, text, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION employes_sync_reap_stale() FROM PUBLIC;
REVOKE ALL ON FUNCTION employes_sync_trigger(text, text, uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION employes_sync_wait(uuid, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION employes_sync_cancel(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION employes_employee_as_of(text, timestamptz, uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION employes_sync_launch_worker(uuid, text) FROM PUBLIC;
