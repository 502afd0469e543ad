//! SQL functions implemented in Rust. The user-facing API is written in SQL (`sql/06_api.sql`);
//! these are the parts it needs from Rust.

use pgrx::prelude::*;

use crate::worker;

/// Starts the background worker of a session that the caller has just recorded. Internal:
/// EXECUTE is revoked from PUBLIC; `employes_sync_trigger` calls it.
#[pg_extern(volatile, parallel_unsafe)]
fn employes_sync_launch_worker(session_id: pgrx::Uuid, requested_xid: &str) -> Option<i32> {
    worker::launch(&session_id.to_string(), requested_xid)
}
