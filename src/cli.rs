//! Command-line interface: flags -> [`ScanConfig`] -> [`pipeline::run_scan`] -> exit status.
//! The library never prints; this module prints the summary and warnings.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use crate::config;
use crate::detect::ParamError;
use crate::pipeline::{self, ScanConfig};
use crate::progress::Progress;
use crate::testkit::{self, Attack, Kind, Spec};

/// Exit codes, so nightly jobs and training pipelines can gate on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// 0: the run finished.
    Success,
    /// 2: a usage or input error (or any other failure); nothing was published.
    Error,
    /// 3: the run finished but quarantined more rows than `--fail-if-quarantined` allows.
    QuarantineOverLimit,
}

impl From<ExitStatus> for ExitCode {
    fn from(s: ExitStatus) -> ExitCode {
        ExitCode::from(match s {
            ExitStatus::Success => 0,
            ExitStatus::Error => 2,
            ExitStatus::QuarantineOverLimit => 3,
        })
    }
}

/// datavet: find poisoned records in ML training data before you retrain on them.
///
/// Point `datavet scan` at Parquet files holding an id, a label and the model's activations (or
/// embedding) per record. It decides which classes look attacked, quarantines the suspicious
/// records there, and writes clean.parquet (retrain on this), quarantine.parquet, scores.parquet
/// and report.json. Every input row lands in exactly one of clean/quarantine, unchanged.
///
/// Exit codes: 0 finished, 2 usage or input error, 3 quarantine over --fail-if-quarantined or
/// newly quarantined records over --fail-if-new.
#[derive(Debug, Parser)]
#[command(name = "datavet", version, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// More log output (-v info, -vv debug). Logs go to stderr; RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Log lines as text, or as one JSON object per line (`{"ts","level","msg"}`) for schedulers.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Scan a dataset and write clean/quarantine/scores Parquet files and report.json to --out.
    ///
    /// Example: datavet scan --input sample_data/sample.parquet --out out/
    Scan(Box<ScanArgs>),
    /// Write a seeded synthetic dataset with a planted backdoor (for trying datavet out).
    ///
    /// Example: datavet sample --out sample_data/sample.parquet --kind relu --seed 7
    Sample(SampleArgs),
    /// Run a pipeline file as a staged run: inputs, columns, detector settings and output dir from
    /// TOML. Stages (ingest, features, influence, cluster, score, quarantine, report) keep their results
    /// under `OUT/runs/<run-id>/<stage>/` with a manifest; a re-run reuses every stage whose input
    /// and settings are unchanged, and a killed run resumes where it stopped.
    ///
    /// Paths in the file are relative to the file. Example:
    /// datavet run pipelines/pretrain-vetting.toml --set output.dir=/tmp/vet --set scan.seed=7
    Run(RunArgs),
    /// Check a pipeline file (syntax, keys, values, input paths) without reading any data.
    Check(PipelineArgs),
    /// Regenerate report.html and report.md of a finished scan from its output directory.
    ///
    /// Example: datavet report out/
    Report(RunDirArgs),
    /// Write a scan's quarantine for review as Parquet, CSV or JSON lines (every column, plus
    /// suspicion and reasons). Data strings stay exact: quoted in CSV, escaped in JSON.
    ///
    /// Example: datavet export out/ --format csv --out review.csv
    Export(ExportArgs),
    /// Move reviewed records back to clean.parquet (by id), with a line in the append-only
    /// audit log (DIR/audit.jsonl: who, when, why, which ids). Still every row in exactly one file.
    ///
    /// Example: datavet release out/ --ids reviewed.txt --reason "checked by hand: real data"
    Release(ReleaseArgs),
    /// Acknowledge the alert of the last incremental scan into DIR: until then, a rerun on the
    /// same records (a retried job, a night without new data) repeats its --fail-if-new alert;
    /// after it, such a rerun finds nothing new. Logged in DIR/audit.jsonl.
    ///
    /// Example: datavet ack out/ --reason "ticket 123: the 12 records are poison, kept out"
    Ack(AckArgs),
    /// Compare two scans (e.g. last night's and tonight's --out directories): newly quarantined,
    /// released and gone records, per class and per source. Writes diff.json into CURRENT and
    /// prints a one-line summary.
    ///
    /// Example: datavet diff out/2026-11-24 out/2026-11-25 --fail-if-new 0
    Diff(DiffArgs),
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The earlier scan's output directory.
    pub previous: PathBuf,
    /// The later scan's output directory (diff.json is written here).
    pub current: PathBuf,
    /// Exit 3 when more than N records are newly quarantined (for alerting).
    #[arg(long, value_name = "N")]
    pub fail_if_new: Option<usize>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Run this stage and every later one even if unchanged: ingest, features, influence, cluster,
    /// score, quarantine or report.
    #[arg(long, value_name = "STAGE")]
    pub from: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunDirArgs {
    /// The scan's output directory (its --out).
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The scan's output directory (its --out).
    pub dir: PathBuf,
    #[arg(long, value_enum)]
    pub format: crate::quarantine::review::ExportFormat,
    /// File to write. Default: DIR/quarantine.csv, .jsonl or .export.parquet.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// The scan's output directory (its --out).
    pub dir: PathBuf,
    /// Ids to release, one per line (blank lines and # comments skipped).
    #[arg(long, value_name = "FILE")]
    pub ids: PathBuf,
    /// Why they are released (recorded in the audit log and in scores.parquet).
    #[arg(long)]
    pub reason: String,
    /// Who releases them. Default: $USER.
    #[arg(long)]
    pub by: Option<String>,
}

#[derive(Debug, Args)]
pub struct AckArgs {
    /// The scan's output directory (its --out).
    pub dir: PathBuf,
    /// Why (recorded in the audit log).
    #[arg(long)]
    pub reason: String,
    /// Who acknowledges. Default: $USER.
    #[arg(long)]
    pub by: Option<String>,
}

#[derive(Debug, Args)]
pub struct PipelineArgs {
    /// The pipeline file (TOML), e.g. pipelines/nightly-scan.toml.
    pub pipeline: PathBuf,
    /// Override a key: `--set decision.max-quarantine-fraction=0.05` (value in TOML syntax; a bare
    /// word is a string). Repeatable.
    #[arg(long, value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// A Parquet file or a directory of them (all with one schema). Repeatable.
    #[arg(short, long = "input", required = true, value_name = "PATH")]
    pub inputs: Vec<PathBuf>,
    /// Output directory (created if missing). Previous outputs are replaced only when the run succeeds.
    #[arg(short, long, value_name = "DIR")]
    pub out: PathBuf,
    /// Id column (integer or string, plain or dictionary-encoded; unique). Default: `id` if present,
    /// else keys are `name#row` (the file's path below its --input folder).
    #[arg(long, value_name = "NAME")]
    pub id_col: Option<String>,
    /// Label column (integer, boolean, string or dictionary-encoded string).
    #[arg(long, value_name = "NAME", default_value = "label")]
    pub label_col: String,
    /// Vector column (List/LargeList/FixedSizeList of f16/f32/f64). Default: `activations`,
    /// `embedding` or `embeddings`, else the only float-vector column (never `probs`).
    #[arg(long, value_name = "NAME", conflicts_with = "feature_cols")]
    pub activations_col: Option<String>,
    /// Use these numeric columns (comma-separated, standardized) instead of a vector column.
    #[arg(long, value_name = "A,B,C", value_delimiter = ',')]
    pub feature_cols: Option<Vec<String>>,
    /// The model's predicted class probabilities (float vector, one per class in sorted label
    /// order). Default: `probs` if present. Used to rank only: they are usually in-sample.
    #[arg(long, value_name = "NAME")]
    pub probs_col: Option<String>,
    /// Column naming who supplied each record (vendor, contributor, batch), for the reports'
    /// per-source table: strings, integers, booleans or dates. Default: `source` if present
    /// and of such a type.
    #[arg(long, value_name = "NAME")]
    pub source_col: Option<String>,
    /// Per-record training loss: one float, or a list of per-epoch losses. Records learned
    /// unusually fast or slow within their class look suspicious.
    #[arg(long, value_name = "NAME")]
    pub loss_col: Option<String>,
    /// A small verified-clean Parquet set with the same columns: records whose up-weighting
    /// would raise the loss on it are scored harmful (influence functions). Repeatable. Read
    /// only when the surrogate model runs (rows x classes under `[detect.influence]
    /// max-probability-values`, 2e8).
    #[arg(long, value_name = "PATH")]
    pub trusted: Vec<PathBuf>,
    /// Skip the influence stage (surrogate model, confident learning, self-influence,
    /// neighbours, near-copies): only the clustering detectors run.
    #[arg(long)]
    pub no_influence: bool,
    /// Folds for the surrogate model's out-of-fold probabilities.
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    /// Two classes overlap when each one's label, where the surrogate is confident of the other
    /// class, is more common than RATIO times its share of the data (both ways), and the
    /// surrogate confidently mistakes each for the other at least once; records of one that look
    /// like the other are then not called label issues, since the features cannot tell them
    /// apart. Larger values set fewer pairs aside; `inf` none (cleanlab's rule).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.2, value_name = "RATIO")]
    pub label_overlap: f64,
    /// PCA dimensions per class before clustering and robust scoring.
    #[arg(long, default_value_t = 10)]
    pub nb_dims: usize,
    /// Turn off the SPECTRE-style robust detector (on by default; it drives most decisions).
    #[arg(long)]
    pub no_spectre: bool,
    /// Turn off the shared-shift detector (on by default): a handful of a dense class's records
    /// moved together along a direction the rest of the class does not vary along (a 1% backdoor).
    /// A natural rare mode of 3+ records (4+ in classes of 5+ records per dimension) would look the
    /// same; turn it off where classes hold them.
    #[arg(long)]
    pub no_shared_shift: bool,
    /// Turn off activation clustering's distance analysis (on by default): the class signal that
    /// a class's cluster sits closer to another class, which assumes poison made of other
    /// classes' inputs.
    #[arg(long)]
    pub no_distance_analysis: bool,
    /// The distance analysis's cluster counts only while it holds less than this share of the
    /// records it split (a class's non-zero records that are not short). Raise it (up to 0.5,
    /// which turns the bound off) where a class may be more than about a sixth poisoned or many
    /// of its vectors are zero; clean sub-populations of that size then count too.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.2, value_name = "SHARE")]
    pub distance_max_cluster_share: f64,
    /// Seed for every randomized step; same input and seed give the same outputs.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Never quarantine more than this share of all rows.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.2, value_name = "FRACTION")]
    pub max_quarantine_fraction: f64,
    /// Poison share you expect, if known: caps the quarantine at twice it plus 1% of all rows.
    /// Not needed.
    #[arg(long, allow_negative_numbers = true, value_name = "FRACTION")]
    pub expected_poison_rate: Option<f64>,
    /// Robust z-score among classes that marks a class attacked. Higher = quieter.
    #[arg(long, allow_negative_numbers = true, default_value_t = 3.5)]
    pub anomaly_threshold: f64,
    /// Sigmas of SPECTRE score that quarantine a record inside an attacked class.
    #[arg(long, allow_negative_numbers = true, default_value_t = 2.0)]
    pub record_threshold: f64,
    /// Classes with fewer rows are not analysed (rows kept in clean; the report says so).
    #[arg(long, default_value_t = pipeline::DEFAULT_MIN_CLASS_ROWS)]
    pub min_class_rows: usize,
    /// Exit 3 when more than N rows are quarantined (outputs are still written).
    #[arg(long, value_name = "N")]
    pub fail_if_quarantined: Option<u64>,
    /// Nightly mode: score only records new or changed since the reference the last scan saved
    /// in --out (against its fits, with the same decision), and diff against that scan
    /// (diff.json). Without a reference there yet, a full scan (which saves one).
    #[arg(long, conflicts_with = "since_reference")]
    pub incremental: bool,
    /// Like --incremental, with the reference taken from PATH (a scan's --out, its reference/
    /// directory or one generation of it); an error when PATH holds none.
    #[arg(long, value_name = "PATH")]
    pub since_reference: Option<PathBuf>,
    /// Do not save a reference (OUT/reference/) for later incremental scans.
    #[arg(long, conflicts_with_all = ["incremental", "since_reference"])]
    pub no_reference: bool,
    /// Incremental scans fit afresh once more than this share of the rows is new or changed
    /// since the reference's fit.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.2, value_name = "FRACTION")]
    pub max_new_fraction: f64,
    /// Incremental scans fit afresh when a class's new records sit more than this many class
    /// radii from its fitted mean (or spread 1 + this times more or less).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.5, value_name = "RADII")]
    pub max_drift: f64,
    /// Exit 3 when more than N records are newly quarantined since the reference (all
    /// quarantined records count as new when there is none). A rerun on the reference's own
    /// records (a retried job) reports what the reference's scan reported, and fails again.
    #[arg(long, value_name = "N")]
    pub fail_if_new: Option<usize>,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum SampleAttack {
    Backdoor,
    LabelFlip,
    NearCopies,
}

#[derive(Debug, Args)]
pub struct SampleArgs {
    /// Parquet file to write.
    #[arg(short, long, value_name = "FILE")]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value_t = Kind::Relu)]
    pub kind: Kind,
    #[arg(long, default_value_t = 10)]
    pub classes: usize,
    #[arg(long, default_value_t = 300)]
    pub rows_per_class: usize,
    #[arg(long, default_value_t = 64)]
    pub dim: usize,
    /// What to plant: a backdoor cluster, random label flips, or groups of near-copies.
    #[arg(long, value_enum, default_value_t = SampleAttack::Backdoor)]
    pub attack: SampleAttack,
    /// Class that receives the backdoor or the near-copies.
    #[arg(long, default_value_t = 3)]
    pub target: usize,
    /// Backdoor: share of the target class that is poisoned; label flips: share of all rows
    /// (0 for a clean dataset).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.08)]
    pub poison_rate: f64,
    /// Trigger strength (larger = better separated poison).
    #[arg(long, allow_negative_numbers = true, default_value_t = 3.0)]
    pub strength: f64,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Rows per Parquet row group.
    #[arg(long, default_value_t = 1000)]
    pub row_group_rows: usize,
    /// Split off NEW_SHARE of the rows (evenly spaced, poison included in proportion) into this
    /// second file: yesterday's data in --out, tonight's addition here, for trying incremental
    /// scans (`datavet scan --incremental`).
    #[arg(long, value_name = "FILE", requires = "new_share")]
    pub new_out: Option<PathBuf>,
    #[arg(long, allow_negative_numbers = true, value_name = "FRACTION", requires = "new_out")]
    pub new_share: Option<f64>,
}

impl SampleArgs {
    /// Every size at least 1, the target one of the classes, the rates shares: `sample` made a
    /// panic of a zero size and silently clamped or spilled the others.
    fn check(&self) -> Result<(), ParamError> {
        let share = |key: &'static str, v: f64, rule: &'static str, ok: bool| {
            if ok { Ok(()) } else { Err(ParamError::new(key, rule, v)) }
        };
        for (key, value) in [
            ("--classes", self.classes),
            ("--rows-per-class", self.rows_per_class),
            ("--dim", self.dim),
            ("--row-group-rows", self.row_group_rows),
        ] {
            if value == 0 {
                return Err(ParamError::new(key, "must be at least 1", value));
            }
        }
        if self.poison_rate > 0.0 && self.classes < 2 {
            return Err(ParamError::new(
                "--classes",
                "must be at least 2 to plant poison (it comes from, or is flipped to, another class)",
                self.classes,
            ));
        }
        let targeted = self.poison_rate > 0.0 && !matches!(self.attack, SampleAttack::LabelFlip);
        if targeted && self.target >= self.classes {
            return Err(ParamError::new(
                "--target",
                "must be one of the classes (0 to --classes - 1)",
                self.target,
            ));
        }
        share(
            "--poison-rate",
            self.poison_rate,
            "must be a share between 0 and 1",
            (0.0..=1.0).contains(&self.poison_rate),
        )?;
        share(
            "--strength",
            self.strength,
            "must be between -1e6 and 1e6",
            self.strength.abs() <= 1e6,
        )?;
        if let Some(new_share) = self.new_share {
            share(
                "--new-share",
                new_share,
                "must be a share between 0 and 1, both excluded",
                new_share > 0.0 && new_share < 1.0,
            )?;
        }
        if self.new_out.as_ref() == Some(&self.out) {
            return Err(ParamError::new(
                "--new-out",
                "must differ from --out",
                self.out.display(),
            ));
        }
        Ok(())
    }
}

impl ScanArgs {
    /// The scan these flags describe.
    pub fn to_config(&self) -> ScanConfig {
        let mut c = ScanConfig::new(self.inputs.clone(), self.out.clone());
        c.read.id_col = self.id_col.clone();
        c.read.label_col = self.label_col.clone();
        c.read.activations_col = self.activations_col.clone();
        c.read.feature_cols = self.feature_cols.clone();
        c.read.probs_col = self.probs_col.clone();
        c.read.loss_col = self.loss_col.clone();
        c.read.source_col = self.source_col.clone();
        c.trusted = self.trusted.clone();
        c.detectors.influence.enabled = !self.no_influence;
        c.detectors.influence.folds = self.folds;
        c.detectors.influence.label_overlap = self.label_overlap;
        c.detectors.activation_clustering.nb_dims = self.nb_dims;
        c.detectors.spectre.enabled = !self.no_spectre;
        c.detectors.shared_shift.enabled = !self.no_shared_shift;
        c.detectors.activation_clustering.distance_analysis = !self.no_distance_analysis;
        c.detectors.activation_clustering.distance_max_cluster_share = self.distance_max_cluster_share;
        c.decision.max_quarantine_fraction = self.max_quarantine_fraction;
        c.decision.expected_poison_rate = self.expected_poison_rate;
        c.decision.anomaly_threshold = self.anomaly_threshold;
        c.decision.record_threshold = self.record_threshold;
        c.seed = self.seed;
        c.min_class_rows = self.min_class_rows;
        c.reference.save = !self.no_reference;
        c.reference.since = match (&self.since_reference, self.incremental) {
            (Some(p), _) => Some(p.clone()),
            (None, true) => Some(self.out.clone()),
            (None, false) => None,
        };
        c.reference.required = self.since_reference.is_some();
        c.reference.refit.max_new_fraction = self.max_new_fraction;
        c.reference.refit.max_drift = self.max_drift;
        c
    }
}

/// Sets up `log` on stderr from -v/-q (RUST_LOG wins when set).
pub fn init_logging(cli: &Cli) {
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        _ => "debug",
    };
    let mut builder = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level));
    builder.format_target(false);
    if cli.log_format == LogFormat::Json {
        builder.format(|buf, record| {
            use std::io::Write;
            let line = serde_json::json!({
                "ts": jiff::Timestamp::now().to_string(),
                "level": record.level().as_str(),
                "msg": record.args().to_string(),
            });
            writeln!(buf, "{line}")
        });
    }
    let _ = builder.try_init();
}

/// The fatal error on stderr: `datavet: error: ...`, or with `--log-format json` one JSON log
/// line of level ERROR, so a scheduler parsing the log sees why the run stopped.
pub fn print_error(message: &str, json: bool) {
    if json {
        let line = serde_json::json!({
            "ts": jiff::Timestamp::now().to_string(),
            "level": "ERROR",
            "msg": message,
        });
        eprintln!("{line}");
    } else {
        eprintln!("datavet: error: {message}");
    }
}

/// Progress bars on stderr, one per long stage; hidden when stderr is not a terminal or with -q,
/// so logs of scheduled runs stay clean.
struct Bars {
    bar: Mutex<Option<ProgressBar>>,
    visible: bool,
}

impl Bars {
    fn new(quiet: bool) -> Bars {
        Bars {
            bar: Mutex::new(None),
            visible: !quiet && std::io::stderr().is_terminal(),
        }
    }
}

impl Progress for Bars {
    fn start(&self, stage: &'static str, total_rows: u64) {
        if !self.visible {
            return;
        }
        let bar = ProgressBar::new(total_rows).with_prefix(stage);
        bar.set_style(
            ProgressStyle::with_template("{prefix:>7} [{bar:30}] {human_pos}/{human_len} rows (eta {eta})")
                .expect("valid template")
                .progress_chars("=> "),
        );
        *self.bar.lock().expect("progress lock") = Some(bar);
    }
    fn advance(&self, rows: u64) {
        if let Some(bar) = self.bar.lock().expect("progress lock").as_ref() {
            bar.inc(rows);
        }
    }
    fn finish(&self) {
        if let Some(bar) = self.bar.lock().expect("progress lock").take() {
            bar.finish_and_clear();
        }
    }
}

/// The limits a finished scan is gated on (exit 3 above either).
#[derive(Clone, Copy, Debug, Default)]
pub struct Gates {
    pub fail_if_quarantined: Option<u64>,
    pub fail_if_new: Option<usize>,
}

/// Runs one scan, prints its summary and warnings, and turns the gates into a status.
fn scan(config: &ScanConfig, gates: Gates, quiet: bool) -> crate::Result<ExitStatus> {
    let outcome = pipeline::run_scan(config, &Bars::new(quiet))?;
    for w in &outcome.report.warnings {
        log::warn!("{w}");
    }
    if !quiet {
        println!("{}", outcome.summary_line());
    }
    let newly = outcome
        .diff
        .as_ref()
        .map_or(outcome.quarantined as usize, |d| d.newly_quarantined.len());
    Ok(gate(outcome.quarantined, newly, gates))
}

/// The --by of a review command: given, else $USER (when not empty), else "unknown".
fn reviewer(by: Option<String>) -> String {
    by.or_else(|| std::env::var("USER").ok().filter(|u| !u.trim().is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

/// `--fail-if-quarantined` and `--fail-if-new`: exit 3 above either limit.
fn gate(quarantined: u64, newly_quarantined: usize, gates: Gates) -> ExitStatus {
    let mut status = ExitStatus::Success;
    if let Some(limit) = gates.fail_if_quarantined.filter(|&l| quarantined > l) {
        log::error!("quarantined {quarantined} rows, more than the limit of {limit}");
        status = ExitStatus::QuarantineOverLimit;
    }
    if let Some(limit) = gates.fail_if_new.filter(|&l| newly_quarantined > l) {
        log::error!("{newly_quarantined} records newly quarantined, more than the limit of {limit}");
        status = ExitStatus::QuarantineOverLimit;
    }
    status
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> crate::Result<ExitStatus> {
    match cli.command {
        Command::Scan(args) => {
            let gates = Gates {
                fail_if_quarantined: args.fail_if_quarantined,
                fail_if_new: args.fail_if_new,
            };
            scan(&args.to_config(), gates, cli.quiet)
        }
        Command::Run(args) => {
            let p = config::load(&args.pipeline.pipeline, &args.pipeline.set)?;
            let outcome = crate::stages::run_staged(&p.scan, args.from.as_deref(), &Bars::new(cli.quiet))?;
            for dir in crate::stages::prune_runs(&p.scan.out_dir, p.keep_runs)? {
                log::info!("deleted old run directory {}", dir.display());
            }
            for w in &outcome.warnings {
                log::warn!("{w}");
            }
            if !cli.quiet {
                println!("{}", outcome.summary);
            }
            let gates = Gates {
                fail_if_quarantined: p.fail_if_quarantined,
                fail_if_new: p.fail_if_new,
            };
            Ok(gate(outcome.quarantined, outcome.newly_quarantined, gates))
        }
        Command::Check(args) => {
            let p = config::load(&args.pipeline, &args.set)?;
            if !cli.quiet {
                println!(
                    "{}: ok ({}); scans {} input path(s) into {}",
                    args.pipeline.display(),
                    if p.description.is_empty() {
                        "no description"
                    } else {
                        &p.description
                    },
                    p.scan.inputs.len(),
                    p.scan.out_dir.display()
                );
            }
            Ok(ExitStatus::Success)
        }
        Command::Report(a) => {
            crate::io::settle_output_dir(&a.dir)?;
            crate::report::write_human_reports(&a.dir)?;
            if !cli.quiet {
                println!(
                    "wrote {} and {}",
                    a.dir.join(crate::report::HTML_FILE).display(),
                    a.dir.join(crate::report::MARKDOWN_FILE).display()
                );
            }
            Ok(ExitStatus::Success)
        }
        Command::Export(a) => {
            let out = a
                .out
                .unwrap_or_else(|| a.dir.join(format!("quarantine.{}", a.format.extension())));
            let rows = crate::quarantine::review::export(&a.dir, a.format, &out)?;
            if !cli.quiet {
                println!("wrote {} ({rows} quarantined rows)", out.display());
            }
            Ok(ExitStatus::Success)
        }
        Command::Ack(a) => {
            let generation = crate::quarantine::review::acknowledge(&a.dir, &a.reason, &reviewer(a.by))?;
            if !cli.quiet {
                println!(
                    "acknowledged the alert of reference generation {generation}: reruns on its records \
                     now diff against it; logged in {}",
                    a.dir.join(crate::quarantine::review::AUDIT_FILE).display()
                );
            }
            Ok(ExitStatus::Success)
        }
        Command::Release(a) => {
            let ids = crate::quarantine::review::read_id_list(&a.ids)?;
            let by = reviewer(a.by);
            let r = crate::quarantine::review::release(&a.dir, &a.ids, &ids, &a.reason, &by)?;
            if !cli.quiet {
                println!(
                    "released {} rows to clean ({} clean, {} quarantined); logged in {}; {} kept in clean by later scans while unchanged",
                    r.released,
                    r.clean_rows,
                    r.quarantine_rows,
                    a.dir.join(crate::quarantine::review::AUDIT_FILE).display(),
                    r.remembered
                );
            }
            Ok(ExitStatus::Success)
        }
        Command::Diff(a) => {
            crate::io::settle_output_dir(&a.previous)?;
            crate::io::settle_output_dir(&a.current)?;
            let previous = crate::report::view::RunView::load_verdicts(&a.previous)?;
            let current = crate::report::view::RunView::load_verdicts(&a.current)?;
            let d = crate::report::diff::diff(&previous, &current);
            crate::report::diff::write(&d, &a.current)?;
            if !cli.quiet {
                println!("{}", d.summary_line());
            }
            let gates = Gates {
                fail_if_quarantined: None,
                fail_if_new: a.fail_if_new,
            };
            Ok(gate(0, d.newly_quarantined.len(), gates))
        }
        Command::Sample(a) => {
            a.check()?;
            let target = a.target.min(a.classes - 1); // checked where it is used
            let attack = match a.attack {
                _ if a.poison_rate <= 0.0 => Attack::None,
                SampleAttack::Backdoor => Attack::Backdoor {
                    target,
                    rate: a.poison_rate,
                    strength: a.strength,
                },
                SampleAttack::LabelFlip => Attack::LabelFlip { rate: a.poison_rate },
                // Groups of 10 copies, as many as make up the poison rate of the target class.
                SampleAttack::NearCopies => Attack::NearCopies {
                    target,
                    groups: ((a.poison_rate * a.rows_per_class as f64 / 10.0).round() as usize).max(1),
                    copies: 10,
                },
            };
            let spec = Spec {
                kind: a.kind,
                classes: a.classes,
                rows_per_class: a.rows_per_class,
                dim: a.dim,
                attack,
                seed: a.seed,
            };
            let data = testkit::generate(&spec);
            for path in std::iter::once(&a.out).chain(&a.new_out) {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|source| crate::io::OutputError::Io {
                        path: dir.to_path_buf(),
                        source,
                    })?;
                }
            }
            let new = match (&a.new_out, a.new_share) {
                (Some(new_out), Some(share)) => {
                    let new = data.new_rows(share);
                    data.write_split(&new, &a.out, new_out, a.row_group_rows)?;
                    new
                }
                _ => {
                    data.write_parquet(&a.out, a.row_group_rows.max(1))?;
                    vec![false; data.ids.len()]
                }
            };
            if !cli.quiet {
                let count = |want: bool| {
                    let rows = new.iter().filter(|&&n| n == want).count();
                    let poisoned = (0..new.len()).filter(|&i| new[i] == want && data.poisoned[i]).count();
                    (rows, poisoned)
                };
                let (rows, poisoned) = count(false);
                print!(
                    "wrote {} ({rows} rows x {} dims, {poisoned} poisoned",
                    a.out.display(),
                    a.dim
                );
                if let Some(new_out) = &a.new_out {
                    let (rows, poisoned) = count(true);
                    print!(") and {} ({rows} rows, {poisoned} poisoned", new_out.display());
                }
                println!("): {attack:?}");
            }
            Ok(ExitStatus::Success)
        }
    }
}
