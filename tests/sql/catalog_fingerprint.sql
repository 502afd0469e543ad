-- One row per fact about the extension's objects (the members that pg_depend records, and the
-- indexes, constraints, triggers, policies, columns and comments that hang off them), in a
-- form that does not depend on OIDs: an upgraded database and a fresh install of the same
-- version must give the same rows. Used by the upgrade test (tests/tests/lifecycle.rs).
WITH ext AS (
    SELECT oid, extconfig, extcondition FROM pg_extension WHERE extname = 'employes_sync'
), members AS (
    SELECT d.classid, d.objid
      FROM pg_depend d, ext
     WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'
), rels AS (
    SELECT c.oid, c.oid::regclass::text AS name, c.relkind
      FROM members m JOIN pg_class c ON c.oid = m.objid
     WHERE m.classid = 'pg_class'::regclass
), facts AS (
    -- every member, by its identity
    SELECT 'member ' || (pg_identify_object(m.classid, m.objid, 0)).type || ' '
           || (pg_identify_object(m.classid, m.objid, 0)).identity AS fact
      FROM members m
    UNION ALL
    -- relations: kind, options, row security, privileges, comment
    SELECT format('relation %s kind=%s options=%s rls=%s/%s acl=%s comment=%s', r.name, c.relkind, c.reloptions,
                  c.relrowsecurity, c.relforcerowsecurity, c.relacl, obj_description(c.oid, 'pg_class'))
      FROM rels r JOIN pg_class c ON c.oid = r.oid
    UNION ALL
    -- columns, in order: type, collation, nullability, default, identity, privileges, comment
    SELECT format('column %s #%s %s %s collate=%s notnull=%s default=%s identity=%s generated=%s acl=%s comment=%s',
                  r.name, row_number() OVER (PARTITION BY r.oid ORDER BY a.attnum), a.attname,
                  format_type(a.atttypid, a.atttypmod), co.collname, a.attnotnull,
                  pg_get_expr(ad.adbin, ad.adrelid), a.attidentity, a.attgenerated, a.attacl,
                  col_description(r.oid, a.attnum))
      FROM rels r
      JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
      LEFT JOIN pg_collation co ON co.oid = a.attcollation
      LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
    UNION ALL
    SELECT format('constraint %s %s %s', r.name, con.conname, pg_get_constraintdef(con.oid))
      FROM rels r JOIN pg_constraint con ON con.conrelid = r.oid
    UNION ALL
    SELECT format('index %s comment=%s', pg_get_indexdef(i.indexrelid), obj_description(i.indexrelid, 'pg_class'))
      FROM rels r JOIN pg_index i ON i.indrelid = r.oid
    UNION ALL
    SELECT format('trigger %s enabled=%s', pg_get_triggerdef(t.oid), t.tgenabled)
      FROM rels r JOIN pg_trigger t ON t.tgrelid = r.oid AND NOT t.tgisinternal
    UNION ALL
    SELECT format('policy %s %s %s roles=%s using=%s check=%s', r.name, p.polname, p.polcmd, p.polroles::regrole[],
                  pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid))
      FROM rels r JOIN pg_policy p ON p.polrelid = r.oid
    UNION ALL
    SELECT format('rule %s %s', r.name, pg_get_ruledef(ru.oid))
      FROM rels r JOIN pg_rewrite ru ON ru.ev_class = r.oid
    UNION ALL
    SELECT format('view %s %s', r.name, pg_get_viewdef(r.oid))
      FROM rels r WHERE r.relkind IN ('v', 'm')
    UNION ALL
    SELECT format('sequence %s %s start=%s inc=%s min=%s max=%s cache=%s cycle=%s', r.name, s.seqtypid::regtype,
                  s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle)
      FROM rels r JOIN pg_sequence s ON s.seqrelid = r.oid
    UNION ALL
    -- functions: the whole definition (volatility, security, settings, cost, rows, body),
    -- privileges and comment
    SELECT format('function %s acl=%s comment=%s%s', p.oid::regprocedure, p.proacl, obj_description(p.oid, 'pg_proc'),
                  E'\n' || pg_get_functiondef(p.oid))
      FROM members m JOIN pg_proc p ON p.oid = m.objid
     WHERE m.classid = 'pg_proc'::regclass AND p.prokind IN ('f', 'p', 'w')
    UNION ALL
    SELECT format('type %s comment=%s', t.oid::regtype, obj_description(t.oid, 'pg_type'))
      FROM members m JOIN pg_type t ON t.oid = m.objid
     WHERE m.classid = 'pg_type'::regclass
    UNION ALL
    -- what pg_dump carries: the tables and sequences registered with pg_extension_config_dump
    SELECT format('dumped %s where %s', cfg.rel::regclass, cfg.cond)
      FROM ext, unnest(ext.extconfig, ext.extcondition) AS cfg (rel, cond)
    UNION ALL
    -- the privileges pg_dump takes as the extension's own
    SELECT format('init_privs %s %s %s', (pg_identify_object(ip.classoid, ip.objoid, ip.objsubid)).identity,
                  ip.privtype, ip.initprivs)
      FROM members m JOIN pg_init_privs ip ON ip.classoid = m.classid AND ip.objoid = m.objid
)
SELECT fact FROM facts ORDER BY fact;
