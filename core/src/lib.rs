//! Everything employes_sync does that needs no Postgres: canonical hashing, field-level diffs,
//! change classification, cron schedules, the Employes API client with its fetch pipeline, and
//! signed webhook deliveries.
//! The extension crate only binds these to SQL, SPI and the background worker.

pub mod canonical;
pub mod changes;
pub mod client;
pub mod cron;
pub mod deletions;
pub mod erasure;
pub mod model;
pub mod shape;
pub mod sync;
pub mod text;
pub mod timeline;
pub mod token;
pub mod versions;
pub mod webhook;
