//! The snapshot collector: every page of `GET /employees`, walked no further than the total
//! needs, each record's id checked before any use, the changed records queued for their batch and
//! each employee's history request queued.

use std::time::Instant;

use serde_json::json;

use super::pipeline::{Checked, Job, Pipeline};
use super::{warn_types, with_page, Level, Run, Store};
use crate::client::{ApiError, ListPage};
use crate::model::Kind;
use crate::text;
use crate::versions::{invalid_id, record_id, Incoming};

/// The most list pages a sync fetches: 10,000,000 employees at 100 per page.
const MAX_PAGES: u64 = 100_000;

impl Run<'_> {
    /// One list page: its records checked, the changed ones queued for their batch, and the
    /// history of each employee on it queued.
    pub(super) fn on_page(
        &mut self,
        store: &mut dyn Store,
        pipeline: &mut Pipeline,
        page: u32,
        result: Result<(ListPage, Vec<Checked>), ApiError>,
    ) {
        let (lp, checked) = match result {
            Ok(r) => r,
            Err(e) => return self.page_failed(store, page, e),
        };
        if page == 1 {
            self.start_walk(store, pipeline, &lp);
        } else if Some((lp.pages, lp.total)) != self.reported {
            let (pages, total) = self.reported.unwrap_or_default();
            self.snapshot_doubts.push(format!(
                "the list changed while it was read: page {page} reported {} employees in {} pages, page 1 {total} in {pages}",
                lp.total, lp.pages
            ));
        }
        let (batch, listed) = self.take_records(store, page, lp.records, checked);
        self.progress.pages_done += 1;
        self.queue_changed(store, page, batch);
        for id in listed {
            pipeline.push(Job::History(id));
        }
    }

    fn page_failed(&mut self, store: &mut dyn Store, page: u32, e: ApiError) {
        if e.is_fatal() {
            store.log(
                Level::Error,
                "snapshot",
                &text::sentence(&e.to_string()),
                with_page(e.details(), page),
            );
            self.fatal = Some(e.to_string());
        } else if !matches!(e, ApiError::Stopped) {
            self.pages_failed += 1;
            self.error(
                store,
                "snapshot",
                format!("page {page} of the employee list failed: {e}"),
                with_page(e.details(), page),
            );
            if page == 1 {
                self.fatal = Some(format!("the employee list could not be fetched: {e}"));
            }
        }
    }

    /// The page's records that can be stored, and the ids of every employee it listed once.
    fn take_records(
        &mut self,
        store: &mut dyn Store,
        page: u32,
        records: Vec<serde_json::Value>,
        checked: Vec<Checked>,
    ) -> (Vec<Incoming>, Vec<String>) {
        let mut batch = Vec::with_capacity(records.len());
        let mut listed = Vec::new();
        let mut odd = Vec::new();
        for (i, (record, check)) in records.into_iter().zip(checked).enumerate() {
            let Some(id) = self.listed_id(store, page, i, &record) else {
                continue;
            };
            match store.erased(&id) {
                Ok(false) => {}
                Ok(true) => {
                    self.erased_listed += 1;
                    continue;
                }
                Err(e) => {
                    // Not knowing is not storing: a record that may be of an erased employee is
                    // left out, and the snapshot no longer counts as complete.
                    self.snapshot_doubts
                        .push(format!("the erased employees could not be read: {e}"));
                    self.error(
                        store,
                        "snapshot",
                        format!("the erased employees could not be read, page {page} was not stored: {e}"),
                        e.details(),
                    );
                    return (Vec::new(), Vec::new());
                }
            }
            let problems = crate::shape::check_employee(&record);
            if !problems.is_empty() {
                odd.push(json!({"employee_id": id, "problems": problems}));
            }
            listed.push(id.clone());
            match check.unstorable {
                Some(why) => self.reject(store, "snapshot", &id, Kind::Employee, why, json!({})),
                None => batch.push(Incoming::with_hash(id, record, check.hash)),
            }
        }
        if !odd.is_empty() {
            warn_types(store, "snapshot", &format!("page {page}"), odd);
        }
        (batch, listed)
    }

    /// The id of the `i`-th record of a page, when it is a usable id that this list has not
    /// given before; a record without one is logged by its place, never by its id, and leaves
    /// the snapshot incomplete.
    fn listed_id(
        &mut self,
        store: &mut dyn Store,
        page: u32,
        i: usize,
        record: &serde_json::Value,
    ) -> Option<String> {
        let checked = match record_id(record) {
            None => Err("has no usable \"id\"".to_owned()),
            Some(id) => match invalid_id(&id) {
                Some(why) => Err(format!("has an id that {why}")),
                None => Ok(id),
            },
        };
        let id = match checked {
            Ok(id) => id,
            Err(why) => {
                self.snapshot_doubts
                    .push(format!("record {} on page {page} {why}", i + 1));
                store.log(
                    Level::Warning,
                    "snapshot",
                    &format!("skipped record {} on page {page}: it {why}", i + 1),
                    json!({"page": page, "index": i}),
                );
                return None;
            }
        };
        if !self.seen.insert(&id) {
            if store.erased(&id).unwrap_or(true) {
                // Not even the id of someone forgotten goes into the log.
                self.snapshot_doubts
                    .push("an erased employee appears twice in the list".into());
                store.log(
                    Level::Warning,
                    "snapshot",
                    &format!("an erased employee appears more than once in the list (page {page})"),
                    json!({"page": page}),
                );
                return None;
            }
            self.snapshot_doubts
                .push(format!("employee {id} appears twice in the list"));
            store.log(
                Level::Warning,
                "snapshot",
                &format!("employee {id} appears more than once in the list (page {page})"),
                json!({"page": page, "employee_id": id}),
            );
            return None;
        }
        Some(id)
    }

    /// Keeps the page's changed records for their batch; a page without any is applied.
    fn queue_changed(&mut self, store: &mut dyn Store, page: u32, batch: Vec<Incoming>) {
        match store.changed(Kind::Employee, batch) {
            Ok(changed) if changed.is_empty() => {
                self.pages_ok.insert(page);
            }
            Ok(changed) => {
                self.pending.employee.extend(changed);
                self.pending.pages.push(page);
                self.pending.since.get_or_insert_with(Instant::now);
            }
            Err(e) => {
                self.pages_failed += 1;
                self.error(
                    store,
                    "snapshot",
                    format!("page {page} could not be compared with the stored versions: {e}"),
                    with_page(e.details(), page),
                );
            }
        }
    }

    /// Queues the list pages after the first: as many as `total` needs at `per_page`, plus a
    /// margin of 2 for a list that grows while it is read, never more than `pages` says and
    /// never more than [`MAX_PAGES`]. A `pages` that disagrees with `total` is logged and leaves
    /// the snapshot incomplete: a lying API cannot make a sync walk for hours.
    fn start_walk(&mut self, store: &mut dyn Store, pipeline: &mut Pipeline, lp: &ListPage) {
        let per_page = u64::from(self.client.config().per_page.max(1));
        let needed = lp.total.div_ceil(per_page);
        let walk = lp.pages.min(needed + 2).min(MAX_PAGES);
        self.reported = Some((lp.pages, lp.total));
        self.progress.pages_total = Some(walk);
        self.progress.employees_total = Some(lp.total);
        if lp.pages != needed {
            let doubt = format!(
                "the API reported {} pages, but its total of {} employees at {per_page} per page makes {needed}",
                lp.pages, lp.total
            );
            store.log(
                Level::Warning,
                "snapshot",
                &format!("{doubt}: fetching {} pages, and no employee is marked deleted in this session", walk.max(1)),
                json!({"pages": lp.pages, "total": lp.total, "per_page": per_page, "fetched_pages": walk.max(1)}),
            );
            self.snapshot_doubts.push(doubt);
        }
        for p in 2..=walk {
            pipeline.push(Job::Page(p as u32));
        }
        store.log(
            Level::Info,
            "snapshot",
            &format!("{} employees in {} pages", lp.total, lp.pages),
            json!({"total": lp.total, "pages": lp.pages}),
        );
    }
}
