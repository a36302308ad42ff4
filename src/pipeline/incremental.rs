//! Incremental scans: tonight's data matched against a reference, only new or changed records
//! scored against its fits, the same decision over everything; then the reference the next scan
//! starts from, and the diff against the last one.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{ClassAnalysis, ScanConfig};
use crate::detect::ClassFit;
use crate::influence::InfluenceState;
use crate::io::{Dataset, RecordKeys};
use crate::reference::delta::{self, IncrementalSummary, Matching, RefitPolicy};
use crate::reference::{self, DiffBase, FitInfo, Header, Records, Reference, ReferenceError, Releases};
use crate::report::diff::Diff;
use crate::report::view::RunView;

/// Where the scan's reference comes from and goes (`--since-reference`, `--incremental`,
/// `--no-reference`; `[incremental]` in a pipeline file).
#[derive(Clone, Debug, Serialize)]
pub struct ReferenceOptions {
    /// Save a reference in OUT/reference/ after the scan, for the next incremental one.
    pub save: bool,
    /// Score only records new or changed since the reference found here (an output directory,
    /// its `reference/` directory, or a generation directory).
    pub since: Option<PathBuf>,
    /// Fail when `since` holds no reference; otherwise the scan is a full one (the first night).
    pub required: bool,
    pub refit: RefitPolicy,
}

impl Default for ReferenceOptions {
    fn default() -> Self {
        ReferenceOptions {
            save: true,
            since: None,
            required: false,
            refit: RefitPolicy::default(),
        }
    }
}

/// The reference the scan starts from, if it has one: `None` when none was asked for, or when
/// the asked-for place holds none and one is not required.
pub fn open_reference(config: &ScanConfig) -> Result<Option<Reference>, crate::Error> {
    let Some(path) = &config.reference.since else {
        return Ok(None);
    };
    match reference::open(path) {
        Ok(r) => Ok(Some(r)),
        Err(ReferenceError::NotFound { .. }) if !config.reference.required => {
            log::info!("no reference in {} yet: full scan", path.display());
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// An incremental scan's plan: how tonight's records match the reference, how far its classes
/// drifted, and whether it scores against the reference or fits afresh.
pub struct Plan {
    pub reference: Reference,
    pub records: Records,
    pub matching: Matching,
    pub drift: Vec<delta::ClassDrift>,
    /// Why the scan fits afresh; empty when it scores against the reference.
    pub refit: Vec<String>,
    /// What the diff is taken against, and what the next reference records as its base: see
    /// [`Plan::diff_base`].
    base: (DiffAgainst, DiffBase),
}

impl Plan {
    pub fn new(
        reference: Reference,
        dataset: &Dataset,
        hashes: &[u128],
        config: &ScanConfig,
    ) -> Result<Plan, crate::Error> {
        let records = reference.records()?;
        let matching = delta::match_records(dataset, hashes, &records);
        let drift = delta::drift(dataset, &matching, &reference.header);
        let mut refit = delta::refit_reasons(
            &reference.header,
            &config.fit_settings()?,
            dataset,
            &matching,
            &drift,
            &config.reference.refit,
            config.rows_to_analyse(dataset.dim),
        );
        let influence_wanted = config.detectors.influence.enabled && dataset.classes.len() >= 2;
        if influence_wanted && records.influence.as_ref().and_then(|s| s.model.as_ref()).is_none() {
            refit.push("the reference holds no influence model".into());
        }
        log::info!(
            "reference {}: {} unchanged, {} new, {} changed, {} gone; {}",
            reference.dir.display(),
            matching.unchanged,
            matching.new,
            matching.changed,
            matching.gone,
            if refit.is_empty() {
                "scoring the new against it".to_string()
            } else {
                format!("fitting afresh: {}", refit.join("; "))
            }
        );
        let base = diff_base(&reference, &matching, &config.out_dir);
        Ok(Plan {
            reference,
            records,
            matching,
            drift,
            refit,
            base,
        })
    }

    /// True when the scan scores against the reference's fits.
    pub fn reuses_fit(&self) -> bool {
        self.refit.is_empty()
    }

    /// The reference's class fits, when the scan reuses them.
    pub fn class_fits(&self) -> Option<&[Option<ClassFit>]> {
        self.reuses_fit().then_some(self.reference.header.class_fits.as_slice())
    }

    /// What the diff is taken against: the reference's snapshot; but where tonight's records
    /// are exactly the reference's (a retried job, or a night without new data), what the
    /// reference's own scan compared with, so that the rerun reports what that scan reported.
    /// Otherwise a retried nightly job that failed its `--fail-if-new` gate (exit 3) passed: its
    /// diff against the reference its failed try had just saved found nothing new. Also returns
    /// what the next reference records as its base.
    pub fn diff_base(&self) -> &(DiffAgainst, DiffBase) {
        &self.base
    }

    /// What the report says about the plan.
    pub fn summary(&self, rows: usize) -> IncrementalSummary {
        IncrementalSummary {
            reference: self.reference.dir.clone(),
            reference_generation: self.reference.header.generation,
            fit: self.reference.header.fit.clone(),
            unchanged: self.matching.unchanged,
            new: self.matching.new,
            changed: self.matching.changed,
            gone: self.matching.gone,
            scored: if self.reuses_fit() {
                self.matching.scored()
            } else {
                rows
            },
            refit: !self.reuses_fit(),
            refit_reasons: self.refit.clone(),
            drift: self.drift.clone(),
            diff_against: match &self.base.0 {
                DiffAgainst::Snapshot(dir) => Some(dir.clone()),
                DiffAgainst::Nothing => None,
            },
        }
    }

    /// The influence stage: the reference's state extended to the new records, and the warning
    /// that state carries (a surrogate skipped when it was fitted).
    pub fn extend_influence(
        &self,
        dataset: &Dataset,
        config: &ScanConfig,
        progress: &dyn crate::progress::Progress,
    ) -> Result<(Option<InfluenceState>, Option<String>), crate::Error> {
        let Some(state) = &self.records.influence else {
            return Ok((None, None));
        };
        let extended = crate::influence::extend(
            state,
            &self.matching.known,
            dataset,
            &config.detectors.influence,
            progress,
        )
        .map_err(|message| ReferenceError::Corrupt {
            path: self.reference.dir.clone(),
            message,
        })?;
        // The reason is the fit's, kept as it was in the state that later nights extend again.
        let warning = (extended.report.surrogate_skipped.as_ref())
            .map(|why| format!("{why} (when the reference was fitted: this incremental scan extends its state)"));
        Ok((Some(extended), warning))
    }
}

/// What tonight's diff compares the outputs with (see [`Plan::diff_base`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiffAgainst {
    /// Nothing: every quarantined record counts as new (a rerun of the first incremental night).
    Nothing,
    /// A reference generation's snapshot of its scan's outputs.
    Snapshot(PathBuf),
}

/// See [`Plan::diff_base`]. Decided once, before anything is written: the report, the summary
/// line and the next reference all name the base the diff is taken against.
fn diff_base(reference: &Reference, matching: &Matching, out_dir: &Path) -> (DiffAgainst, DiffBase) {
    let reference_dir = out_dir.join(reference::DIR);
    let same_dir =
        |a: &Path, b: &Path| a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y);
    let own = reference
        .dir
        .parent()
        .is_some_and(|parent| same_dir(parent, &reference_dir));
    let the_reference = || {
        let base = if own {
            DiffBase::Generation(reference.header.generation)
        } else {
            DiffBase::Unknown
        };
        (DiffAgainst::Snapshot(reference.dir.clone()), base)
    };
    let same_records = matching.scored() == 0 && matching.gone == 0;
    if !own || !same_records {
        return the_reference();
    }
    match reference.header.diff_base {
        DiffBase::Everything => (DiffAgainst::Nothing, DiffBase::Everything),
        DiffBase::Generation(g) => {
            let dir = reference_dir.join(format!("{g:06}"));
            match RunView::load_verdicts(&dir) {
                Ok(_) => (DiffAgainst::Snapshot(dir), DiffBase::Generation(g)),
                Err(e) => {
                    // Read in full here: a damaged one is skipped before the report names it.
                    log::warn!(
                        "tonight's records are the reference's, but the snapshot its scan diffed \
                         against cannot be read ({e}); diffing against the reference instead, so a \
                         retried alert is not repeated"
                    );
                    the_reference()
                }
            }
        }
        DiffBase::Unknown => the_reference(),
    }
}

/// What a finished scan leaves for the next one: the data it read, the state it fitted (or
/// extended from its reference), and the reviewed releases that still apply.
pub struct Scanned<'a> {
    pub dataset: &'a Dataset,
    /// Content hash of every record, by position.
    pub hashes: Vec<u128>,
    pub influence: Option<InfluenceState>,
    pub classes: &'a ClassAnalysis,
    pub plan: Option<&'a Plan>,
    pub releases: &'a Releases,
}

/// Prepares the reference the next incremental scan starts from, in `config.out_dir/reference/`:
/// the fits (the reference's own when this scan reused them), every record's key and content
/// hash, and the influence state. Commit it ([`reference::Prepared::commit`]) once the outputs
/// and report.json are published.
pub fn prepare_reference(config: &ScanConfig, scanned: Scanned<'_>) -> Result<reference::Prepared, crate::Error> {
    let Scanned {
        dataset,
        hashes,
        influence,
        classes,
        plan,
        releases,
    } = scanned;
    let generation = reference::next_generation(&config.out_dir);
    let now = jiff::Timestamp::now().to_string();
    let (fit, scored_since_fit) = match plan.filter(|p| p.reuses_fit()) {
        Some(p) => (
            p.reference.header.fit.clone(),
            p.reference.header.rows_scored_since_fit + p.matching.scored(),
        ),
        None => (
            FitInfo {
                id: reference::new_fit_id(&dataset.files, &now),
                generation,
                created_at: now,
                rows: dataset.rows(),
            },
            0,
        ),
    };
    let mut class_fits: Vec<Option<ClassFit>> = vec![None; dataset.classes.len()];
    for r in &classes.results {
        class_fits[r.class] = r.fit(&classes.names);
    }
    let header = Header {
        format: reference::FORMAT_NAME.into(),
        format_version: reference::FORMAT_VERSION,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        created_at: jiff::Timestamp::now().to_string(),
        generation,
        fit,
        rows_scored_since_fit: scored_since_fit,
        rows: dataset.rows(),
        settings: config.fit_settings()?,
        dim: dataset.dim,
        classes: dataset.classes.clone(),
        class_fits,
        feature_scaling: dataset.feature_scaling.clone(),
        diff_base: match plan {
            Some(p) => p.diff_base().1,
            // An incremental scan without a reference yet counts every quarantined record new.
            None if config.reference.since.is_some() => DiffBase::Everything,
            None => DiffBase::Unknown,
        },
    };
    let records = Records {
        keys: keys_by_position(dataset),
        hashes,
        influence,
    };
    Ok(reference::prepare(&config.out_dir, &header, &records, releases)?)
}

fn keys_by_position(dataset: &Dataset) -> RecordKeys {
    match &dataset.keys {
        RecordKeys::Int(v) => RecordKeys::Int(dataset.order.iter().map(|&g| v[g as usize]).collect()),
        RecordKeys::Str(v) => RecordKeys::Str(dataset.order.iter().map(|&g| v[g as usize].clone()).collect()),
    }
}

/// Tonight's published scan against the reference's snapshot; writes `diff.json` into `out_dir`.
pub fn diff_against(reference_dir: &Path, out_dir: &Path) -> Result<Diff, crate::Error> {
    let previous = RunView::load_verdicts(reference_dir)?;
    let current = RunView::load_verdicts(out_dir)?;
    let d = crate::report::diff::diff(&previous, &current);
    crate::report::diff::write(&d, out_dir)?;
    Ok(d)
}
