//! Transactions, subtransactions and kept plans for the worker's main thread.

use std::cell::RefCell;
use std::collections::HashMap;

use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::{self, PgOid};
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiTupleTable};

use employes_sync_core::sync::StoreError;

/// Rows per fetch when the worker streams a large result.
const CURSOR_CHUNK: i64 = 10_000;

/// Runs `f` in its own transaction; a Postgres error inside is caught, the transaction aborted,
/// and the message returned.
pub(super) fn in_tx<R>(
    f: impl FnOnce() -> Result<R, StoreError> + std::panic::UnwindSafe + std::panic::RefUnwindSafe,
) -> Result<R, StoreError> {
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    let result = PgTryBuilder::new(f)
        .catch_others(|e| Err(caught_error(e)))
        .execute();
    unsafe {
        match &result {
            Ok(_) => {
                pg_sys::PopActiveSnapshot();
                pg_sys::CommitTransactionCommand();
            }
            Err(_) => pg_sys::AbortCurrentTransaction(),
        }
    }
    result
}

/// The message (and detail) of an error caught in a transaction.
fn caught_error(e: pg_sys::panic::CaughtError) -> StoreError {
    let r = match e {
        pg_sys::panic::CaughtError::PostgresError(r)
        | pg_sys::panic::CaughtError::ErrorReport(r) => r,
        pg_sys::panic::CaughtError::RustPanic { ereport, .. } => ereport,
    };
    StoreError::Sql {
        sqlstate: sqlstate(r.sql_error_code()),
        message: r.message().to_owned(),
        detail: r.detail().map(str::to_owned),
    }
}

/// The five characters of a SQLSTATE.
fn sqlstate(code: PgSqlErrorCode) -> String {
    let mut n = code as i32;
    (0..5)
        .map(|_| {
            let c = (n & 0x3F) as u8 + b'0';
            n >>= 6;
            c as char
        })
        .collect()
}

/// An error of pgrx's SPI layer (no statement ran, or a result was not what was asked).
pub(super) fn spi_err(e: pgrx::spi::SpiError) -> StoreError {
    StoreError::Sql {
        sqlstate: "XX000".into(),
        message: e.to_string(),
        detail: None,
    }
}

thread_local! {
    /// The plans of the statements a sync runs many times, prepared on first use and kept for
    /// the worker's life (SPI_keepplan: valid across its transactions, replanned by PostgreSQL
    /// if a table they use changes).
    static PLANS: RefCell<HashMap<&'static str, &'static OwnedPreparedStatement>> =
        RefCell::new(HashMap::new());
}

/// The kept plan of `sql`, prepared the first time with the types of `args`.
fn plan(
    client: &SpiClient<'_>,
    sql: &'static str,
    args: &[DatumWithOid<'_>],
) -> Result<&'static OwnedPreparedStatement, StoreError> {
    if let Some(p) = PLANS.with(|m| m.borrow().get(sql).copied()) {
        return Ok(p);
    }
    let types: Vec<PgOid> = args.iter().map(|a| PgOid::from_untagged(a.oid())).collect();
    let kept = client.prepare_mut(sql, &types).map_err(spi_err)?.keep();
    // A handful of statements, each kept once for the worker's life.
    let kept: &'static OwnedPreparedStatement = Box::leak(Box::new(kept));
    PLANS.with(|m| m.borrow_mut().insert(sql, kept));
    Ok(kept)
}

/// Runs `sql` through its kept plan, in the caller's transaction; `f` reads the result.
pub(super) fn exec<R>(
    sql: &'static str,
    args: &[DatumWithOid<'_>],
    f: impl FnOnce(SpiTupleTable<'_>) -> Result<R, StoreError>,
) -> Result<R, StoreError> {
    Spi::connect_mut(|client| {
        let kept = plan(client, sql, args)?;
        let table = client.update(kept, None, args).map_err(spi_err)?;
        f(table)
    })
}

/// Runs `f` in a subtransaction of the current transaction, as a PL/pgSQL block with an
/// EXCEPTION clause does: what it wrote stays when it succeeds and is rolled back, alone, when it
/// fails (a Postgres error or an `Err`).
pub(super) fn in_subtx<R>(f: impl FnOnce() -> Result<R, StoreError>) -> Result<R, StoreError> {
    // SAFETY: the transaction is open (the caller runs in `in_tx`); the memory context and
    // resource owner of the caller are restored after the subtransaction ends, either way.
    let (context, owner) = unsafe { (pg_sys::CurrentMemoryContext, pg_sys::CurrentResourceOwner) };
    unsafe {
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(context);
    }
    let result = PgTryBuilder::new(std::panic::AssertUnwindSafe(f))
        .catch_others(|e| Err(caught_error(e)))
        .execute();
    unsafe {
        match result {
            Ok(_) => pg_sys::ReleaseCurrentSubTransaction(),
            Err(_) => pg_sys::RollbackAndReleaseCurrentSubTransaction(),
        }
        pg_sys::MemoryContextSwitchTo(context);
        pg_sys::CurrentResourceOwner = owner;
    }
    result
}

/// Runs `query` through a cursor, CURSOR_CHUNK rows per fetch, freeing each chunk before the
/// next: a large result is never held whole by the worker. In the caller's transaction.
pub(super) fn for_each_row(
    query: &str,
    args: &[DatumWithOid<'_>],
    mut f: impl FnMut(pgrx::spi::SpiHeapTupleData<'_>) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    Spi::connect(|client| {
        let mut cursor = client.open_cursor(query, args);
        loop {
            let mut n = 0;
            for row in cursor.fetch(CURSOR_CHUNK).map_err(spi_err)? {
                n += 1;
                f(row)?;
            }
            // SAFETY: the chunk just read is no longer referenced; SPI would otherwise keep
            // every chunk until the connection ends.
            unsafe { pg_sys::SPI_freetuptable(pg_sys::SPI_tuptable) };
            if n < CURSOR_CHUNK {
                return Ok(());
            }
        }
    })
}
