//! How the references of a batch's history writes are checked: set-wise by the write statement
//! (the per-row foreign-key triggers off), unless a trigger, rule or foreign key of the user's is
//! on the history tables.

use super::spi::{exec, spi_err};
use employes_sync_core::sync::StoreError;

/// Whether this transaction's CLOSE and WRITE may run without the per-row foreign-key triggers
/// (`session_replication_role = replica`, as a logical replication apply worker runs): WRITE
/// checks every reference of what it and CLOSE write, set-wise, taking the locks those triggers
/// would take, so the only thing replica mode may skip is what nobody else has put there: a
/// trigger or rule of the user's on the two history tables that fires in origin or replica mode
/// only, or a foreign key that is not ours. The tables are locked first, in the mode the writes
/// take anyway (ROW EXCLUSIVE), so none can be added before this transaction ends.
const LOCK_HISTORY: &str = "LOCK TABLE employes_raw_data, employes_changes IN ROW EXCLUSIVE MODE";
/// The conditions are the extension's own SQL (`employes_sync_history_is_ours`), which an
/// erasure's deletes ask too.
const SET_WISE_REFERENCES: &str = "SELECT employes_sync_history_is_ours()";

/// How the references of a batch's writes were checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum References {
    /// By the write statement, in one pass (the foreign-key triggers skipped).
    SetWise,
    /// By the foreign-key triggers, row by row (and by the write statement too).
    PerRow,
}

impl References {
    /// Locks the history tables and decides, for this transaction.
    pub(crate) fn decide() -> Result<References, StoreError> {
        exec(LOCK_HISTORY, &[], |_| Ok(()))?;
        let set_wise = exec(SET_WISE_REFERENCES, &[], |t| {
            t.first().get_one::<bool>().map_err(spi_err)
        })?;
        Ok(if set_wise == Some(true) {
            References::SetWise
        } else {
            References::PerRow
        })
    }

    /// Turns the per-row triggers off (SetWise) for the statements that follow, or gives
    /// `session_replication_role` back its configured value (a database or role may set it to
    /// `replica`, and the statements after the write must run as configured).
    pub(super) fn triggers(self, on: bool) -> Result<(), StoreError> {
        if self == References::SetWise {
            let sql = if on {
                "SET LOCAL session_replication_role TO DEFAULT"
            } else {
                "SET LOCAL session_replication_role = replica"
            };
            exec(sql, &[], |_| Ok(()))?;
        }
        Ok(())
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            References::SetWise => "set-wise",
            References::PerRow => "per-row",
        }
    }
}
