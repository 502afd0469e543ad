-- employes_sync: grants for Supabase's roles (README, "Security and grants").
-- Run as a superuser (or the extension's owner) in the database of the extension, with the
-- extension's schema in search_path (SET search_path = extensions, public; when it lives in
-- `extensions`). Idempotent: run it again after ALTER EXTENSION ... UPDATE.
--   anon           nothing
--   authenticated  start a sync and read the status panel (no data)
--   service_role   everything: the functions, and SELECT on the data and the ledger
-- Row level security on employes_raw_data and employes_changes: only service_role has a
-- policy, so a later GRANT SELECT to another role shows it no row until you write a policy.
BEGIN;

-- Supabase's default privileges hand anon/authenticated/service_role every new object: take them back.
REVOKE ALL ON employes_sync_sessions, employes_sync_logs, employes_raw_data, employes_changes,
              employes_timeline, employes_current, employes_recent_changes
  FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION employes_sync_trigger(text, text), employes_sync_wait(uuid, integer),
                       employes_sync_cancel(uuid), employes_employee_as_of(text, timestamptz),
                       employes_sync_reap_stale(), employes_sync_launch_worker(uuid, text),
                       employes_sync_instance(),
                       employes_sync_session_stale_reason(text, integer, text, timestamptz),
                       employes_sync_mask_settings(text),
                       employes_sync_status(), employes_sync_schedule(text),
                       employes_sync_unschedule(), employes_sync_scheduler_status(),
                       employes_sync_cron_check(text), employes_sync_cron_describe(text),
                       employes_sync_cron_next(text, timestamptz),
                       employes_sync_cron_interval(text, timestamptz)
  FROM PUBLIC, anon, authenticated, service_role;

-- authenticated: the Sync-now panel
GRANT EXECUTE ON FUNCTION employes_sync_trigger(text, text), employes_sync_status(),
                          employes_sync_scheduler_status()
  TO authenticated;

-- service_role: everything a back office or server job needs
GRANT EXECUTE ON FUNCTION employes_sync_trigger(text, text), employes_sync_status(),
                          employes_sync_wait(uuid, integer), employes_sync_cancel(uuid),
                          employes_employee_as_of(text, timestamptz),
                          employes_sync_schedule(text), employes_sync_unschedule(),
                          employes_sync_scheduler_status()
  TO service_role;
GRANT SELECT ON employes_sync_sessions, employes_sync_logs, employes_raw_data, employes_changes,
                employes_timeline, employes_current, employes_recent_changes
  TO service_role;

-- Row level security on the personal data. The sync's worker (a superuser) and the views (run
-- as their owner) are not affected; service_role (BYPASSRLS on Supabase) reads everything.
ALTER TABLE employes_raw_data ENABLE ROW LEVEL SECURITY;
ALTER TABLE employes_changes ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS employes_raw_data_service_role ON employes_raw_data;
CREATE POLICY employes_raw_data_service_role ON employes_raw_data FOR SELECT TO service_role USING (true);
DROP POLICY IF EXISTS employes_changes_service_role ON employes_changes;
CREATE POLICY employes_changes_service_role ON employes_changes FOR SELECT TO service_role USING (true);

COMMIT;
