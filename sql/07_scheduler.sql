-- The scheduler and the status panel: one pg_cron job named 'employes-sync' that runs
-- employes_sync_trigger('scheduler', 'system'), its report (plain-words schedule, next run, recent
-- runs joined to the sessions they created or joined), and employes_sync_status() for a
-- "Sync now" panel. pg_cron is optional: cron.* is only referenced through EXECUTE, after checking
-- that pg_cron is installed, so this extension installs with or without it.
-- pg_cron 1.4 evaluates schedules in UTC; so do employes_sync_cron_next/_interval.

CREATE FUNCTION employes_sync_schedule(cron text DEFAULT '0 */6 * * *')
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    expr text;
    ext_schema text;
    command text;
    job_id bigint;
BEGIN
    IF employes_sync_schedule.cron IS NULL THEN
        RAISE EXCEPTION 'cron expression must not be NULL' USING ERRCODE = '22023',
            HINT = 'e.g. SELECT employes_sync_schedule(''0 */6 * * *'') for every 6 hours; employes_sync_unschedule() stops the schedule';
    END IF;
    -- Validated (22023 with what is wrong) before pg_cron sees it.
    expr := employes_sync_cron_check(employes_sync_schedule.cron);

    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
        IF current_setting('cron.database_name', true) IS NOT NULL
           AND current_setting('cron.database_name', true) <> current_database() THEN
            RAISE EXCEPTION 'pg_cron is not installed in database %', current_database() USING ERRCODE = '55000',
                DETAIL = format('pg_cron keeps its jobs in the database named by cron.database_name (%s).', current_setting('cron.database_name', true)),
                HINT = format('set cron.database_name = %L in postgresql.conf and restart, then CREATE EXTENSION pg_cron', current_database());
        END IF;
        RAISE EXCEPTION 'pg_cron is not installed in this database: scheduling needs it' USING ERRCODE = '55000',
            HINT = 'add pg_cron to shared_preload_libraries, restart, then CREATE EXTENSION pg_cron';
    END IF;

    SELECT pronamespace::regnamespace::text INTO ext_schema
      FROM pg_proc WHERE oid = 'employes_sync_trigger(text, text, uuid)'::regprocedure;
    -- Schema-qualified: pg_cron runs the command with the default search_path.
    command := format('SELECT %s.employes_sync_trigger(%L, %L)', ext_schema, 'scheduler', 'system');

    -- pg_cron 1.4: a job with the same name (and owner) is replaced, keeping its jobid.
    EXECUTE 'SELECT cron.schedule($1, $2, $3)' INTO job_id USING 'employes-sync', expr, command;
    RAISE NOTICE 'employes-sync scheduled (job %): %, next run at % UTC', job_id, employes_sync_cron_describe(expr),
        to_char(employes_sync_cron_next(expr, clock_timestamp()) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI');
    RETURN employes_sync_scheduler_status();
END
$$;
COMMENT ON FUNCTION employes_sync_schedule(text) IS
    'Creates or replaces the pg_cron job ''employes-sync'' (in this database) that runs employes_sync_trigger(''scheduler'', ''system''); the cron expression (5 fields, UTC) is validated first (SQLSTATE 22023). Returns employes_sync_scheduler_status(). Needs pg_cron (SQLSTATE 55000 otherwise).';

CREATE FUNCTION employes_sync_unschedule()
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    job_id bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
        RAISE EXCEPTION 'pg_cron is not installed in this database: there is no schedule to remove' USING ERRCODE = '55000',
            HINT = 'add pg_cron to shared_preload_libraries, restart, then CREATE EXTENSION pg_cron';
    END IF;
    EXECUTE 'SELECT jobid FROM cron.job WHERE jobname = $1 AND username = current_user ORDER BY jobid DESC LIMIT 1'
        INTO job_id USING 'employes-sync';
    IF job_id IS NULL THEN
        RAISE NOTICE 'employes-sync was not scheduled';
        RETURN false;
    END IF;
    EXECUTE 'SELECT cron.unschedule($1::bigint)' USING job_id;
    RETURN true;
END
$$;
COMMENT ON FUNCTION employes_sync_unschedule() IS
    'Removes the pg_cron job ''employes-sync''; true if there was one. A sync already running goes on.';

-- Messages name the API's URL and the company, which are superuser-only settings: a role that
-- cannot read them (an app's role on the status panel) sees them masked.
CREATE FUNCTION employes_sync_mask_settings(message text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    caller text := coalesce(nullif(current_setting('role'), 'none'), session_user::text);
    base_url text;
    company text;
BEGIN
    IF message IS NULL
       OR (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = caller)
       OR pg_has_role(caller, 'pg_read_all_settings', 'MEMBER') THEN
        RETURN message;
    END IF;
    base_url := nullif(btrim(current_setting('employes_sync.base_url', true)), '');
    company := nullif(btrim(current_setting('employes_sync.company_id', true)), '');
    IF base_url IS NOT NULL THEN
        message := replace(message, rtrim(base_url, '/'), '<employes_sync.base_url>');
    END IF;
    IF company IS NOT NULL THEN
        message := replace(message, company, '<employes_sync.company_id>');
    END IF;
    RETURN message;
END
$$;
COMMENT ON FUNCTION employes_sync_mask_settings(text) IS
    'A message with the API base URL and the company id masked, unless the calling role (SET ROLE, else the session user) may read those settings (a superuser, or a member of pg_read_all_settings).';

CREATE FUNCTION employes_sync_scheduler_status()
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    job_id bigint;
    job_schedule text;
    job_command text;
    job_active boolean;
    ext_schema text;
    command text;
    description text;
    next_run timestamptz;
    every interval;
    runs jsonb;
    out jsonb;
BEGIN
    out := jsonb_build_object(
        'available', false, 'enabled', false, 'job_name', 'employes-sync', 'job_id', NULL,
        'schedule', NULL, 'description', NULL, 'timezone', 'UTC',
        'timezone_note', 'pg_cron 1.4 runs schedules in UTC; times here are timestamptz',
        'next_run_at', NULL, 'interval_seconds', NULL, 'command', NULL,
        'last_run', NULL, 'recent_runs', '[]'::jsonb);
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
        RETURN out || jsonb_build_object('message',
            'pg_cron is not installed in this database: add pg_cron to shared_preload_libraries, restart, then CREATE EXTENSION pg_cron');
    END IF;
    out := out || jsonb_build_object('available', true);

    SELECT pronamespace::regnamespace::text INTO ext_schema
      FROM pg_proc WHERE oid = 'employes_sync_trigger(text, text, uuid)'::regprocedure;
    command := format('SELECT %s.employes_sync_trigger(%L, %L)', ext_schema, 'scheduler', 'system');

    -- Ours first (the functions run as the extension owner, who owns the job).
    EXECUTE 'SELECT jobid, schedule, command, active FROM cron.job WHERE jobname = $1
              ORDER BY (username = current_user) DESC, jobid DESC LIMIT 1'
        INTO job_id, job_schedule, job_command, job_active USING 'employes-sync';

    IF job_id IS NOT NULL THEN
        BEGIN
            description := employes_sync_cron_describe(job_schedule);
            IF job_active THEN
                next_run := employes_sync_cron_next(job_schedule, clock_timestamp());
            END IF;
            every := employes_sync_cron_interval(job_schedule, clock_timestamp());
        EXCEPTION WHEN invalid_parameter_value THEN
            -- Changed behind our back (cron.alter_job) to something we do not read.
            description := format('cron %s (not understood by employes_sync; set it again with employes_sync_schedule())', job_schedule);
        END;
        out := out || jsonb_build_object(
            'enabled', job_active, 'job_id', job_id, 'schedule', job_schedule, 'description', description,
            'next_run_at', next_run, 'interval_seconds', extract(epoch FROM every)::bigint, 'command', job_command);
    END IF;

    -- Runs of our job, or of our command under an earlier job (unscheduled, scheduled again).
    -- A run is linked to the session its trigger created or joined through the trigger's log line
    -- (source scheduler, logged during the run), else to a scheduler session created during it.
    EXECUTE $q$
        SELECT coalesce(jsonb_agg(x.run ORDER BY x.runid DESC), '[]'::jsonb)
          FROM (SELECT r.runid, jsonb_build_object(
                        'run_id', r.runid, 'job_id', r.jobid, 'status', r.status,
                        'start_time', r.start_time, 'end_time', r.end_time, 'message', r.return_message,
                        'session_id', s.id, 'session_status', s.status,
                        'joined', CASE WHEN s.id IS NULL THEN NULL ELSE s.source <> 'scheduler' OR s.created_at < r.start_time - interval '2 seconds' END,
                        'session', CASE WHEN s.id IS NULL THEN NULL ELSE jsonb_build_object(
                            'id', s.id, 'status', s.status, 'source', s.source, 'triggered_by', s.triggered_by,
                            'created_at', s.created_at, 'started_at', s.started_at, 'completed_at', s.completed_at,
                            'versions_written', s.versions_written, 'changes_detected', s.changes_detected,
                            'error', employes_sync_mask_settings(s.error)) END) AS run
                  FROM cron.job_run_details r
                  LEFT JOIN LATERAL (
                        SELECT l.session_id FROM employes_sync_logs l
                         WHERE l.step = 'trigger' AND l.details ->> 'source' = 'scheduler'
                           AND l.logged_at >= r.start_time - interval '2 seconds'
                           AND l.logged_at <= coalesce(r.end_time, clock_timestamp()) + interval '1 second'
                         ORDER BY l.logged_at, l.id LIMIT 1) lg ON r.start_time IS NOT NULL
                  LEFT JOIN LATERAL (
                        SELECT ss.id FROM employes_sync_sessions ss
                         WHERE ss.source = 'scheduler'
                           AND ss.created_at >= r.start_time - interval '2 seconds'
                           AND ss.created_at <= coalesce(r.end_time, clock_timestamp()) + interval '1 second'
                         ORDER BY ss.created_at LIMIT 1) sc ON r.start_time IS NOT NULL
                  LEFT JOIN employes_sync_sessions s ON s.id = coalesce(lg.session_id, sc.id)
                 WHERE r.jobid = $1 OR r.command = $2
                 ORDER BY r.runid DESC
                 LIMIT 10) x
    $q$ INTO runs USING job_id, command;

    RETURN out || jsonb_build_object('recent_runs', runs, 'last_run', runs -> 0);
END
$$;
COMMENT ON FUNCTION employes_sync_scheduler_status() IS
    'The pg_cron schedule as jsonb: available (pg_cron installed), enabled, job_id, schedule, description in plain words, timezone (UTC), next_run_at, interval_seconds, command, last_run and recent_runs (the last 10 cron.job_run_details rows: status, start_time, end_time, message, and the session each run created or joined).';

-- Reads only: PostgREST runs GET /rpc/employes_sync_status in a read-only transaction, and a
-- standby is read-only too. A session whose worker is gone is reported as the error it is; the
-- watchdog and the next trigger or wait record it.
CREATE FUNCTION employes_sync_status()
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
            'list_moved', last_session.list_moved, 'records_rejected', last_session.records_rejected,
            'errors', last_session.errors, 'error', employes_sync_mask_settings(last_session.error),
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
        'companies', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                          'company_id', c.company_id, 'name', c.name, 'enabled', c.enabled,
                          'has_own_token', c.has_own_token,
                          'employees_synced', (SELECT count(*) FROM employes_raw_data r
                                                WHERE r.company_id = c.company_id AND r.kind = 'employee' AND r.valid_to IS NULL),
                          'last_session_id', c.last_session_id, 'last_status', c.last_status,
                          'last_completed_at', c.last_completed_at,
                          'last_error', employes_sync_mask_settings(c.last_error),
                          'token_expires_at', c.token_expires_at,
                          'token_warning', employes_sync_token_message(c.company_id, c.name, c.has_own_token,
                                                                       c.token_expires_at),
                          -- counts and progress of its last (or running) sync
                          'last_counts', (SELECT jsonb_build_object(
                                               'pages_done', sc.pages_done, 'pages_total', sc.pages_total,
                                               'employees_done', sc.employees_done, 'employees_total', sc.employees_total,
                                               'api_requests', sc.api_requests, 'retries', sc.retries,
                                               'versions_written', sc.versions_written,
                                               'changes_detected', sc.changes_detected,
                                               'employees_deleted', sc.employees_deleted, 'list_moved', sc.list_moved,
                                               'records_rejected', sc.records_rejected, 'errors', sc.errors)
                                            FROM employes_sync_session_companies sc
                                           WHERE sc.session_id = c.last_session_id AND sc.company_id = c.company_id))
                          ORDER BY c.added_at, c.company_id), '[]'::jsonb)
                        FROM employes_sync_companies c WHERE NOT c.removed),
        -- the earliest expiry of the enabled companies' tokens, and what to do about those
        -- that expire within 30 days
        'token_expires_at', (SELECT min(c.token_expires_at) FROM employes_sync_companies c WHERE c.enabled AND NOT c.removed),
        'warnings', (SELECT coalesce(jsonb_agg(w.message ORDER BY w.token_expires_at), '[]'::jsonb)
                       FROM (SELECT c.token_expires_at,
                                    employes_sync_token_message(c.company_id, c.name, c.has_own_token, c.token_expires_at) AS message
                               FROM employes_sync_companies c WHERE c.enabled AND NOT c.removed) w
                      WHERE w.message IS NOT NULL),
        'last_event_id', (SELECT max(id) FROM employes_events),
        'webhooks', (SELECT jsonb_build_object(
                         'subscriptions', count(DISTINCT s.id),
                         'pending', count(d.id) FILTER (WHERE d.status = 'pending'),
                         'failing', count(d.id) FILTER (WHERE d.status = 'pending' AND d.attempts > 0),
                         'failed', count(d.id) FILTER (WHERE d.status = 'failed'),
                         'dead', count(d.id) FILTER (WHERE d.status = 'dead'),
                         'oldest_pending_at', min(d.created_at) FILTER (WHERE d.status = 'pending'))
                       FROM employes_webhook_subscriptions s
                       LEFT JOIN employes_webhook_deliveries d ON d.subscription_id = s.id
                      WHERE s.unsubscribed_at IS NULL),
        'employees_synced', (SELECT count(*) FROM employes_raw_data WHERE kind = 'employee' AND valid_to IS NULL),
        'changes_24h', (SELECT count(*) FROM employes_changes WHERE detected_at > clock_timestamp() - interval '24 hours'),
        'scheduler', scheduler);
END
$$;
COMMENT ON FUNCTION employes_sync_status() IS
    'Everything a "Sync now" panel shows, as jsonb: state (never, syncing, current, outdated = last completed sync older than the schedule''s interval or 6 hours when unscheduled, error = the last sync that ran to an end failed or was partial), standby, last_session (worker_gone: ended because its worker is gone, not yet recorded), last_success_at, running_session with progress_percent, companies (each with its last or running sync''s status, error, counts and progress, token_expires_at and token_warning), token_expires_at (the earliest of the enabled companies), warnings (each token that expires within 30 days, or has expired), last_event_id, webhooks (active subscriptions; pending, failing, failed and dead deliveries), employees_synced, changes_24h, scheduler (employes_sync_scheduler_status()). Reads only: works in a read-only transaction and on a standby.';

COMMENT ON FUNCTION employes_sync_cron_check(text) IS
    'Validates a 5-field cron expression as pg_cron 1.4 runs it and returns it normalised; SQLSTATE 22023 saying what is wrong.';
COMMENT ON FUNCTION employes_sync_cron_describe(text) IS
    'A cron expression in plain words, e.g. "every 6 hours", "daily at 02:00 UTC".';
COMMENT ON FUNCTION employes_sync_cron_next(text, timestamptz) IS
    'The first run of a cron expression strictly after the given time (UTC, as pg_cron 1.4 runs it).';
COMMENT ON FUNCTION employes_sync_cron_interval(text, timestamptz) IS
    'The gap between the next two runs of a cron expression after the given time: the age past which a sync is outdated.';

-- Nothing for PUBLIC: grants are given explicitly (see README, "Security and grants").
REVOKE ALL ON FUNCTION employes_sync_schedule(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION employes_sync_unschedule() FROM PUBLIC;
REVOKE ALL ON FUNCTION employes_sync_mask_settings(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION employes_sync_scheduler_status() FROM PUBLIC;
REVOKE ALL ON FUNCTION employes_sync_status() FROM PUBLIC;
REVOKE ALL ON FUNCTION employes_sync_cron_check(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION employes_sync_cron_describe(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION employes_sync_cron_next(text, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION employes_sync_cron_interval(text, timestamptz) FROM PUBLIC;
