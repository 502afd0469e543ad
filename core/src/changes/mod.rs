//! The change detector: what changed between two versions of a record. `diff` compares their
//! canonical forms field by field (periods matched by their `id`); `classify` types each
//! difference (salary, hours, contract, status, termination, hire, ...) with its effective date.

pub mod classify;
pub mod diff;

pub use classify::{classify, created, Change};
