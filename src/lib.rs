//! employes_sync: keeps a current and historical copy of Employes.nl payroll data inside
//! PostgreSQL. `guc` defines the settings, `api` the Rust-side SQL functions, `worker` the
//! background worker and its storage; the pure logic lives in the `employes-sync-core` crate and
//! the schema and SQL API in `sql/`.

use pgrx::prelude::*;

mod api;
mod guc;
mod scheduler;
#[cfg(any(test, feature = "pg_test"))]
mod testing;
mod worker;

::pgrx::pg_module_magic!();

extension_sql_file!("../sql/01_sessions.sql", name = "sessions", bootstrap);
extension_sql_file!(
    "../sql/02_raw_data.sql",
    name = "raw_data",
    requires = ["sessions"]
);
extension_sql_file!(
    "../sql/03_changes.sql",
    name = "changes",
    requires = ["raw_data"]
);
extension_sql_file!(
    "../sql/04_timeline.sql",
    name = "timeline",
    requires = [
        "changes",
        api::employes_sync_jdate,
        api::employes_sync_employment_events
    ]
);
extension_sql_file!(
    "../sql/05_views.sql",
    name = "views",
    requires = ["timeline"]
);
extension_sql_file!(
    "../sql/06_api.sql",
    name = "api",
    requires = [
        "views",
        api::employes_sync_launch_worker,
        api::employes_sync_worker_alive,
        api::employes_sync_instance
    ]
);
extension_sql_file!(
    "../sql/07_scheduler.sql",
    name = "scheduler",
    requires = [
        "api",
        scheduler::employes_sync_cron_check,
        scheduler::employes_sync_cron_describe,
        scheduler::employes_sync_cron_next,
        scheduler::employes_sync_cron_interval
    ]
);
extension_sql_file!(
    "../sql/08_companies.sql",
    name = "companies",
    requires = [
        "scheduler",
        api::employes_sync_token_expiry,
        api::employes_sync_setting_token_expiry
    ]
);
extension_sql_file!(
    "../sql/09_events.sql",
    name = "events",
    requires = [
        "companies",
        api::employes_webhook_new_secret,
        api::employes_webhook_secret_ok
    ]
);
extension_sql_file!(
    "../sql/10_personal_data.sql",
    name = "personal_data",
    requires = ["events"]
);
extension_sql_file!(
    "../sql/11_privileges.sql",
    name = "privileges",
    requires = ["personal_data"]
);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    guc::init();
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        worker::register_watchdog();
        worker::register_webhook_worker();
        guc::install_log_redaction();
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn schema_is_installed_with_comments() {
        let missing: Option<i64> = Spi::get_one(
            "SELECT count(*) FROM unnest(ARRAY['employes_sync_sessions','employes_sync_logs','employes_raw_data',
                 'employes_changes','employes_timeline','employes_current','employes_recent_changes']) t(name)
              WHERE obj_description(to_regclass(t.name), 'pg_class') IS NULL",
        )
        .unwrap();
        assert_eq!(missing, Some(0));
    }

    #[pg_test(
        error = "duplicate key value violates unique constraint \"employes_sync_sessions_one_active\""
    )]
    fn two_active_sessions_are_impossible() {
        for _ in 0..2 {
            Spi::run("INSERT INTO employes_sync_sessions (source, triggered_by) VALUES ('manual', 'test')").unwrap();
        }
    }

    #[pg_test]
    fn public_gets_nothing() {
        let granted = Spi::get_one::<i64>(
            "SELECT count(*) FROM information_schema.role_table_grants WHERE grantee = 'PUBLIC' AND table_name LIKE 'employes%'",
        )
        .unwrap();
        assert_eq!(granted, Some(0));
        let executable = Spi::get_one::<String>(
            "SELECT string_agg(p.proname, ',' ORDER BY p.proname) FROM pg_proc p
              WHERE p.proname LIKE 'employes%' AND has_function_privilege('public', p.oid, 'EXECUTE')",
        )
        .unwrap();
        assert_eq!(
            executable.as_deref(),
            Some("employes_sync_jdate,employes_sync_jnum")
        );
    }
}

#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![
            "shared_preload_libraries = 'pg_cron,employes_sync'",
            "cron.database_name = 'pgrx_tests'",
        ]
    }
}
