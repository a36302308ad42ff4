//! Pipeline files (`pipelines/*.toml`): what to scan, with which columns and settings, where to
//! write. `load` turns one into a checked [`Pipeline`]; every problem names the file, and the line
//! and key where it has one.
//!
//! Paths inside a pipeline file are relative to the file's own directory, so a pipeline runs the
//! same from any working directory. `--set key=value` overrides any key (dotted path, value in
//! TOML syntax; a bare word is taken as a string).
//!
//! Imports: `io`, `detect`, `score` (their parameter types), `pipeline` (ScanConfig).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::detect::{DetectorParams, registry};
use crate::io::ReadOptions;
use crate::pipeline::{DEFAULT_MIN_CLASS_ROWS, ScanConfig};
use crate::score::DecisionParams;

/// A pipeline file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PipelineFile {
    /// What the pipeline is for, shown by `datavet check`.
    #[serde(default)]
    pub description: String,
    pub input: InputConf,
    pub output: OutputConf,
    #[serde(default)]
    pub scan: ScanConf,
    #[serde(default)]
    pub detect: DetectorParams,
    #[serde(default)]
    pub decision: DecisionParams,
    #[serde(default)]
    pub incremental: IncrementalConf,
}

/// `[incremental]`: nightly scans that score only what is new or changed since the last one.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct IncrementalConf {
    /// Score only records new or changed since the reference (full scan when there is none yet).
    pub enabled: bool,
    /// Where the reference is, relative to the pipeline file; default: the output directory's
    /// own (`[output] dir`). When given, it must exist.
    pub reference: Option<PathBuf>,
    /// `[incremental.refit]`: when to fit afresh instead.
    pub refit: crate::reference::delta::RefitPolicy,
}

/// `[input]`: the data and its columns (see `datavet scan --help` for each column's meaning).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct InputConf {
    /// Parquet files or directories, relative to the pipeline file.
    pub paths: Vec<PathBuf>,
    pub id_col: Option<String>,
    #[serde(default = "default_label")]
    pub label_col: String,
    pub activations_col: Option<String>,
    pub feature_cols: Option<Vec<String>>,
    pub probs_col: Option<String>,
    pub loss_col: Option<String>,
    pub source_col: Option<String>,
    /// A verified clean Parquet set (same columns) for influence on a trusted set.
    #[serde(default)]
    pub trusted: Vec<PathBuf>,
}

fn default_label() -> String {
    "label".into()
}

/// `[output]`: where results go and when the run should fail a gate.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OutputConf {
    /// Output directory, relative to the pipeline file.
    pub dir: PathBuf,
    /// Exit 3 when more rows than this are quarantined.
    pub fail_if_quarantined: Option<u64>,
    /// Staged-run directories (`OUT/runs/<run-id>/`) to keep, newest first; older ones are deleted
    /// after a successful run. Each holds the stage results of one input state.
    #[serde(default = "default_keep_runs")]
    pub keep_runs: usize,
    /// Save a reference in the output directory for incremental scans (default true). False
    /// beside `[incremental] enabled = true` keeps one baseline: every scan diffs against the
    /// reference last saved (said in the log, as it is easy to set by mistake).
    #[serde(default = "default_true")]
    pub save_reference: bool,
    /// Exit 3 when more records than this are newly quarantined since the last scan (every
    /// quarantined record counts as new when there was none).
    pub fail_if_new: Option<usize>,
}

fn default_true() -> bool {
    true
}

fn default_keep_runs() -> usize {
    3
}

/// `[scan]`: settings that apply to the whole scan.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ScanConf {
    pub seed: u64,
    pub min_class_rows: usize,
}

impl Default for ScanConf {
    fn default() -> Self {
        ScanConf {
            seed: 42,
            min_class_rows: DEFAULT_MIN_CLASS_ROWS,
        }
    }
}

/// A loaded, checked pipeline.
#[derive(Debug)]
pub struct Pipeline {
    pub description: String,
    pub scan: ScanConfig,
    pub fail_if_quarantined: Option<u64>,
    pub fail_if_new: Option<usize>,
    pub keep_runs: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read pipeline file: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid pipeline file: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: --set {assignment}: {message}")]
    Override {
        path: PathBuf,
        assignment: String,
        message: String,
    },
    #[error("{}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
    Problems(Vec<Problem>),
}

/// One semantic problem, located as `file:line`.
#[derive(Debug)]
pub struct Problem {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.path.display(), self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

/// Loads `path`, applies `overrides` (`key.path=value`), and checks everything, reporting all
/// problems at once.
pub fn load(path: &Path, overrides: &[String]) -> Result<Pipeline, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    let invalid = |message: String| ConfigError::Invalid {
        path: path.into(),
        message,
    };
    // Parse the text as written first: its errors carry line, column and the offending key.
    let mut file = parse_reporting_all(&text).map_err(|errors| invalid(errors.to_string()))?;
    if !overrides.is_empty() {
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| invalid(e.to_string()))?;
        for assignment in overrides {
            apply_override(&mut table, assignment).map_err(|message| ConfigError::Override {
                path: path.into(),
                assignment: assignment.clone(),
                message,
            })?;
        }
        file = table.try_into().map_err(|e: toml::de::Error| ConfigError::Override {
            path: path.into(),
            assignment: overrides.join(" "),
            message: e.to_string(),
        })?;
    }
    check(path, &text, file)
}

/// Most errors one parse collects ([`parse_reporting_all`]).
const MAX_PARSE_ERRORS: usize = 100;

/// What [`parse_reporting_all`] found wrong: the errors in the file's order, and whether
/// collecting went to the end of the file or stopped early (a missing key, a value it could not
/// blank whole, the cap), so that more may show once these are fixed.
struct ParseErrors {
    errors: Vec<String>,
    complete: bool,
}

impl std::fmt::Display for ParseErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.errors.len() {
            1 => write!(f, "{}", self.errors[0])?,
            count => write!(f, "{count} problems\n{}", self.errors.join("\n"))?,
        }
        if !self.complete {
            write!(
                f,
                "\n(the file was read this far: the rest is checked once these are fixed)"
            )?;
        }
        Ok(())
    }
}

/// Parses a pipeline file, reporting every misspelt key and mistyped value at once rather than
/// one per run. TOML's deserializer stops at the first (visiting keys in sorted order, not the
/// file's); after each, the entry it names is blanked out (its lines: a multi-line value to its
/// end; for an unknown `[table]`, the table and its keys) and the text parsed again. Blanking
/// keeps every byte's place, so each message shows the file's own line and column; the errors
/// come back in the file's order. A syntax error is reported alone (blanking its line could
/// change what the rest means). Collecting stops, saying so, at a missing key (nothing to
/// blank), where a blanked text no longer parses, at [`MAX_PARSE_ERRORS`], and at a "missing
/// field" for a key this blanked (of our making: not reported). One entry per line: a
/// second error on the same line (in an inline table) shows once the first is fixed.
fn parse_reporting_all(text: &str) -> Result<PipelineFile, ParseErrors> {
    if let Err(e) = text.parse::<toml::Table>() {
        return Err(ParseErrors {
            errors: vec![e.to_string()],
            complete: true,
        });
    }
    let mut work = text.as_bytes().to_vec();
    // (where in the file, message)
    let (mut errors, mut blanked_keys) = (Vec::<(usize, String)>::new(), Vec::<String>::new());
    let complete = loop {
        if errors.len() == MAX_PARSE_ERRORS {
            break false;
        }
        // Only whole lines of ASCII spaces replace whole lines: still UTF-8.
        let current = String::from_utf8_lossy(&work).into_owned();
        let e = match toml::from_str::<PipelineFile>(&current) {
            Ok(file) if errors.is_empty() => return Ok(file),
            Ok(_) => break true,
            Err(e) => e,
        };
        let ours = blanked_keys
            .iter()
            .any(|k| e.message().contains(&format!("missing field `{k}`")));
        if ours {
            // Not the file's error, but it hides what comes after it.
            break false;
        }
        errors.push((e.span().map_or(0, |s| s.start), e.to_string()));
        // A missing key has nothing to blank (its span is the table that lacks it).
        if e.message().starts_with("missing field") {
            break false;
        }
        let Some(key) = e.span().and_then(|span| blank_entry(&mut work, span.start)) else {
            break false;
        };
        // `input.paths = 3` blanked: neither `input` nor `paths` may be called missing.
        blanked_keys.extend(key.split('.').map(|part| part.trim().trim_matches('"').to_string()));
    };
    errors.sort_by_key(|(at, _)| *at);
    Err(ParseErrors {
        errors: errors.into_iter().map(|(_, message)| message).collect(),
        complete,
    })
}

/// Blanks (spaces for every byte but line ends) the entry on the line holding byte `at`: that
/// line, and the next ones until the text parses again (a multi-line array or string), or where
/// the line is a `[table]` header, the table's lines up to the next header. Returns the entry's
/// key (the header's name, or the text before `=`); `None` when `at` is past the text or on a
/// blank line, or when no run of lines up to the next header leaves a text that parses.
fn blank_entry(text: &mut [u8], at: usize) -> Option<String> {
    let line_at = |text: &[u8], from: usize| {
        let start = text[..from.min(text.len())]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1);
        let end = text[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(text.len(), |p| start + p);
        (start, end)
    };
    let is_header = |text: &[u8], (start, end): (usize, usize)| {
        String::from_utf8_lossy(&text[start..end]).trim_start().starts_with('[')
    };
    let blank = |text: &mut [u8], from: usize, to: usize| {
        text[from..to]
            .iter_mut()
            .filter(|b| **b != b'\n' && **b != b'\r')
            .for_each(|b| *b = b' ');
    };
    let parses = |text: &[u8]| std::str::from_utf8(text).is_ok_and(|t| t.parse::<toml::Table>().is_ok());
    if at >= text.len() {
        return None;
    }
    let (start, end) = line_at(text, at);
    let line = String::from_utf8_lossy(&text[start..end]).trim().to_string();
    if line.is_empty() {
        return None;
    }
    let header = is_header(text, (start, end));
    let key = if header {
        line.trim_matches(|c| c == '[' || c == ']').trim().to_string()
    } else {
        line.split('=').next().unwrap_or("").trim().to_string()
    };
    blank(text, start, end);
    let mut last = end;
    // A header's table, or a value continuing over the next lines: blank on to the next header.
    while (header || !parses(text)) && last < text.len() {
        let next = line_at(text, last + 1);
        if is_header(text, next) {
            break;
        }
        blank(text, next.0, next.1);
        last = next.1;
    }
    parses(text).then_some(key)
}

/// `a.b.c=value`: sets the dotted key; the value is TOML (`3`, `true`, `"x"`, `[1, 2]`), or a
/// plain string when it does not parse as TOML.
fn apply_override(table: &mut toml::Table, assignment: &str) -> Result<(), String> {
    let (key, raw) = assignment.split_once('=').ok_or("expected KEY=VALUE")?;
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let parts: Vec<&str> = key.trim().split('.').collect();
    let (last, parents) = parts.split_last().ok_or("empty key")?;
    let mut node = table;
    for p in parents {
        node = node
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| format!("`{p}` is not a table"))?;
    }
    node.insert(last.to_string(), value);
    Ok(())
}

/// 1-based line of `key` inside `[table]` in `text` (first match), for messages.
fn line_of(text: &str, table: &str, key: &str) -> Option<usize> {
    let header = format!("[{table}]");
    let mut in_table = table.is_empty();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') {
            in_table = t == header;
            if in_table && key.is_empty() {
                return Some(i + 1);
            }
            continue;
        }
        if in_table && t.split('=').next().is_some_and(|k| k.trim() == key) {
            return Some(i + 1);
        }
    }
    None
}

fn check(path: &Path, text: &str, file: PipelineFile) -> Result<Pipeline, ConfigError> {
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut problems = Vec::new();
    let mut problem = |line: Option<usize>, message: String| {
        problems.push(Problem {
            path: path.into(),
            line,
            message,
        })
    };
    if file.input.paths.is_empty() {
        problem(
            line_of(text, "input", "paths"),
            "[input] `paths` must name at least one file or directory".into(),
        );
    }
    let inputs: Vec<PathBuf> = file.input.paths.iter().map(|p| base.join(p)).collect();
    let trusted: Vec<PathBuf> = file.input.trusted.iter().map(|p| base.join(p)).collect();
    for (key, given, resolved) in file
        .input
        .paths
        .iter()
        .zip(&inputs)
        .map(|(g, r)| ("paths", g, r))
        .chain(file.input.trusted.iter().zip(&trusted).map(|(g, r)| ("trusted", g, r)))
    {
        if !resolved.exists() {
            problem(
                line_of(text, "input", key),
                format!(
                    "[input] `{key}`: {} not found (resolved to {})",
                    given.display(),
                    resolved.display()
                ),
            );
        }
    }
    if file.output.keep_runs == 0 {
        problem(
            line_of(text, "output", "keep-runs"),
            "[output] `keep-runs` must be at least 1 (the run just made is kept)".into(),
        );
    }
    for (key, empty) in [
        ("dir", file.output.dir.as_os_str().is_empty()),
        ("paths", file.input.paths.iter().any(|p| p.as_os_str().is_empty())),
        ("trusted", file.input.trusted.iter().any(|p| p.as_os_str().is_empty())),
    ] {
        if empty {
            let table = if key == "dir" { "output" } else { "input" };
            problem(
                line_of(text, table, key),
                format!("[{table}] `{key}` holds an empty path (it would mean the pipeline file's own folder)"),
            );
        }
    }
    if file.input.feature_cols.as_ref().is_some_and(Vec::is_empty) {
        problem(
            line_of(text, "input", "feature-cols"),
            "[input] `feature-cols` names no column; list the numeric feature columns, or leave the key out to use a vector column".into(),
        );
    }
    if file.input.activations_col.is_some() && file.input.feature_cols.is_some() {
        problem(
            line_of(text, "input", "activations-col"),
            "[input] `activations-col` and `feature-cols` both name the vectors; keep the one \
             this model's input is"
                .into(),
        );
    }
    if !file.incremental.enabled && file.incremental.reference.is_some() {
        problem(
            line_of(text, "incremental", "reference"),
            "[incremental] `reference` is given but `enabled` is false, so it would not be read: \
             set `enabled = true`, or remove `reference`"
                .into(),
        );
    }
    if let Err(e) = registry(&file.detect, crate::detect::Available::default()) {
        let table = [
            "activation-clustering",
            "spectral",
            "spectre",
            "shared-shift",
            "influence",
        ]
        .into_iter()
        .find(|t| line_of(text, &format!("detect.{t}"), e.key).is_some())
        .map(|t| format!("detect.{t}"));
        let line = table.as_deref().and_then(|t| line_of(text, t, e.key));
        problem(line, format!("[{}] {e}", table.unwrap_or_else(|| "detect".into())));
    }
    if let Err(e) = file.decision.check() {
        problem(line_of(text, "decision", e.key), format!("[decision] {e}"));
    }
    if let Err(e) = file.incremental.refit.check() {
        problem(
            line_of(text, "incremental.refit", e.key),
            format!("[incremental.refit] {e}"),
        );
    }
    let out_dir = base.join(&file.output.dir);
    let reference = file.incremental.reference.as_ref().map(|r| base.join(r));
    if let Some(r) = &reference
        && !r.exists()
    {
        problem(
            line_of(text, "incremental", "reference"),
            format!("[incremental] `reference`: {} not found", r.display()),
        );
    }
    if !problems.is_empty() {
        return Err(ConfigError::Problems(problems));
    }
    let mut scan = ScanConfig::new(inputs, out_dir.clone());
    scan.read = ReadOptions {
        id_col: file.input.id_col,
        label_col: file.input.label_col,
        activations_col: file.input.activations_col,
        feature_cols: file.input.feature_cols,
        probs_col: file.input.probs_col,
        loss_col: file.input.loss_col,
        source_col: file.input.source_col,
        feature_scaling: None,
    };
    scan.trusted = trusted;
    scan.detectors = file.detect;
    scan.decision = file.decision;
    scan.seed = file.scan.seed;
    scan.min_class_rows = file.scan.min_class_rows;
    scan.reference.save = file.output.save_reference;
    // With `[incremental] reference` named, a missing one is the scan's error, not this warning.
    if file.incremental.enabled && !file.output.save_reference {
        let base = reference.as_deref().unwrap_or(&out_dir);
        if crate::reference::locate(base).is_ok() {
            log::info!(
                "[output] save-reference = false: no new reference is saved, so every incremental scan of \
                 this pipeline diffs against the one in {} (a fixed baseline)",
                base.display()
            );
        } else if reference.is_none() {
            log::warn!(
                "[output] save-reference = false and no reference in {}: every incremental scan of this \
                 pipeline is a full scan that saves none; set save-reference = true to start the nightly diffs",
                base.display()
            );
        }
    }
    if file.incremental.enabled {
        scan.reference.required = reference.is_some();
        scan.reference.since = Some(reference.unwrap_or(out_dir));
    }
    scan.reference.refit = file.incremental.refit;
    Ok(Pipeline {
        description: file.description,
        scan,
        fail_if_quarantined: file.output.fail_if_quarantined,
        fail_if_new: file.output.fail_if_new,
        keep_runs: file.output.keep_runs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("p.toml");
        std::fs::write(&path, text).unwrap();
        std::fs::write(dir.join("data.parquet"), b"").unwrap();
        path
    }

    const GOOD: &str = "[input]\npaths = [\"data.parquet\"]\n[output]\ndir = \"out\"\n";

    #[test]
    fn paths_resolve_against_the_pipeline_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = load(&write(dir.path(), GOOD), &[]).unwrap();
        assert_eq!(p.scan.inputs, vec![dir.path().join("data.parquet")]);
        assert_eq!(p.scan.out_dir, dir.path().join("out"));
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("{GOOD}[detect.spectre]\nalpah = 3\n");
        let err = load(&write(dir.path(), &text), &[]).unwrap_err().to_string();
        assert!(err.contains("line 6") && err.contains("alpah"), "{err}");
    }

    #[test]
    fn wrong_type_names_line() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("{GOOD}[scan]\nseed = \"forty-two\"\n");
        let err = load(&write(dir.path(), &text), &[]).unwrap_err().to_string();
        assert!(err.contains("line 6") && err.contains("seed"), "{err}");
    }

    /// Misspelt keys, an unknown table and a mistyped value, all in one run and in the file's
    /// order; blanking one (a whole unknown table with its keys) invents no error of its own.
    #[test]
    fn every_misspelt_key_and_mistyped_value_is_reported_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let text = "[input]\npaths = [\n  \"data.parquet\",\n]\nlable-col = \"y\"\n[output]\ndir = \"out\"\n\
                    [detect.spectr]\ntrim = 0.1\n[detect.spectre]\nalpah = 3\n[scan]\nseed = \"forty-two\"\n";
        let err = load(&write(dir.path(), text), &[]).unwrap_err().to_string();
        assert!(err.contains("4 problems"), "{err}");
        let lines: Vec<usize> = ["line 5,", "line 8,", "line 11,", "line 13,"]
            .iter()
            .map(|l| err.find(l).unwrap_or_else(|| panic!("{l} missing: {err}")))
            .collect();
        assert!(lines.is_sorted(), "not in the file's order: {err}");
        for key in ["lable-col", "spectr", "alpah", "forty-two"] {
            assert!(err.contains(key), "{key}: {err}");
        }
        assert!(
            !err.contains("line 9,"),
            "the unknown table's keys are its, not errors: {err}"
        );
        // A required key's value mistyped: one error, not also "missing field" for it.
        let text = "input = { paths = 3 }\n[output]\ndir = \"out\"\n";
        let err = load(&write(dir.path(), text), &[]).unwrap_err().to_string();
        assert!(err.contains("invalid type") && !err.contains("missing field"), "{err}");
        assert!(!err.contains("problems"), "{err}");
        // A missing required table is an error of the file's, reported beside the others; what
        // comes after it in the reader's order is not read, and the message says so.
        let text = "[output]\ndir = \"out\"\ndirr = 1\n";
        let err = load(&write(dir.path(), text), &[]).unwrap_err().to_string();
        assert!(
            err.contains("2 problems") && err.contains("dirr") && err.contains("missing field `input`"),
            "{err}"
        );
        assert!(err.contains("the rest is checked once these are fixed"), "{err}");
        // Dotted keys: blanking `input.paths` invents no missing `paths` or `input` (and what
        // that hides is said to be unread).
        let text = "input.paths = 3\ninput.label-col = \"y\"\n[output]\ndir = \"out\"\ndirr = 1\n";
        let err = load(&write(dir.path(), text), &[]).unwrap_err().to_string();
        assert!(err.contains("expected a sequence") && !err.contains("missing"), "{err}");
        assert!(err.contains("the rest is checked once these are fixed"), "{err}");
        // A multi-line value is blanked to its end, and reading goes on past it.
        let text = "[input]\npaths = [\"data.parquet\"]\nfeature-colz = [\n  \"a\",\n  \"b\",\n]\n\
                    [output]\ndir = \"out\"\ndirr = 1\n";
        let err = load(&write(dir.path(), text), &[]).unwrap_err().to_string();
        assert!(
            err.contains("2 problems") && err.contains("feature-colz") && err.contains("dirr"),
            "{err}"
        );
        assert!(!err.contains("read this far"), "{err}");
        // A syntax error alone: blanking `decision]` would move its keys into `[output]`.
        let text = format!("{GOOD}decision]\nanomaly-threshold = 4.0\n");
        let err = load(&write(dir.path(), &text), &[]).unwrap_err().to_string();
        assert!(
            err.contains("line 5") && !err.contains("problems") && !err.contains("unknown field"),
            "{err}"
        );
        // More than the cap: the first found, and a word that there is more.
        let many: String = (0..MAX_PARSE_ERRORS + 5).map(|i| format!("bad{i} = 1\n")).collect();
        let err = load(&write(dir.path(), &format!("{GOOD}[scan]\n{many}")), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("{MAX_PARSE_ERRORS} problems")), "{err}");
        assert!(err.contains("the rest is checked once these are fixed"), "{err}");
    }

    #[test]
    fn bad_values_and_missing_files_are_all_reported_with_lines() {
        let dir = tempfile::tempdir().unwrap();
        let text = "[input]\npaths = [\"nope.parquet\"]\n[output]\ndir = \"out\"\n[detect.spectre]\ntrim = 0.9\n[decision]\nmax-quarantine-fraction = 2.0\n";
        let err = load(&write(dir.path(), text), &[]).unwrap_err().to_string();
        assert!(
            err.contains("p.toml:2: [input] `paths`: nope.parquet not found"),
            "{err}"
        );
        assert!(err.contains("p.toml:6: [detect.spectre] `trim`"), "{err}");
        assert!(err.contains("p.toml:8: [decision] `max-quarantine-fraction`"), "{err}");
    }

    #[test]
    fn settings_that_contradict_each_other_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("last")).unwrap();
        let text = "[input]\npaths = [\"data.parquet\"]\nactivations-col = \"emb\"\nfeature-cols = [\"a\"]\n\
                    [output]\ndir = \"out\"\n[incremental]\nreference = \"last\"\n";
        let err = load(&write(dir.path(), text), &[]).unwrap_err().to_string();
        assert!(
            err.contains("p.toml:3: [input] `activations-col` and `feature-cols`"),
            "{err}"
        );
        assert!(
            err.contains("p.toml:8: [incremental] `reference` is given but `enabled` is false"),
            "{err}"
        );
    }

    #[test]
    fn overrides_set_nested_keys_with_toml_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), GOOD);
        let p = load(
            &path,
            &[
                "scan.seed=7".into(),
                "detect.spectre.enabled=false".into(),
                "detect.shared-shift.enabled=false".into(),
                "detect.activation-clustering.distance-analysis=false".into(),
                "output.dir=elsewhere".into(),
            ],
        )
        .unwrap();
        assert_eq!(p.scan.seed, 7);
        assert!(!p.scan.detectors.spectre.enabled);
        assert!(!p.scan.detectors.shared_shift.enabled);
        assert!(!p.scan.detectors.activation_clustering.distance_analysis);
        assert_eq!(p.scan.out_dir, dir.path().join("elsewhere"));
        let err = load(&path, &["scan.sed=7".into()]).unwrap_err().to_string();
        assert!(err.contains("--set") && err.contains("sed"), "{err}");
    }
}
