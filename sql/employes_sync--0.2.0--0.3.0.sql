-- employes_sync 0.2.0 -> 0.3.0
-- * A deletion is recorded only when GET /employees/{id} confirms it (404). An employee missing
--   from a complete list whom the API still has is counted in the new list_moved column: the
--   list moved while the sync read it. employes_sync_status() shows it in last_session.
-- Every row is kept: one column is added (0 for the sessions so far).
\echo Use "ALTER EXTENSION employes_sync UPDATE TO '0.3.0'" to load this file. \quit

ALTER TABLE employes_sync_sessions ADD COLUMN list_moved integer NOT NULL DEFAULT 0;
COMMENT ON COLUMN employes_sync_sessions.list_moved IS 'Employees missing from a complete list whom the API still has (GET /employees/{id} answered): the list moved while the sync read it. They are not marked deleted; the next sync reads them again.';
COMMENT ON COLUMN employes_sync_sessions.employees_deleted IS 'Employees marked deleted: missing from a complete snapshot, and confirmed gone by the API (404 on GET /employees/{id}).';

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
            'list_moved', last_session.list_moved, 'errors', last_session.errors, 'error', last_session.error,
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
