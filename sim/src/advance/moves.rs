//! Changes of the employee list while a sync is between two pages: deletions, hires, reorders.

use super::*;

/// A change of the employee list made while a sync is between two list pages, as HR editing
/// the company at that moment: applied right after list page `after_page` has been answered.
/// Positions are 0-based places in the list as it is when the move applies.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ListMove {
    pub after_page: u32,
    /// Remove the employees at these positions (404 from then on, absent from the list).
    pub delete_positions: Vec<usize>,
    /// Hire this many new employees; they join the end of the list.
    pub hires: usize,
    /// Move the employee at the first position to the second one (after deletions and hires),
    /// changing no record.
    pub reorder: Option<(usize, usize)>,
}

/// Applies a list move without moving the date; reports the deletions and hires it made (a
/// reorder changes no record and reports nothing).
pub fn move_list(ds: &mut Dataset, seed: u64, nth: u32, mv: &ListMove) -> StepReport {
    let ctx = Ctx {
        e: first_of_month(ds.date),
        today: ds.date,
    };
    let mut rng = Rng::derive(seed, 4, nth as u64);
    let mut changes = Vec::new();
    let listed = ds.listed();
    for &pos in &mv.delete_positions {
        if let Some(&i) = listed.get(pos) {
            ds.employees[i].removed = true;
            changes.push(truth(
                &employee_id(&ds.employees[i]),
                "removal",
                "deleted",
                None,
            ));
        }
    }
    for _ in 0..mv.hires {
        let entry = hire(ds, &mut rng, &ctx);
        changes.push(truth(&employee_id(&entry), "hire", "created", Some(ctx.e)));
        ds.employees.push(entry);
    }
    if let Some((from, to)) = mv.reorder {
        let listed = ds.listed();
        let key = |i: usize| {
            ds.list_rank.get(&i).copied().or_else(|| {
                ds.employees[i]
                    .record
                    .get("employee_number")
                    .and_then(Value::as_f64)
            })
        };
        if let (Some(&moved), Some(&before)) = (listed.get(from), listed.get(to)) {
            // Just before the employee now at `to` (a half step: numbers are integers).
            if let Some(k) = key(before) {
                let rank = if from < to { k + 0.5 } else { k - 0.5 };
                ds.list_rank.insert(moved, rank);
            }
        }
    }
    StepReport {
        step: 0,
        date: ds.date.format("%Y-%m-%d").to_string(),
        changes,
        noise_employee_ids: Vec::new(),
    }
}
