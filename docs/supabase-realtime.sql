-- employes_sync: new events in a signed-in HR user's browser, through Supabase Realtime
-- (README, "Events out").
-- Run as a superuser (or the extension's owner) in the database of the extension, with the
-- extension's schema in search_path, after docs/supabase-grants.sql (and again after each run of
-- it). Idempotent: run it again after a pg_restore. pg_dump keeps the grant below but not the
-- policy nor the publication's membership of an extension's table; until it runs again, HR users
-- see no event (employes_events has row level security on from its creation, so it is closed
-- rather than open).
--
-- Realtime's "Postgres Changes" streams the tables of the publication supabase_realtime, and
-- shows a subscriber each new row that the subscriber may SELECT: as the role authenticated,
-- with the user's JWT claims in request.jwt.claims. So employes_events goes into the
-- publication, authenticated may SELECT it, and a row level security policy lets through only
-- HR users: those whose app_metadata.employes_hr is true, the claim docs/supabase-grants.sql names
-- (app_metadata is set by your backend with the service key; a user cannot change it). Every
-- other signed-in user sees no event.
--
-- In the browser:
--   supabase.channel('employes').on('postgres_changes',
--     { event: 'INSERT', schema: '<the extension's schema>', table: 'employes_events' },
--     (msg) => console.log(msg.new.event_type, msg.new.employee_id, msg.new.data)).subscribe()
BEGIN;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'supabase_realtime') THEN
        CREATE PUBLICATION supabase_realtime;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid
                    WHERE p.pubname = 'supabase_realtime' AND r.prrelid = 'employes_events'::regclass) THEN
        EXECUTE format('ALTER PUBLICATION supabase_realtime ADD TABLE %s', 'employes_events'::regclass);
    END IF;
END
$$;

-- The same grant and policy as docs/supabase-grants.sql gives (stated here for the reader).
ALTER TABLE employes_events ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS employes_events_hr ON employes_events;
CREATE POLICY employes_events_hr ON employes_events FOR SELECT TO authenticated
    USING ((SELECT coalesce(nullif(current_setting('request.jwt.claims', true), '')::jsonb
                            #> '{app_metadata,employes_hr}' = 'true'::jsonb, false)));
GRANT SELECT ON employes_events TO authenticated;

COMMIT;
