//! How a sync ends: whether its snapshot was complete, the deletions it may then record (only
//! those the API confirms), and the session's status and error.

use serde_json::json;

use super::{warn_types, FinalStatus, Level, Outcome, Run, StopReason, Store};
use crate::client::ApiError;
use crate::deletions;
use crate::text;

impl Run<'_> {
    /// Records as deleted the employees missing from the complete list whom the API confirms
    /// gone (404); the ones it still has are logged and counted as a moved list.
    fn delete_confirmed(&mut self, store: &mut dyn Store) {
        let missing = match store.missing(&self.seen) {
            Ok(m) if m.is_empty() => return,
            Ok(m) => m,
            Err(e) => {
                let message = format!("the employees missing from the list could not be read: {e}");
                return self.error(store, "changes", message, e.details());
            }
        };
        let asked = missing.len();
        let answer = deletions::confirm(self.client, missing, self.concurrency);
        self.sync_counters();
        if let Some(e) = answer.fatal {
            store.log(Level::Error, "changes", &e.to_string(), json!({}));
            self.fatal = Some(e.to_string());
            return;
        }
        if !answer.present.is_empty() {
            self.progress.list_moved = answer.present.len() as u64;
            store.log(
                Level::Warning,
                "changes",
                &format!(
                    "the employee list moved while it was read: {} of the {asked} employees missing from it are still in Employes; they are not marked deleted, and the next sync reads them again",
                    answer.present.len()
                ),
                json!({"employee_ids": answer.present, "missing": asked}),
            );
        }
        for (id, e) in &answer.unconfirmed {
            if !matches!(e, ApiError::Stopped) {
                let message = format!(
                    "employee {id} is missing from the list, but whether it was deleted could not be confirmed ({e}); it is not marked deleted"
                );
                self.error(store, "changes", message, json!({"employee_id": id}));
            }
        }
        if answer.gone.is_empty() {
            return;
        }
        match store.mark_deleted(answer.gone, &self.progress) {
            Ok(stats) => {
                self.progress.deleted = stats.versions_written;
                self.progress.changes_detected += stats.changes_detected;
            }
            Err(e) => self.error(
                store,
                "changes",
                format!("deletions could not be applied: {e}"),
                e.details(),
            ),
        }
    }

    /// Ends the sync: deletions when the snapshot was complete, the history's summary, and the
    /// session's status and error.
    pub(super) fn finish(mut self, store: &mut dyn Store) -> Outcome {
        let odd = std::mem::take(&mut self.pending.odd_history);
        if !odd.is_empty() {
            warn_types(store, "history", "employment histories", odd);
        }
        self.sync_counters();
        let (complete, reasons) = self.completeness();
        if complete && self.seen.is_empty() {
            store.log(
                Level::Warning,
                "changes",
                "the API listed no employees; nobody is marked deleted from an empty list",
                json!({}),
            );
        } else if complete {
            self.delete_confirmed(store);
        } else if self.fatal.is_none() && self.stopped.is_none() {
            store.log(
                Level::Warning,
                "changes",
                "the snapshot is incomplete: no employee is marked deleted in this session",
                json!({"reasons": reasons}),
            );
        }
        self.log_history_summary(store);
        if self.erased_listed > 0 {
            store.log(
                Level::Info,
                "snapshot",
                &format!(
                    "{} listed employee(s) were erased earlier (employes_forget_employee) and were not stored again; employes_unforget_employee() lets one back",
                    self.erased_listed
                ),
                json!({"erased_listed": self.erased_listed}),
            );
        }
        let _ = store.progress(&self.progress);
        let (status, error) = self.status(complete, &reasons);
        Outcome {
            status,
            error: error.map(|e| text::sentence(&e)),
            snapshot_complete: complete,
            progress: self.progress,
        }
    }

    /// Whether the snapshot was complete (every page, the count equal to the API's total,
    /// nothing doubtful, nothing fatal), and why not.
    fn completeness(&self) -> (bool, Vec<String>) {
        let pages_total = self.progress.pages_total.unwrap_or(0);
        let all_pages = pages_total > 0
            && (1..=pages_total)
                .all(|p| u32::try_from(p).is_ok_and(|p| self.pages_ok.contains(&p)));
        let count_matches = Some(self.seen.len() as u64) == self.progress.employees_total;
        let empty_company = pages_total == 0
            && self.progress.employees_total == Some(0)
            && self.pages_ok.contains(&1);
        let complete = self.fatal.is_none()
            && self.stopped.is_none()
            && self.snapshot_doubts.is_empty()
            && ((all_pages && count_matches) || empty_company);
        let mut reasons = self.snapshot_doubts.clone();
        if !all_pages && !empty_company {
            reasons.push(format!(
                "{} of {} list pages fetched",
                self.pages_ok.len(),
                pages_total
            ));
        }
        if !count_matches && !empty_company {
            let listed = self.seen.len();
            reasons.push(match self.progress.employees_total {
                Some(total) => format!("{listed} employees listed, but the API's total is {total}"),
                None => format!("{listed} employees listed, and the API gave no total"),
            });
        }
        (complete, reasons)
    }

    fn log_history_summary(&self, store: &mut dyn Store) {
        if self.no_history > 0 {
            let message = format!(
                "{} employees have no employment history (404)",
                self.no_history
            );
            store.log(
                Level::Info,
                "history",
                &message,
                json!({"employees": self.no_history}),
            );
        }
        if self.restricted > 0 {
            let message = format!(
                "employment history restricted (403) for {} employees",
                self.restricted
            );
            store.log(
                Level::Warning,
                "history",
                &message,
                json!({"employees": self.restricted}),
            );
        }
    }

    /// The session's status and error: cancelled or terminated, failed, partial (errors, an
    /// incomplete snapshot or a list that moved) or completed.
    fn status(&self, complete: bool, reasons: &[String]) -> (FinalStatus, Option<String>) {
        if let Some(reason) = self.stopped.clone() {
            return match reason {
                StopReason::Cancelled => {
                    (FinalStatus::Cancelled, Some("cancelled on request".into()))
                }
                StopReason::Terminated(why) => (FinalStatus::Error, Some(why)),
            };
        }
        if let Some(f) = self.fatal.clone() {
            return (FinalStatus::Error, Some(f));
        }
        if self.progress.errors == 0 && complete && self.progress.list_moved == 0 {
            return (FinalStatus::Completed, None);
        }
        let msg = self.first_error.clone().unwrap_or_else(|| {
            if self.progress.list_moved > 0 {
                return format!(
                    "the employee list moved while it was read: {} employees missing from it are still in Employes, so they were not marked deleted; the next sync reads them again",
                    self.progress.list_moved
                );
            }
            let mut d = self.snapshot_doubts.clone();
            d.truncate(3);
            if d.is_empty() {
                d = reasons.to_vec();
            }
            format!(
                "incomplete snapshot, so no employee was marked deleted: {}",
                d.join("; ")
            )
        });
        (FinalStatus::Partial, Some(msg))
    }
}
