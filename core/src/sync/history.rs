//! The history collector: each employee's `GET /employees/{id}/employments`, the changed ones
//! queued for their batch.

use std::time::Instant;

use serde_json::json;

use super::{with_employee, Level, Run, Store};
use crate::client::ApiError;
use crate::model::Kind;
use crate::text;
use crate::versions::Incoming;

impl Run<'_> {
    pub(super) fn on_history(
        &mut self,
        store: &mut dyn Store,
        id: String,
        result: Result<Option<(Incoming, Option<String>)>, ApiError>,
    ) {
        match result {
            Ok(Some((_, Some(why)))) => {
                self.reject(store, "history", &id, Kind::Employments, why, json!({}));
            }
            Ok(Some((record, None))) => {
                let problems = crate::shape::check_employments(&record.payload);
                if !problems.is_empty() {
                    self.pending
                        .odd_history
                        .push(json!({"employee_id": record.employee_id, "problems": problems}));
                }
                match store.changed(Kind::Employments, vec![record]) {
                    Ok(changed) if changed.is_empty() => {}
                    Ok(changed) => {
                        self.pending.history.extend(changed);
                        self.pending.since.get_or_insert_with(Instant::now);
                        return; // done once applied
                    }
                    Err(e) => {
                        self.history_failed += 1;
                        self.error(
                            store,
                            "history",
                            format!("employment history of {id} could not be compared with the stored versions: {e}"),
                            with_employee(e.details(), &id),
                        );
                    }
                }
            }
            Ok(None) => self.no_history += 1,
            Err(e) if e.is_fatal() => {
                store.log(
                    Level::Error,
                    "history",
                    &text::sentence(&e.to_string()),
                    with_employee(e.details(), &id),
                );
                self.fatal = Some(e.to_string());
                return;
            }
            Err(ApiError::Restricted { .. }) => {
                if self.restricted == 0 {
                    store.log(Level::Warning, "history", "the /employments endpoint is restricted (HTTP 403) for this API key; employment history is not synced for these employees", json!({"employee_id": id}));
                }
                self.restricted += 1;
            }
            Err(ApiError::Stopped) => return,
            Err(e) => {
                self.history_failed += 1;
                self.error(
                    store,
                    "history",
                    format!("employment history of {id} failed: {e}"),
                    with_employee(e.details(), &id),
                );
            }
        }
        self.progress.employees_done += 1;
    }
}
