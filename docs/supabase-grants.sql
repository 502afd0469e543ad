-- employes_sync: grants for Supabase's roles (README, "Security and grants").
-- Run as a superuser (or the extension's owner) in the database of the extension, with the
-- extension's schema in search_path (SET search_path = extensions, public; when it lives in
-- `extensions`). Idempotent: run it again after ALTER EXTENSION ... UPDATE, and after a restore
-- (pg_dump keeps the grants but not the row level security of an extension's tables).
-- It takes back every grant it does not give: run docs/supabase-realtime.sql after it if you use it.
--   anon           nothing
--   authenticated  start a sync and read the status panel (no data)
--   service_role   the functions of syncs and schedules, and SELECT on the data, the ledger,
--                  the events and the companies (not their management, not their tokens, not
--                  webhooks)
-- Row level security on employes_raw_data, employes_changes and employes_events: only service_role has a
-- policy, so a later GRANT SELECT to another role shows it no row until you write a policy.
BEGIN;

-- Supabase's default privileges hand anon/authenticated/service_role every new object: take them
-- back, from every table, view and function of the extension (whatever a later version adds).
-- Two pure JSON helpers stay executable by PUBLIC: the views call them with the caller's rights.
DO $$
DECLARE
    obj record;
BEGIN
    FOR obj IN
        SELECT format('%s %s', CASE WHEN d.classid = 'pg_proc'::regclass THEN 'FUNCTION' ELSE 'TABLE' END,
                      CASE WHEN d.classid = 'pg_proc'::regclass THEN d.objid::regprocedure::text
                           ELSE d.objid::regclass::text END) AS target,
               d.classid = 'pg_proc'::regclass
                   AND d.objid::regprocedure::text IN ('employes_sync_jdate(jsonb)', 'employes_sync_jnum(jsonb)')
                   AS keep_public
          FROM pg_depend d
         WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
           AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'employes_sync')
           AND (d.classid = 'pg_proc'::regclass
                OR (d.classid = 'pg_class'::regclass
                    AND (SELECT relkind FROM pg_class WHERE oid = d.objid) IN ('r', 'v', 'm')))
    LOOP
        EXECUTE format('REVOKE ALL ON %s FROM %s anon, authenticated, service_role', obj.target,
                       CASE WHEN obj.keep_public THEN '' ELSE 'PUBLIC,' END);
    END LOOP;
END
$$;

-- authenticated: the Sync-now panel
GRANT EXECUTE ON FUNCTION employes_sync_trigger(text, text, uuid), employes_sync_status(),
                          employes_sync_scheduler_status()
  TO authenticated;

-- service_role: everything a back office or server job needs
GRANT EXECUTE ON FUNCTION employes_sync_trigger(text, text, uuid), employes_sync_status(),
                          employes_sync_wait(uuid, integer), employes_sync_cancel(uuid),
                          employes_employee_as_of(text, timestamptz, uuid),
                          employes_sync_schedule(text), employes_sync_unschedule(),
                          employes_sync_scheduler_status()
  TO service_role;
GRANT SELECT ON employes_sync_sessions, employes_sync_logs, employes_raw_data, employes_changes,
                employes_timeline, employes_current, employes_recent_changes,
                employes_sync_session_companies, employes_sync_companies, employes_events
  TO service_role;
GRANT EXECUTE ON FUNCTION employes_events_since(bigint, integer) TO service_role;
-- Webhooks (their URLs and secrets) are managed by the database's admin, like companies.
-- Companies and their tokens are managed by the database's admin (a superuser), not by a key an
-- app holds: employes_sync_add_company and the others stay revoked. The view shows whether a
-- company has a token of its own, never the token.

-- Row level security on the personal data. The sync's worker (a superuser) and the views (run
-- as their owner) are not affected; service_role (BYPASSRLS on Supabase) reads everything.
ALTER TABLE employes_raw_data ENABLE ROW LEVEL SECURITY;
ALTER TABLE employes_changes ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS employes_raw_data_service_role ON employes_raw_data;
CREATE POLICY employes_raw_data_service_role ON employes_raw_data FOR SELECT TO service_role USING (true);
DROP POLICY IF EXISTS employes_changes_service_role ON employes_changes;
CREATE POLICY employes_changes_service_role ON employes_changes FOR SELECT TO service_role USING (true);
-- (employes_events has row level security on from its creation.)
DROP POLICY IF EXISTS employes_events_service_role ON employes_events;
CREATE POLICY employes_events_service_role ON employes_events FOR SELECT TO service_role USING (true);

COMMIT;
