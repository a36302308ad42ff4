//! Tonight's data against a reference: which records are unchanged, new, changed or gone; how far
//! each class's new records sit from the class the reference fitted (drift); and whether the
//! reference can score them or the scan must fit afresh.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{Header, Records};
use crate::io::{Dataset, RecordKey};

/// When an incremental scan fits afresh instead of scoring against the reference.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct RefitPolicy {
    /// Re-fit once the records scored against the fit (new or changed, over all incremental scans
    /// since it) exceed this share of the dataset. Default 0.2.
    pub max_new_fraction: f64,
    /// Re-fit when a class's new records sit this many of the class's rms radii from its fitted
    /// mean, or their spread differs from the class's by this factor (1 + max-drift). Default 0.5.
    pub max_drift: f64,
    /// New records a class needs before its drift is judged (fewer measure mostly noise).
    pub min_drift_rows: usize,
}

impl Default for RefitPolicy {
    fn default() -> Self {
        RefitPolicy {
            max_new_fraction: 0.2,
            max_drift: 0.5,
            min_drift_rows: 30,
        }
    }
}

impl RefitPolicy {
    pub fn check(&self) -> Result<(), crate::detect::ParamError> {
        use crate::detect::ParamError;
        if !(0.0..=1.0).contains(&self.max_new_fraction) {
            return Err(ParamError::new(
                "max-new-fraction",
                "must be in [0, 1]",
                self.max_new_fraction,
            ));
        }
        if !(self.max_drift.is_finite() && self.max_drift > 0.0) {
            return Err(ParamError::new("max-drift", "must be positive", self.max_drift));
        }
        Ok(())
    }
}

/// How tonight's records relate to the reference's.
#[derive(Clone, Debug)]
pub struct Matching {
    /// Per position (class-grouped order): the record's reference position when its key and
    /// content are unchanged.
    pub known: Vec<Option<u32>>,
    pub unchanged: usize,
    /// Keys the reference does not have.
    pub new: usize,
    /// Keys the reference has, with other content (label, vector, probabilities or losses).
    pub changed: usize,
    /// Reference keys not in tonight's data.
    pub gone: usize,
}

impl Matching {
    /// Records an incremental scan scores (new or changed).
    pub fn scored(&self) -> usize {
        self.new + self.changed
    }
}

/// Matches records by key, then content hash (`hashes` by position, from
/// [`Dataset::content_hashes`]).
pub fn match_records(dataset: &Dataset, hashes: &[u128], records: &Records) -> Matching {
    let mut seen = vec![false; records.keys.len()];
    let (mut new, mut changed) = (0, 0);
    let known = reference_rows(dataset, records)
        .into_iter()
        .enumerate()
        .map(|(p, row)| match row {
            Some(r) => {
                seen[r as usize] = true;
                if records.hashes[r as usize] == hashes[p] {
                    Some(r)
                } else {
                    changed += 1;
                    None
                }
            }
            None => {
                new += 1;
                None
            }
        })
        .collect::<Vec<_>>();
    Matching {
        unchanged: dataset.rows() - new - changed,
        new,
        changed,
        gone: seen.iter().filter(|&&s| !s).count(),
        known,
    }
}

/// The reference row holding each position's key, if any. Keys of another type than the
/// reference's (an id column rewritten from integers to strings or back, added or removed, or
/// uint64 ids that passed i64's range and so are kept as text) are matched by their text, as the
/// report's diff matches them: typed, every record read as new and every reference record as
/// gone, while diff.json, matching by text, saw nothing new.
fn reference_rows(dataset: &Dataset, records: &Records) -> Vec<Option<u32>> {
    let reference_rows = 0..records.keys.len() as u32;
    if std::mem::discriminant(&records.keys) == std::mem::discriminant(&dataset.keys) {
        let by_key: HashMap<RecordKey<'_>, u32> = reference_rows.map(|r| (records.keys.get(r as usize), r)).collect();
        return (0..dataset.rows())
            .map(|p| by_key.get(&dataset.key_at(p)).copied())
            .collect();
    }
    let kind = |keys: &crate::io::RecordKeys| match keys {
        crate::io::RecordKeys::Int(_) => "integers",
        crate::io::RecordKeys::Str(_) => "text",
    };
    log::warn!(
        "the reference's record keys are {} and tonight's {} (an id column retyped, added or removed, or uint64 ids \
         past i64's range): records are matched by their keys' text",
        kind(&records.keys),
        kind(&dataset.keys)
    );
    let by_text: HashMap<String, u32> = reference_rows.map(|r| (records.keys.display(r as usize), r)).collect();
    (0..dataset.rows())
        .map(|p| by_text.get(&dataset.keys.display(dataset.order[p] as usize)).copied())
        .collect()
}

/// One class's new records against the class as the reference fitted it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClassDrift {
    pub class: String,
    /// New or changed records of the class.
    pub new_rows: usize,
    /// Distance of their mean from the fitted class mean, in the class's rms radii.
    pub shift: f64,
    /// Their rms distance from their own mean over the class's rms radius.
    pub radius_ratio: f64,
}

/// Drift of every class that has new records and a fit (the reference's class of its name).
pub fn drift(dataset: &Dataset, matching: &Matching, header: &Header) -> Vec<ClassDrift> {
    let dim = dataset.dim;
    let mut out = Vec::new();
    for c in 0..dataset.classes.len() {
        // The fit of the class of this name: a new label sorting first moves every index.
        let fitted = header.classes.iter().position(|name| *name == dataset.classes[c]);
        let Some(fit) = fitted.and_then(|f| header.class_fits.get(f)).and_then(Option::as_ref) else {
            continue;
        };
        let range = dataset.class_offsets[c]..dataset.class_offsets[c + 1];
        let fresh: Vec<usize> = range.filter(|&p| matching.known[p].is_none()).collect();
        let radius = fit.basis.radius();
        if fresh.is_empty() || radius <= 0.0 || fit.basis.mean.len() != dim {
            continue;
        }
        let mut mean = vec![0f64; dim];
        for &p in &fresh {
            mean.iter_mut()
                .zip(&dataset.x[p * dim..(p + 1) * dim])
                .for_each(|(m, &v)| *m += v as f64);
        }
        mean.iter_mut().for_each(|m| *m /= fresh.len() as f64);
        let spread: f64 = fresh
            .iter()
            .map(|&p| {
                dataset.x[p * dim..(p + 1) * dim]
                    .iter()
                    .zip(&mean)
                    .map(|(&v, m)| (v as f64 - m).powi(2))
                    .sum::<f64>()
            })
            .sum::<f64>()
            / fresh.len() as f64;
        let shift = mean
            .iter()
            .zip(&fit.basis.mean)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f64>()
            .sqrt();
        out.push(ClassDrift {
            class: dataset.classes[c].clone(),
            new_rows: fresh.len(),
            shift: shift / radius,
            radius_ratio: spread.sqrt() / radius,
        });
    }
    out
}

/// What report.json says about an incremental scan.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IncrementalSummary {
    /// The reference's generation directory.
    pub reference: std::path::PathBuf,
    pub reference_generation: u64,
    /// The fit the reference held.
    pub fit: super::FitInfo,
    pub unchanged: usize,
    pub new: usize,
    pub changed: usize,
    pub gone: usize,
    /// Records scored: the new and changed ones against the reference, or every one on a re-fit.
    pub scored: usize,
    pub refit: bool,
    pub refit_reasons: Vec<String>,
    pub drift: Vec<ClassDrift>,
    /// What diff.json compares tonight's outputs with: the reference's snapshot, or where
    /// tonight's records are exactly the reference's, the one its own scan compared with.
    #[serde(default)]
    pub diff_against: Option<std::path::PathBuf>,
}

/// Why the reference cannot score tonight's data (empty: it can). `settings` are tonight's, in
/// the form [`Header::settings`] holds them.
pub fn refit_reasons(
    header: &Header,
    settings: &serde_json::Value,
    dataset: &Dataset,
    matching: &Matching,
    drift: &[ClassDrift],
    policy: &RefitPolicy,
    min_class_rows: usize,
) -> Vec<String> {
    let mut why = Vec::new();
    if header.tool_version != env!("CARGO_PKG_VERSION") {
        why.push(format!(
            "the reference was fitted by datavet {}, this is {}",
            header.tool_version,
            env!("CARGO_PKG_VERSION")
        ));
    }
    if &header.settings != settings {
        let changed: Vec<String> = settings
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, v)| header.settings.get(k.as_str()) != Some(v))
            .map(|(k, _)| k.clone())
            .collect();
        why.push(format!("settings changed since the fit: {}", changed.join(", ")));
    }
    if header.dim != dataset.dim {
        why.push(format!(
            "vectors have {} dimensions, the fit {}",
            dataset.dim, header.dim
        ));
    }
    if header.classes != dataset.classes {
        why.push(format!(
            "the classes changed (the fit has {}, the data {})",
            header.classes.len(),
            dataset.classes.len()
        ));
    } else {
        for c in 0..dataset.classes.len() {
            if header.class_fits[c].is_none() && dataset.class_size(c) >= min_class_rows {
                why.push(format!(
                    "class `{}` was too small to fit and now has {} rows",
                    dataset.classes[c],
                    dataset.class_size(c)
                ));
            }
        }
    }
    let scored = header.rows_scored_since_fit + matching.scored();
    if scored as f64 > policy.max_new_fraction * dataset.rows() as f64 {
        why.push(format!(
            "{scored} records new or changed since the fit, over {} of {} rows",
            policy.max_new_fraction,
            dataset.rows()
        ));
    }
    for d in drift.iter().filter(|d| d.new_rows >= policy.min_drift_rows) {
        let spread = d.radius_ratio.max(1e-12);
        if d.shift > policy.max_drift || spread.max(1.0 / spread) > 1.0 + policy.max_drift {
            why.push(format!(
                "class `{}` drifted: its {} new records sit {:.2} radii from the fitted mean, spread {:.2}x",
                d.class, d.new_rows, d.shift, d.radius_ratio
            ));
        }
    }
    why
}
