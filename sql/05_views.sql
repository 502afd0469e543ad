CREATE VIEW employes_current AS
SELECT r.employee_id,
       employes_sync_jnum(r.payload -> 'employee_number')::bigint AS employee_number,
       concat_ws(' ', nullif(btrim(r.payload ->> 'first_name'), ''), nullif(btrim(r.payload ->> 'surname_prefix'), ''),
                 nullif(btrim(r.payload ->> 'surname'), '')) AS full_name,
       r.payload ->> 'first_name' AS first_name,
       r.payload ->> 'surname_prefix' AS surname_prefix,
       r.payload ->> 'surname' AS surname,
       r.payload ->> 'initials' AS initials,
       r.payload ->> 'email' AS email,
       r.payload ->> 'phone_number' AS phone_number,
       r.payload ->> 'status' AS status,
       employes_sync_jdate(r.payload -> 'date_of_birth') AS date_of_birth,
       r.payload ->> 'city' AS city,
       employes_sync_jdate(r.payload #> '{employment,start_date}') AS employment_start,
       employes_sync_jdate(r.payload #> '{employment,end_date}') AS employment_end,
       employes_sync_jdate(r.payload #> '{employment,contract,start_date}') AS contract_start,
       employes_sync_jdate(r.payload #> '{employment,contract,end_date}') AS contract_end,
       r.payload #>> '{employment,contract,employee_type}' AS employee_type,
       employes_sync_jnum(r.payload #> '{employment,contract,hours_per_week}') AS hours_per_week,
       employes_sync_jnum(r.payload #> '{employment,contract,days_per_week}') AS days_per_week,
       employes_sync_jnum(r.payload #> '{employment,salary,hour_wage}') AS hour_wage,
       employes_sync_jnum(r.payload #> '{employment,salary,month_wage}') AS month_wage,
       employes_sync_jnum(r.payload #> '{employment,salary,yearly_wage}') AS salary_yearly_wage,
       employes_sync_jdate(r.payload #> '{employment,salary,start_date}') AS salary_start,
       employes_sync_jnum(r.payload -> 'yearly_wage') AS yearly_wage,
       r.version,
       r.valid_from AS last_changed_at,
       r.first_session_id AS last_changed_session_id,
       r.payload,
       r.company_id
FROM employes_raw_data r
WHERE r.kind = 'employee' AND r.valid_to IS NULL;

COMMENT ON VIEW employes_current IS
    'The latest state of every employee currently listed by Employes, in readable columns (wrong-typed API values read as NULL); payload holds the full record, company_id its company.';

CREATE VIEW employes_recent_changes AS
SELECT c.id, c.detected_at, c.effective_date, c.employee_id, n.full_name AS employee_name, c.kind, c.change_type,
       c.field_path, c.old_value, c.new_value, c.session_id, s.source, s.triggered_by, c.company_id
FROM employes_changes c
JOIN employes_sync_sessions s ON s.id = c.session_id
LEFT JOIN LATERAL (
    SELECT concat_ws(' ', nullif(btrim(r.payload ->> 'first_name'), ''), nullif(btrim(r.payload ->> 'surname_prefix'), ''),
                     nullif(btrim(r.payload ->> 'surname'), '')) AS full_name
    FROM employes_raw_data r
    WHERE r.company_id = c.company_id AND r.kind = 'employee' AND r.employee_id = c.employee_id
    ORDER BY r.version DESC
    LIMIT 1
) n ON true
WHERE c.detected_at > now() - interval '30 days'
ORDER BY c.detected_at DESC, c.id;

COMMENT ON VIEW employes_recent_changes IS
    'Changes detected in the last 30 days (by detected_at, not effective date), newest first, with the employee''s name and the session that saw them.';
