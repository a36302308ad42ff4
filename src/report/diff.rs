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
    /// Per class analysed in both scans: how far its mean moved, in units of its earlier rms
    /// radius (the typical distance of a record from the class mean). 0.1 = a tenth of that.
    pub drift: Vec<ClassDrift>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ClassDrift {
    pub class: String,
    pub shift: f64,
    /// The rms radius now relative to before (spread growing or shrinking).
    pub radius_ratio: f64,
}

/// Drift above this is called out in the summary line.
pub const DRIFT_NOTICE: f64 = 0.25;

fn geometry(view: &RunView) -> HashMap<String, (Vec<f64>, f64)> {
    view.report["classes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let mean: Vec<f64> = c["mean"].as_array()?.iter().filter_map(|v| v.as_f64()).collect();
            Some((c["label"].as_str()?.to_string(), (mean, c["radius"].as_f64()?)))
        })
        .collect()
}

fn drift(previous: &RunView, current: &RunView) -> Vec<ClassDrift> {
    let (before, now) = (geometry(previous), geometry(current));
    let mut out: Vec<ClassDrift> = now
        .iter()
        .filter_map(|(class, (mean, radius))| {
            let (old_mean, old_radius) = before.get(class)?;
            if old_mean.len() != mean.len() || *old_radius <= 0.0 {
                return None;
            }
            let shift = old_mean
                .iter()
                .zip(mean)
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f64>()
                .sqrt()
                / old_radius;
            Some(ClassDrift {
                class: class.clone(),
                shift,
                radius_ratio: radius / old_radius,
            })
        })
        .collect();
    out.sort_by(|a, b| b.shift.total_cmp(&a.shift).then(a.class.cmp(&b.class)));
    out
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
        drift: drift(previous, current),
    }
}

/// The diff's file in the later scan's output directory.
pub const DIFF_FILE: &str = "diff.json";

/// Writes `diff.json` into `dir` (atomically).
pub fn write(d: &Diff, dir: &std::path::Path) -> Result<(), crate::io::OutputError> {
    crate::io::AtomicFile::write_json(&dir.join(DIFF_FILE), d, true)
}

impl Diff {
    /// One line for schedulers and alert mails.
    pub fn summary_line(&self) -> String {
        let list = |v: &[String]| if v.is_empty() { "none".to_string() } else { v.join(", ") };
        let drifted: Vec<String> = self
            .drift
            .iter()
            .filter(|d| d.shift > DRIFT_NOTICE)
            .map(|d| format!("{} {:.2}", d.class, d.shift))
            .collect();
        format!(
            "datavet diff: {} newly quarantined ({} of them new records), {} released, {} gone, {} still quarantined; \
             {} records added, {} removed; attacked classes: {} (before: {}); drift over {DRIFT_NOTICE}: {}",
            self.newly_quarantined.len(),
            self.newly_quarantined_new_records,
            self.released.len(),
            self.gone.len(),
            self.still_quarantined,
            self.records_added,
            self.records_removed,
            super::view::plain_text(&list(&self.attacked_now), 200),
            super::view::plain_text(&list(&self.attacked_before), 200),
            super::view::plain_text(&list(&drifted), 200),
        )
    }
}
