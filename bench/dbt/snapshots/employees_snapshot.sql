{# The peer of employes_sync's apply step: the same employee records (list record and
   /employments body), staged by the bench in bench_dbt.employees_staged. #}
{% snapshot employees_snapshot %}
{{ config(target_schema='bench_dbt', unique_key='employee_id', strategy='check', check_cols='all') }}
select employee_id, record, employments from bench_dbt.employees_staged
{% endsnapshot %}
