//! The reference an incremental scan starts from: what a finished scan fitted (each class's basis
//! and detector fits, the influence stage's model) and what it vetted (every record's key and
//! content hash, and the influence values computed for it).
//!
//! Every scan saves one in `OUT/reference/` (unless told not to). `reference/CURRENT` names the
//! newest generation, a directory `reference/<generation>/` holding `reference.json` (format
//! version, settings, fits), `records.json` (keys, hashes, influence state, in the scan's
//! class-grouped order), and a snapshot of the scan's `scores.parquet` and `report.json` (what
//! tonight's scan is diffed against). A generation is written in full under a temporary name and
//! renamed into place before CURRENT is replaced (atomically): a scan killed while saving leaves
//! the previous reference current. The two newest generations are kept.
//!
//! The format is versioned ([`FORMAT_VERSION`]): a reference of another format version is refused
//! with a message saying what to do; one written by another tool version is not reused (its fits
//! may differ from what this version computes) but re-fitted, and the report says so.

pub mod delta;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::detect::ClassFit;
use crate::influence::InfluenceState;
use crate::io::{AtomicFile, OutputError, RecordKeys};

/// The version of the reference files this datavet writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Written into every reference, so a stray JSON file is not taken for one.
pub const FORMAT_NAME: &str = "datavet-reference";
/// The reference directory inside a scan's output directory.
pub const DIR: &str = "reference";
const CURRENT: &str = "CURRENT";
const HEADER_FILE: &str = "reference.json";
const RECORDS_FILE: &str = "records.json";
const RELEASES_FILE: &str = "released.json";
/// Generations kept: the current one and the one before it (and the one the current one's scan
/// diffed against).
const KEEP_GENERATIONS: usize = 2;

/// `reference.json`: everything but the per-record data.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Header {
    /// Always [`FORMAT_NAME`].
    pub format: String,
    pub format_version: u32,
    pub tool_version: String,
    pub created_at: String,
    /// Counts up with every scan that saves a reference into the same directory.
    pub generation: u64,
    pub fit: FitInfo,
    /// Records scored against this fit by incremental scans since it was made (new or changed).
    pub rows_scored_since_fit: usize,
    pub rows: usize,
    /// The settings the fits depend on (columns, detectors, seed, minimum class size, trusted
    /// set); a scan with other settings re-fits.
    pub settings: serde_json::Value,
    pub dim: usize,
    pub classes: Vec<String>,
    /// Per class (same order as `classes`); `None` for a class that was too small to analyse.
    pub class_fits: Vec<Option<ClassFit>>,
    /// The (mean, scale) each feature column was standardized with, for tabular inputs: an
    /// incremental scan standardizes new records the same way.
    pub feature_scaling: Option<crate::io::FeatureScaling>,
    /// What the scan saving this reference compared its outputs with. A rerun on the same
    /// records compares with it again (see `Plan::diff_base`), so a generation named here is
    /// kept while this one is current.
    #[serde(default)]
    pub diff_base: DiffBase,
}

/// What a scan's diff compared its outputs with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiffBase {
    /// No diff: a scan without --incremental, one against another directory's reference, or a
    /// reference saved before 0.2.49.
    #[default]
    Unknown,
    /// An incremental scan with no reference yet: every quarantined record was new.
    Everything,
    /// A generation of the same reference directory.
    Generation(u64),
}

/// Which scan made the fits a reference holds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FitInfo {
    /// Names the fit: unchanged by incremental scans, new with every full scan.
    pub id: String,
    pub generation: u64,
    pub created_at: String,
    pub rows: usize,
}

/// `records.json`: the vetted records, in the scan's class-grouped order (position order).
#[derive(Serialize, Deserialize)]
pub struct Records {
    pub keys: RecordKeys,
    #[serde(with = "crate::codec::u128s")]
    pub hashes: Vec<u128>,
    /// The influence stage's values for these records (and its model), when it ran.
    pub influence: Option<InfluenceState>,
}

/// Records a reviewer moved back to clean (`datavet release`), each with its content hash then:
/// later scans keep a record in clean while its content is unchanged.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Releases {
    pub keys: Vec<String>,
    #[serde(with = "crate::codec::u128s")]
    pub hashes: Vec<u128>,
    /// Who released it, when and why.
    pub notes: Vec<String>,
}

impl Releases {
    /// The releases that still apply to `dataset` (same key, same content hash `hashes[p]` at
    /// position `p`): (global row, note), and the releases kept for the next reference: those,
    /// and those whose key is absent tonight (a record missing from one night's input keeps its
    /// release for when it comes back unchanged). A key back with other content loses it.
    pub fn applying_to(&self, dataset: &crate::io::Dataset, hashes: &[u128]) -> (Vec<(u32, String)>, Releases) {
        let by_key: std::collections::HashMap<&str, usize> =
            self.keys.iter().enumerate().map(|(i, k)| (k.as_str(), i)).collect();
        let mut rows = Vec::new();
        let mut kept = Releases::default();
        if by_key.is_empty() {
            return (rows, kept);
        }
        let mut present = vec![false; self.keys.len()];
        for p in 0..dataset.rows() {
            let g = dataset.order[p] as usize;
            let key = dataset.keys.display(g);
            let Some(&i) = by_key.get(key.as_str()) else { continue };
            present[i] = true;
            if self.hashes[i] == hashes[p] {
                rows.push((g as u32, self.notes[i].clone()));
                kept.push(key, hashes[p], &self.notes[i]);
            }
        }
        for i in (0..self.keys.len()).filter(|&i| !present[i]) {
            kept.push(self.keys[i].clone(), self.hashes[i], &self.notes[i]);
        }
        (rows, kept)
    }

    fn push(&mut self, key: String, hash: u128, note: &str) {
        self.keys.push(key);
        self.hashes.push(hash);
        self.notes.push(note.to_string());
    }
}

/// The releases recorded in the current reference of `out_dir`, if it has one.
pub fn releases(out_dir: &Path) -> Result<Releases, ReferenceError> {
    let Ok(dir) = locate(&out_dir.join(DIR)) else {
        return Ok(Releases::default());
    };
    let path = dir.join(RELEASES_FILE);
    if !path.is_file() {
        return Ok(Releases::default());
    }
    serde_json::from_slice(&read(&path)?).map_err(|e| corrupt(&path, e))
}

/// Remembers `ids` as released by review (with their content hashes from the current reference,
/// so a record that changes is judged again): adds the updated releases file to `publication`,
/// which the release commits with its outputs, and the released scores.parquet and report.json
/// as the generation's snapshot, so that the next scan's diff starts from what the review left.
/// Returns how many of the ids the reference holds (`None`: `out_dir` keeps no reference).
pub fn stage_release(
    out_dir: &Path,
    ids: &[String],
    note: &str,
    publication: &mut crate::io::Publication,
) -> Result<Option<usize>, crate::Error> {
    let Ok(dir) = locate(&out_dir.join(DIR)) else {
        return Ok(None);
    };
    let reference = open(&dir)?;
    let records = reference.records()?;
    let wanted: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
    let mut releases = releases(out_dir)?;
    let mut recorded = 0;
    for r in 0..records.keys.len() {
        let key = records.keys.display(r);
        if wanted.contains(key.as_str()) {
            match releases.keys.iter().position(|k| *k == key) {
                Some(i) => {
                    releases.hashes[i] = records.hashes[r];
                    releases.notes[i] = note.to_string();
                }
                None => {
                    releases.keys.push(key);
                    releases.hashes.push(records.hashes[r]);
                    releases.notes.push(note.to_string());
                }
            }
            recorded += 1;
        }
    }
    publication.add_json(&dir.join(RELEASES_FILE), &releases, false)?;
    for file in [crate::quarantine::SCORES_FILE, crate::report::REPORT_FILE] {
        publication.link(&out_dir.join(file), &dir.join(file));
    }
    Ok(Some(recorded))
}

/// Acknowledges the alert of the scan that saved the current reference of `out_dir`: makes the
/// reference its own diff base, so a rerun on its records finds nothing newly quarantined, where
/// it would repeat that scan's alert (see `Plan::diff_base`). Adds the rewritten header to
/// `publication`; returns the generation (`None`: no reference).
pub fn stage_acknowledgement(
    out_dir: &Path,
    publication: &mut crate::io::Publication,
) -> Result<Option<u64>, crate::Error> {
    let dir = match locate(&out_dir.join(DIR)) {
        Ok(dir) => dir,
        Err(ReferenceError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut header = open(&dir)?.header;
    header.diff_base = DiffBase::Generation(header.generation);
    publication.add_json(&dir.join(HEADER_FILE), &header, false)?;
    Ok(Some(header.generation))
}

/// Links (or copies) a published output into a reference generation, replacing what was there.
fn snapshot(from: &Path, to: &Path) -> Result<(), OutputError> {
    let temp = crate::io::link_beside(from, to)?;
    std::fs::rename(&temp, to).map_err(io_error(to))
}

/// A reference opened for an incremental scan.
pub struct Reference {
    /// Its generation directory (holding the snapshot the diff reads).
    pub dir: PathBuf,
    pub header: Header,
}

/// Why a reference cannot be used at all (as opposed to one that only needs a re-fit).
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error(
        "{path}: no datavet reference here (looked for {DIR}/{CURRENT}, {CURRENT} and {HEADER_FILE}); \
         a scan saves one in OUT/{DIR}/; run a full scan first"
    )]
    NotFound { path: PathBuf },
    #[error("{path}: cannot read the reference: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a readable datavet reference ({message}); delete it and run a full scan")]
    Corrupt { path: PathBuf, message: String },
    #[error(
        "{path}: reference format {found} (written by datavet {written_by}); this datavet {ours} reads \
         format {FORMAT_VERSION} only; run the datavet that wrote it, or a full scan without --since-reference"
    )]
    Format {
        path: PathBuf,
        found: u32,
        written_by: String,
        ours: &'static str,
    },
}

fn corrupt(path: &Path, message: impl ToString) -> ReferenceError {
    ReferenceError::Corrupt {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ReferenceError> {
    std::fs::read(path).map_err(|source| ReferenceError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The generation directory `path` points at: a scan's output directory, its `reference/`
/// directory, or a generation directory itself.
pub fn locate(path: &Path) -> Result<PathBuf, ReferenceError> {
    for dir in [path.join(DIR), path.to_path_buf()] {
        let current = dir.join(CURRENT);
        if current.is_file() {
            let name = String::from_utf8_lossy(&read(&current)?).trim().to_string();
            if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
                return Err(corrupt(&current, "CURRENT does not name a generation"));
            }
            return Ok(dir.join(name));
        }
    }
    if path.join(HEADER_FILE).is_file() {
        return Ok(path.to_path_buf());
    }
    Err(ReferenceError::NotFound {
        path: path.to_path_buf(),
    })
}

/// Opens the reference at `path` (see [`locate`]) and checks its format.
pub fn open(path: &Path) -> Result<Reference, ReferenceError> {
    let dir = locate(path)?;
    let header_path = dir.join(HEADER_FILE);
    let value: serde_json::Value =
        serde_json::from_slice(&read(&header_path)?).map_err(|e| corrupt(&header_path, e))?;
    if value["format"].as_str() != Some(FORMAT_NAME) {
        return Err(corrupt(&header_path, "it does not say it is a datavet reference"));
    }
    let found = value["format_version"].as_u64().unwrap_or(0) as u32;
    if found != FORMAT_VERSION {
        return Err(ReferenceError::Format {
            path: header_path,
            found,
            written_by: value["tool_version"].as_str().unwrap_or("?").to_string(),
            ours: env!("CARGO_PKG_VERSION"),
        });
    }
    let header: Header = serde_json::from_value(value).map_err(|e| corrupt(&header_path, e))?;
    if header.class_fits.len() != header.classes.len() {
        return Err(corrupt(&header_path, "one class fit per class expected"));
    }
    Ok(Reference { dir, header })
}

impl Reference {
    /// The per-record part (the larger file), checked against the header.
    pub fn records(&self) -> Result<Records, ReferenceError> {
        let path = self.dir.join(RECORDS_FILE);
        let records: Records = serde_json::from_slice(&read(&path)?).map_err(|e| corrupt(&path, e))?;
        let influence_rows = records.influence.as_ref().map(|s| s.rows());
        if records.keys.len() != self.header.rows
            || records.hashes.len() != self.header.rows
            || influence_rows.is_some_and(|r| r != self.header.rows)
            || records.influence.as_ref().is_some_and(|s| !s.is_consistent())
        {
            return Err(corrupt(&path, "its record count does not match reference.json"));
        }
        Ok(records)
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> OutputError + '_ {
    move |source| OutputError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Generation numbers present under `reference_dir`, ascending.
fn generations(reference_dir: &Path) -> Vec<u64> {
    let mut out: Vec<u64> = std::fs::read_dir(reference_dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    out.sort_unstable();
    out
}

/// The generation number the next reference saved in `out_dir` gets.
pub fn next_generation(out_dir: &Path) -> u64 {
    generations(&out_dir.join(DIR)).last().map_or(1, |g| g + 1)
}

/// A reference generation written to a hidden directory beside the others, not yet current.
/// Writing it is most of a save (the records' JSON: 94 MB at 1M rows), and it needs only the
/// scan's state, so a scan prepares it while its outputs are written and commits it once they
/// are published. Dropped uncommitted (the scan failed), it is deleted.
pub struct Prepared {
    temp: tempfile::TempDir,
    name: String,
    out_dir: PathBuf,
    diff_base: DiffBase,
    /// Declared after `temp`, so dropped after it: the folder is empty by then.
    created: CreatedFolder,
}

/// `reference/` when this save created it: removed again if the scan fails (it is empty then),
/// so a failed first scan leaves its --out folder as empty as it found it, and removable.
struct CreatedFolder(Option<PathBuf>);

impl Drop for CreatedFolder {
    fn drop(&mut self) {
        if let Some(folder) = self.0.take() {
            let _ = std::fs::remove_dir(folder); // fails, harmlessly, on a folder with anything in it
        }
    }
}

/// Writes the header, the records and the releases that still apply into a new hidden
/// generation directory under `out_dir/reference/`, after clearing what a killed save left.
pub fn prepare(
    out_dir: &Path,
    header: &Header,
    records: &Records,
    releases: &Releases,
) -> Result<Prepared, OutputError> {
    let reference_dir = out_dir.join(DIR);
    let created = CreatedFolder((!reference_dir.exists()).then(|| reference_dir.clone()));
    std::fs::create_dir_all(&reference_dir).map_err(io_error(&reference_dir))?;
    // Leftovers of a save that was killed half-way (never current, so never read).
    for e in std::fs::read_dir(&reference_dir).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with('.') {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    let name = format!("{:06}", header.generation);
    let temp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .tempdir_in(&reference_dir)
        .map_err(io_error(&reference_dir))?;
    write_json(&temp.path().join(HEADER_FILE), header)?;
    write_json(&temp.path().join(RECORDS_FILE), records)?;
    if !releases.keys.is_empty() {
        write_json(&temp.path().join(RELEASES_FILE), releases)?;
    }
    Ok(Prepared {
        temp,
        name,
        out_dir: out_dir.to_path_buf(),
        diff_base: header.diff_base,
        created,
    })
}

impl Prepared {
    /// Adds a snapshot of the scan's published `scores.parquet` (hard-linked: the published file
    /// is replaced by rename, never rewritten in place, so the link keeps this scan's version)
    /// and `report.json`, makes the generation current and deletes generations before the
    /// previous one, but for the one its scan diffed against. Returns the generation directory.
    pub fn commit(self) -> Result<PathBuf, OutputError> {
        // `created` first: a pattern's bindings drop in reverse order, and the folder can only be
        // removed once `temp` is gone (a failure before the rename below).
        let Prepared {
            mut created,
            temp,
            name,
            out_dir,
            diff_base,
        } = self;
        let reference_dir = out_dir.join(DIR);
        for file in [crate::quarantine::SCORES_FILE, crate::report::REPORT_FILE] {
            snapshot(&out_dir.join(file), &temp.path().join(file))?;
        }
        let target = reference_dir.join(&name);
        if target.exists() {
            std::fs::remove_dir_all(&target).map_err(io_error(&target))?;
        }
        let temp = temp.keep();
        std::fs::rename(&temp, &target).map_err(io_error(&target))?;
        created.0 = None; // the folder holds the generation now
        AtomicFile::write_all(&reference_dir.join(CURRENT), format!("{name}\n").as_bytes())?;
        let all = generations(&reference_dir);
        for old in all
            .iter()
            .rev()
            .skip(KEEP_GENERATIONS)
            .filter(|g| diff_base != DiffBase::Generation(**g))
        {
            let dir = reference_dir.join(format!("{old:06}"));
            std::fs::remove_dir_all(&dir).map_err(io_error(&dir))?;
        }
        Ok(target)
    }
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<(), OutputError> {
    AtomicFile::write_json(path, value, false)
}

/// A new fit's identity: a hash of what it was fitted on and when.
pub fn new_fit_id(inputs: &[crate::io::FileInfo], at: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{}\n{at}", serde_json::to_string(inputs).unwrap_or_default()));
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(generation: u64) -> Header {
        Header {
            format: FORMAT_NAME.into(),
            format_version: FORMAT_VERSION,
            tool_version: "test".into(),
            created_at: "now".into(),
            generation,
            fit: FitInfo {
                id: "fit".into(),
                generation,
                created_at: "now".into(),
                rows: 2,
            },
            rows_scored_since_fit: 0,
            rows: 2,
            settings: serde_json::Value::Null,
            dim: 1,
            classes: vec!["a".into()],
            class_fits: vec![None],
            feature_scaling: None,
            diff_base: DiffBase::Unknown,
        }
    }

    #[test]
    fn a_prepared_reference_is_current_only_once_committed_and_gone_if_dropped() {
        let out = tempfile::tempdir().unwrap();
        let records = Records {
            keys: RecordKeys::Int(vec![1, 2]),
            hashes: vec![7, 8],
            influence: None,
        };
        let reference_dir = out.path().join(DIR);
        // A first scan that fails while publishing leaves no empty reference folder behind,
        // nor one whose commit failed (no scores.parquet to snapshot).
        drop(prepare(out.path(), &header(1), &records, &Releases::default()).unwrap());
        assert!(!reference_dir.exists());
        let prepared = prepare(out.path(), &header(1), &records, &Releases::default()).unwrap();
        assert!(prepared.commit().is_err());
        assert!(!reference_dir.exists());
        for file in [crate::quarantine::SCORES_FILE, crate::report::REPORT_FILE] {
            std::fs::write(out.path().join(file), file).unwrap();
        }
        let entries = || -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(&reference_dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        let first = prepare(out.path(), &header(1), &records, &Releases::default())
            .unwrap()
            .commit()
            .unwrap();
        assert_eq!(entries(), ["000001", CURRENT]);
        assert!(first.join(RECORDS_FILE).is_file() && first.join(crate::quarantine::SCORES_FILE).is_file());

        // Prepared but not committed (the scan failed while publishing): generation 1 stays
        // current, and dropping the prepared one leaves nothing behind.
        let prepared = prepare(out.path(), &header(2), &records, &Releases::default()).unwrap();
        assert_eq!(entries().len(), 3, "a hidden directory beside the current generation");
        assert_eq!(
            std::fs::read_to_string(reference_dir.join(CURRENT)).unwrap(),
            "000001\n"
        );
        drop(prepared);
        assert_eq!(entries(), ["000001", CURRENT]);

        let second = prepare(out.path(), &header(2), &records, &Releases::default())
            .unwrap()
            .commit()
            .unwrap();
        assert_eq!(entries(), ["000001", "000002", CURRENT]);
        assert_eq!(
            std::fs::read_to_string(reference_dir.join(CURRENT)).unwrap(),
            "000002\n"
        );
        assert_eq!(
            std::fs::read_to_string(second.join(crate::report::REPORT_FILE)).unwrap(),
            crate::report::REPORT_FILE
        );
    }
}
