-- employes_sync: grants for Supabase's roles (README, "Security and grants").
-- Run as a superuser (or the extension's owner) in the database of the extension, with the
-- extension's schema in search_path (SET search_path = extensions, public; when it lives in
-- `extensions`). Idempotent: run it again after ALTER EXTENSION ... UPDATE, and after a restore
-- (pg_dump keeps the grants but not the row level security of an extension's tables).
-- It takes back every grant it does not give: run docs/supabase-realtime.sql after it if you use it.
--   anon           nothing
--   authenticated  start a sync and read the status panel; HR users (JWT
--                  app_metadata.employes_hr = true) also read what a "Recent changes" panel
--                  shows: employes_current, employes_recent_changes, employes_changes,
--                  employes_timeline, employes_events (and the versions, and three columns
--                  of the sessions, that those views read). Every other signed-in user sees
--                  0 rows of them.
--   service_role   the functions of syncs and schedules, and SELECT on the data, the ledger,
--                  the events and the companies (not their management, not their tokens, not
--                  webhooks, not erasure)
-- Every table of the extension has row level security on (the extension enables it): a role
-- sees only the rows a policy below lets through, so a later GRANT SELECT to another role
-- shows it no row until you write a policy. The views read with the caller's rights.
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
-- authenticated: the HR panel, its rows only for HR users (the policies below)
GRANT SELECT ON employes_current, employes_recent_changes, employes_changes, employes_timeline, employes_events,
                employes_raw_data
  TO authenticated;
-- (the views read as the caller: employes_recent_changes needs these columns of the sessions)
GRANT SELECT (id, source, triggered_by) ON employes_sync_sessions TO authenticated;
GRANT EXECUTE ON FUNCTION employes_events_since(bigint, integer) TO authenticated;

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
-- (employes_sync_companies shows when each company's token expires: it calls these as its reader)
GRANT EXECUTE ON FUNCTION employes_sync_token_expiry(text), employes_sync_setting_token_expiry() TO service_role;
-- Webhooks (their URLs and secrets) and erasure are the database admin's, like companies:
-- employes_webhook_*, employes_forget_employee and employes_erasures stay revoked. Companies and
-- their tokens are managed by the admin (a superuser), not by a key an app holds: the view
-- shows whether a company has a token of its own, never the token.

-- Row level security. service_role (BYPASSRLS on Supabase) reads every row of what it is
-- granted; authenticated reads the HR panel's rows only with the claim
-- app_metadata.employes_hr = true in its JWT (set it with the Supabase admin API, never from the
-- browser: app_metadata is not writable by the user). The sync's worker and the SECURITY
-- DEFINER functions are not affected.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['employes_sync_sessions', 'employes_sync_logs', 'employes_raw_data', 'employes_changes',
                             'employes_timeline', 'employes_sync_session_companies', 'employes_events'] LOOP
        EXECUTE format('DROP POLICY IF EXISTS %I ON %I', t || '_service_role', t);
        EXECUTE format('CREATE POLICY %I ON %I FOR SELECT TO service_role USING (true)', t || '_service_role', t);
    END LOOP;
    FOREACH t IN ARRAY ARRAY['employes_sync_sessions', 'employes_raw_data', 'employes_changes', 'employes_timeline',
                             'employes_events'] LOOP
        EXECUTE format('DROP POLICY IF EXISTS %I ON %I', t || '_hr', t);
        -- evaluated once per query (the scalar subquery), not once per row
        EXECUTE format($p$CREATE POLICY %I ON %I FOR SELECT TO authenticated
                          USING ((SELECT coalesce(nullif(current_setting('request.jwt.claims', true), '')::jsonb
                                                  #> '{app_metadata,employes_hr}' = 'true'::jsonb, false)))$p$,
                       t || '_hr', t);
    END LOOP;
END
$$;

COMMIT;
