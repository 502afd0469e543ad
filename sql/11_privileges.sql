-- PUBLIC, and any role that default privileges would hand new objects to (Supabase grants
-- anon/authenticated everything created in public), get nothing: every grant is explicit
-- (README, "Security and grants"). Helpers that only read JSON values stay executable, since
-- the views call them with the caller's rights.
DO $$
DECLARE
    ext oid := (SELECT oid FROM pg_extension WHERE extname = 'employes_sync');
    obj record;
    grantee text;
BEGIN
    FOR obj IN
        SELECT format('%s %s', CASE WHEN d.classid = 'pg_proc'::regclass THEN 'FUNCTION' ELSE 'TABLE' END,
                      CASE WHEN d.classid = 'pg_proc'::regclass THEN d.objid::regprocedure::text
                           ELSE d.objid::regclass::text END) AS target,
               d.classid = 'pg_proc'::regclass
                   AND d.objid::regprocedure::text IN ('employes_sync_jdate(jsonb)', 'employes_sync_jnum(jsonb)')
                   AS keep_public
          FROM pg_depend d
         WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext AND d.deptype = 'e'
           AND (d.classid = 'pg_proc'::regclass
                OR (d.classid = 'pg_class'::regclass
                    AND (SELECT relkind FROM pg_class WHERE oid = d.objid) IN ('r', 'v', 'm')))
    LOOP
        CONTINUE WHEN obj.keep_public;
        EXECUTE format('REVOKE ALL ON %s FROM PUBLIC', obj.target);
        FOR grantee IN
            SELECT rolname FROM pg_roles WHERE rolname IN ('anon', 'authenticated', 'service_role')
        LOOP
            EXECUTE format('REVOKE ALL ON %s FROM %I', obj.target, grantee);
        END LOOP;
    END LOOP;
END
$$;
