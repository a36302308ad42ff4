//! What changed between two scans of a growing dataset (`datavet diff PREVIOUS CURRENT`): records
//! newly quarantined, released (still there, no longer quarantined) or gone, and the changes per
//! class and per source. Records are matched by key (the id column, else `file#row`).
//!
//! Nightly jobs gate on it: `--fail-if-new N` exits 3 when more than N records are newly
//! quarantined, and the one-line summary goes to stdout.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::view::{RecordRow, RunView};

/// One record in a diff list.
#[derive(Clone, Debug, Serialize)]
pub struct DiffRecord {
    pub key: String,
    pub label: String,
    pub source: Option<String>,
    pub suspicion: f64,
    pub reasons: String,
}

impl From<&RecordRow> for DiffRecord {
    fn from(r: &RecordRow) -> Self {
        DiffRecord {
            key: r.key.clone(),
            label: r.label.clone(),
            source: r.source.clone(),
            suspicion: r.suspicion,
            reasons: r.reasons.clone(),
        }
    }
}

/// Rows and quarantined rows of one class or source, before and now.
#[derive(Clone, Debug, Default, Serialize)]
pub struct GroupChange {
    pub name: String,
    pub rows_before: usize,
    pub rows_now: usize,
    pub quarantined_before: usize,
    pub quarantined_now: usize,
}

#[derive(Debug, Serialize)]
pub struct Diff {
    /// Quarantined now, and either new or not quarantined before.
    pub newly_quarantined: Vec<DiffRecord>,
    /// Of those, how many are records that did not exist before.
    pub newly_quarantined_new_records: usize,
    /// Quarantined before, still present, no longer quarantined.
    pub released: Vec<DiffRecord>,
    /// Quarantined before, no longer in the data.
    pub gone: Vec<DiffRecord>,
    pub still_quarantined: usize,
    pub records_added: usize,
    pub records_removed: usize,
    pub attacked_before: Vec<String>,
    pub attacked_now: Vec<String>,
    pub per_class: Vec<GroupChange>,
    /// Empty unless both scans carry a source column.
    pub per_source: Vec<GroupChange>,
}

fn attacked(view: &RunView) -> Vec<String> {
    view.report["totals"]["attacked_classes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(String::from))
        .collect()
}

/// Adds one scan's counts to per-group changes; `now` selects the before/now side.
fn count<'a>(groups: &mut BTreeMap<String, GroupChange>, rows: impl Iterator<Item = (&'a str, bool)>, now: bool) {
    for (name, quarantined) in rows {
        let g = groups.entry(name.to_string()).or_insert_with(|| GroupChange {
            name: name.to_string(),
            ..Default::default()
        });
        if now {
            g.rows_now += 1;
            g.quarantined_now += quarantined as usize;
        } else {
            g.rows_before += 1;
            g.quarantined_before += quarantined as usize;
        }
    }
}

fn source_rows(view: &RunView) -> impl Iterator<Item = (&str, bool)> {
    view.records
        .iter()
        .map(|r| (r.source.as_deref().unwrap_or(""), r.quarantined))
}

/// Compares two finished scans.
pub fn diff(previous: &RunView, current: &RunView) -> Diff {
    let before: HashMap<&str, &RecordRow> = previous.records.iter().map(|r| (r.key.as_str(), r)).collect();
    let now: HashMap<&str, &RecordRow> = current.records.iter().map(|r| (r.key.as_str(), r)).collect();
    let by_suspicion = |v: &mut Vec<DiffRecord>| {
        v.sort_by(|a, b| b.suspicion.total_cmp(&a.suspicion).then(a.key.cmp(&b.key)));
    };
    let mut newly: Vec<DiffRecord> = Vec::new();
    let mut newly_new = 0;
    let mut still = 0;
    for r in current.records.iter().filter(|r| r.quarantined) {
        match before.get(r.key.as_str()) {
            Some(b) if b.quarantined => still += 1,
            Some(_) => newly.push(r.into()),
            None => {
                newly_new += 1;
                newly.push(r.into());
            }
        }
    }
    let mut released: Vec<DiffRecord> = Vec::new();
    let mut gone: Vec<DiffRecord> = Vec::new();
    for r in previous.records.iter().filter(|r| r.quarantined) {
        match now.get(r.key.as_str()) {
            Some(n) if !n.quarantined => released.push((*n).into()),
            Some(_) => {}
            None => gone.push(r.into()),
        }
    }
    by_suspicion(&mut newly);
    by_suspicion(&mut released);
    by_suspicion(&mut gone);
    let mut classes = BTreeMap::new();
    count(
        &mut classes,
        previous.records.iter().map(|r| (r.label.as_str(), r.quarantined)),
        false,
    );
    count(
        &mut classes,
        current.records.iter().map(|r| (r.label.as_str(), r.quarantined)),
        true,
    );
    let mut sources = BTreeMap::new();
    let with_source = |v: &RunView| v.records.first().is_some_and(|r| r.source.is_some());
    if with_source(previous) && with_source(current) {
        count(&mut sources, source_rows(previous), false);
        count(&mut sources, source_rows(current), true);
    }
    Diff {
        newly_quarantined_new_records: newly_new,
        newly_quarantined: newly,
        released,
        gone,
        still_quarantined: still,
        records_added: current
            .records
            .iter()
            .filter(|r| !before.contains_key(r.key.as_str()))
            .count(),
        records_removed: previous
            .records
            .iter()
            .filter(|r| !now.contains_key(r.key.as_str()))
            .count(),
        attacked_before: attacked(previous),
        attacked_now: attacked(current),
        per_class: classes.into_values().collect(),
        per_source: sources.into_values().collect(),
    }
}

impl Diff {
    /// One line for schedulers and alert mails.
    pub fn summary_line(&self) -> String {
        let list = |v: &[String]| if v.is_empty() { "none".to_string() } else { v.join(", ") };
        format!(
            "datavet diff: {} newly quarantined ({} of them new records), {} released, {} gone, {} still quarantined; \
             {} records added, {} removed; attacked classes: {} (before: {})",
            self.newly_quarantined.len(),
            self.newly_quarantined_new_records,
            self.released.len(),
            self.gone.len(),
            self.still_quarantined,
            self.records_added,
            self.records_removed,
            super::view::plain_text(&list(&self.attacked_now), 200),
            super::view::plain_text(&list(&self.attacked_before), 200),
        )
    }
}
