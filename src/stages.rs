//! Staged runs (`datavet run PIPELINE`): ingest -> features -> influence -> cluster -> score ->
//! quarantine -> report, each stage writing its result and a manifest under
//! `OUT/runs/<run-id>/<stage>/`.
//!
//! The run id is a hash of the input fingerprints (path, size, Parquet footer hash), so a re-run
//! over the same data finds its run directory. Each stage's key hashes the previous stage's key,
//! the stage's own settings and the tool version; a stage whose manifest is complete and has the
//! same key is skipped and its result loaded. So a changed decision threshold re-runs score,
//! quarantine and report but reuses the influence and cluster stages, and a run killed in the
//! middle resumes from the first stage that had not finished. A manifest is written (atomically)
//! only after its stage's result, so a manifest on disk always describes a complete result.
//!
//! Ingest always reads the data (later stages need it in memory); its manifest records the
//! fingerprints. Quarantine and report are cheap and write the published outputs, so they run
//! whenever anything before them ran or the published files are not the ones recorded.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::detect::BasisFit;
use crate::influence::InfluenceState;
use crate::io::{self, AtomicFile, InputError, OutputError};
use crate::pipeline::{self, ClassAnalysis, ScanConfig};
use crate::progress::Progress;
use crate::score::Decision;

/// The stages in order; `--from` takes one of these names.
pub const STAGES: [&str; 7] = [
    "ingest",
    "features",
    "influence",
    "cluster",
    "score",
    "quarantine",
    "report",
];

/// Environment variable for tests: makes the run hang inside the named stage (after its work,
/// before its result is saved), so a test can kill it mid-stage.
pub const HANG_IN_STAGE: &str = "DATAVET_TEST_HANG_IN_STAGE";

/// One stage's manifest (`<stage>/manifest.json`).
#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub stage: String,
    /// Hash of the previous stage's key, this stage's settings and the tool version.
    pub key: String,
    pub tool_version: String,
    /// This stage's settings as resolved.
    pub config: serde_json::Value,
    pub inputs: Vec<io::FileInfo>,
    pub started_at: String,
    pub finished_at: String,
    pub rows: usize,
    /// Published files this stage wrote, with their SHA-256 (quarantine and report stages).
    #[serde(default)]
    pub outputs: Vec<(String, String)>,
}

/// What happened to each stage in this run, for the report and the CLI.
#[derive(Clone, Debug, Serialize)]
pub struct StageStatus {
    pub stage: &'static str,
    /// "ran" or "reused".
    pub status: &'static str,
    pub seconds: f64,
}

/// Why a staged run could not start.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("--from {0}: no such stage; stages are {stages}", stages = STAGES.join(", "))]
    UnknownStage(String),
    #[error("{path}: unreadable stage result ({message}); delete the run directory or use --from")]
    BadResult { path: PathBuf, message: String },
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn file_sha256(path: &Path) -> Option<String> {
    std::fs::read(path).ok().map(|b| sha256_hex(&b))
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<(), OutputError> {
    AtomicFile::write_json(path, value, false)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, crate::Error> {
    let bytes = std::fs::read(path).map_err(|source| InputError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        StageError::BadResult {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
        .into()
    })
}

/// The run directory of one input state and the bookkeeping of its stages.
struct Run<'a> {
    dir: PathBuf,
    inputs: &'a [io::FileInfo],
    rows: usize,
    /// Stages at or after this index run even when their manifest matches (`--from`).
    forced_from: usize,
    statuses: Vec<StageStatus>,
}

impl Run<'_> {
    fn stage_dir(&self, stage: &str) -> PathBuf {
        self.dir.join(stage)
    }

    /// The key of `stage` given the previous key and the stage's settings.
    fn key(previous: &str, stage: &str, settings: &serde_json::Value) -> String {
        sha256_hex(format!("{previous}\n{stage}\n{settings}\n{}", env!("CARGO_PKG_VERSION")).as_bytes())
    }

    /// The complete manifest of `stage` if it matches `key` and the stage is not forced.
    fn reusable(&self, index: usize, key: &str) -> Option<Manifest> {
        if index >= self.forced_from {
            return None;
        }
        let m: Manifest = read_json(&self.stage_dir(STAGES[index]).join("manifest.json")).ok()?;
        (m.key == key).then_some(m)
    }

    /// Runs `work` for stage `index` unless it can be reused (`load`), then records the manifest.
    fn stage<T>(
        &mut self,
        index: usize,
        key: &str,
        settings: &serde_json::Value,
        load: impl FnOnce(&Path, &Manifest) -> Result<Option<T>, crate::Error>,
        work: impl FnOnce(&Path) -> Result<(T, Vec<(String, String)>), crate::Error>,
    ) -> Result<T, crate::Error> {
        let stage = STAGES[index];
        let dir = self.stage_dir(stage);
        let clock = Instant::now();
        if let Some(m) = self.reusable(index, key)
            && let Some(value) = load(&dir, &m)?
        {
            log::info!("stage {stage}: unchanged since {}, reused", m.finished_at);
            self.statuses.push(StageStatus {
                stage,
                status: "reused",
                seconds: clock.elapsed().as_secs_f64(),
            });
            return Ok(value);
        }
        // Anything after a stage that runs must run too.
        self.forced_from = self.forced_from.min(index + 1);
        std::fs::create_dir_all(&dir).map_err(|source| OutputError::Io {
            path: dir.clone(),
            source,
        })?;
        let _ = std::fs::remove_file(dir.join("manifest.json"));
        let started_at = now();
        log::info!("stage {stage}: running");
        let (value, outputs) = work(&dir)?;
        write_json(
            &dir.join("manifest.json"),
            &Manifest {
                stage: stage.into(),
                key: key.into(),
                tool_version: env!("CARGO_PKG_VERSION").into(),
                config: settings.clone(),
                inputs: self.inputs.to_vec(),
                started_at,
                finished_at: now(),
                rows: self.rows,
                outputs,
            },
        )?;
        self.statuses.push(StageStatus {
            stage,
            status: "ran",
            seconds: clock.elapsed().as_secs_f64(),
        });
        Ok(value)
    }
}

/// Hangs forever when the test hook names `stage` (see [`HANG_IN_STAGE`]).
fn test_hang(stage: &str) {
    if std::env::var(HANG_IN_STAGE).is_ok_and(|s| s == stage) {
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

fn settings(value: impl Serialize) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or_default()
}

/// Runs `config` as a staged run under `config.out_dir/runs/`, reusing every stage whose inputs
/// and settings are unchanged; `from` forces that stage and all after it to run.
pub fn run_staged(
    config: &ScanConfig,
    from: Option<&str>,
    progress: &dyn Progress,
) -> Result<StagedOutcome, crate::Error> {
    let forced_from = match from {
        Some(name) => STAGES
            .iter()
            .position(|s| *s == name)
            .ok_or_else(|| StageError::UnknownStage(name.into()))?,
        None => STAGES.len(),
    };
    config.check()?;
    let _lock = crate::io::lock_output_dir(&config.out_dir)?;
    let clock = Instant::now();
    let reference = pipeline::incremental::open_reference(config)?;
    let pipeline::Ingested {
        mut dataset,
        hashes: content_hashes,
        plan,
        released,
        releases,
    } = pipeline::ingest(config, reference, progress)?;
    let inputs = dataset.files.clone();
    let ingest_settings = settings(&config.read);
    let run_id = sha256_hex(serde_json::to_string(&inputs).unwrap_or_default().as_bytes());
    let mut run = Run {
        dir: config.out_dir.join("runs").join(&run_id[..16]),
        inputs: &inputs,
        rows: dataset.rows(),
        forced_from,
        statuses: Vec::new(),
    };
    let ingest_key = Run::key("", "ingest", &ingest_settings);
    run.stage(
        0,
        &ingest_key,
        &ingest_settings,
        |_, _| Ok(Some(())),
        |_| Ok(((), Vec::new())),
    )?;
    // Ingest always read the data; its time is the read.
    if let Some(s) = run.statuses.last_mut() {
        s.seconds = clock.elapsed().as_secs_f64();
    }

    // An incremental run's stages depend on the fit they score against (same fit, same inputs:
    // same results, whichever generation of the reference holds it).
    let reused = plan.as_ref().filter(|p| p.reuses_fit());
    let fit_id = reused.map(|p| p.reference.header.fit.id.clone());
    let fits = reused.and_then(|p| p.class_fits());
    let features_settings = settings((
        config.detectors.activation_clustering.nb_dims,
        config.min_class_rows,
        &fit_id,
    ));
    let features_key = Run::key(&ingest_key, "features", &features_settings);
    let bases: Vec<Option<BasisFit>> = run.stage(
        1,
        &features_key,
        &features_settings,
        |dir, _| Ok(Some(read_json(&dir.join("result.json"))?)),
        |dir| {
            let result = pipeline::features_stage(&dataset, config, fits, progress);
            test_hang("features");
            write_json(&dir.join("result.json"), &result)?;
            Ok((result, Vec::new()))
        },
    )?;

    let influence_settings = settings((
        &config.detectors.influence,
        config.seed,
        pipeline::trusted_fingerprints(config)?,
        &fit_id,
    ));
    let influence_key = Run::key(&features_key, "influence", &influence_settings);
    let (influence, influence_warning): (Option<InfluenceState>, Option<String>) = run.stage(
        2,
        &influence_key,
        &influence_settings,
        |dir, _| Ok(Some(read_json(&dir.join("result.json"))?)),
        |dir| {
            let result = match reused {
                Some(p) => p.extend_influence(&dataset, config, progress)?,
                None => pipeline::influence_stage(&dataset, config, progress)?,
            };
            test_hang("influence");
            write_json(&dir.join("result.json"), &result)?;
            Ok((result, Vec::new()))
        },
    )?;

    let mut cluster_config = config.detectors.clone();
    cluster_config.influence = Default::default(); // its settings are in the influence key
    let cluster_settings = settings((&cluster_config, config.seed, config.min_class_rows));
    let cluster_key = Run::key(&influence_key, "cluster", &cluster_settings);
    let classes: ClassAnalysis = run.stage(
        3,
        &cluster_key,
        &cluster_settings,
        |dir, _| Ok(Some(read_json(&dir.join("result.json"))?)),
        |dir| {
            let result = pipeline::cluster_stage(&dataset, config, &bases, influence.as_ref(), fits, progress)?;
            test_hang("cluster");
            write_json(&dir.join("result.json"), &result)?;
            Ok((result, Vec::new()))
        },
    )?;

    // Reviewed releases change the decision: they are part of its settings.
    let score_settings = settings((&config.decision, &released));
    let score_key = Run::key(&cluster_key, "score", &score_settings);
    let influence_report = influence.as_ref().map(|s| s.report.clone());
    let summary_of_plan = plan.as_ref().map(|p| p.summary(dataset.rows()));
    // The stage's file is the decision; the rest of the analysis is gathered from the cluster
    // result either way (cheap), once.
    let analysis = run.stage(
        4,
        &score_key,
        &score_settings,
        |dir, _| {
            let decision: Decision = read_json(&dir.join("result.json"))?;
            let mut analysis = pipeline::score_stage(
                &dataset,
                config,
                &classes,
                influence_report.clone(),
                influence_warning.clone(),
                Some(decision),
            );
            analysis.incremental = summary_of_plan.clone();
            Ok(Some(analysis))
        },
        |dir| {
            let mut analysis = pipeline::score_stage(
                &dataset,
                config,
                &classes,
                influence_report.clone(),
                influence_warning.clone(),
                None,
            );
            analysis.decision.keep_in_clean(&released, &dataset.labels);
            analysis.incremental = summary_of_plan.clone();
            test_hang("score");
            write_json(&dir.join("result.json"), &analysis.decision)?;
            Ok((analysis, Vec::new()))
        },
    )?;
    dataset.x = Vec::new();

    // Quarantine publishes clean/quarantine/scores and report.json into OUT; it is reused only
    // when the files it published are still there, unchanged.
    let publish_settings = settings(&config.out_dir);
    let quarantine_key = Run::key(&score_key, "quarantine", &publish_settings);
    let report_path = config.out_dir.join(crate::report::REPORT_FILE);
    let published = |m: &Manifest| {
        report_path.is_file()
            && !m.outputs.is_empty()
            && m.outputs
                .iter()
                .all(|(f, hash)| file_sha256(&config.out_dir.join(f)).as_deref() == Some(hash.as_str()))
    };
    run.stage(
        5,
        &quarantine_key,
        &publish_settings,
        |_, m| Ok(published(m).then_some(())),
        |_| {
            test_hang("quarantine");
            pipeline::publish(&dataset, analysis, config, Vec::new(), progress)?;
            Ok(((), hashes(&config.out_dir, &PUBLISHED)))
        },
    )?;
    // Report: cheap, always runs: records this run's stages in report.json, renders HTML/Markdown.
    let mut statuses = run.statuses.clone();
    statuses.push(StageStatus {
        stage: "report",
        status: "ran",
        seconds: 0.0,
    });
    let run_dir = run.dir.clone();
    let report_key = Run::key(&quarantine_key, "report", &serde_json::Value::Null);
    let report: serde_json::Value = run.stage(
        6,
        &report_key,
        &serde_json::Value::Null,
        |_, _| Ok(None),
        |_| {
            let mut report: serde_json::Value = read_json(&report_path)?;
            report["stages"] = settings(&statuses);
            report["run_directory"] = settings(&run_dir);
            // How tonight's records matched the reference is this run's, also where the
            // quarantine stage was reused from an earlier run on the same input (its report said
            // the earlier run's match).
            report["incremental"] = settings(plan.as_ref().map(|p| p.summary(dataset.rows())));
            AtomicFile::write_json(&report_path, &report, true)?;
            crate::report::write_human_reports(&config.out_dir)?;
            Ok((report, Vec::new()))
        },
    )?;
    // After the report: the diff against the reference the run started from, and the reference
    // for the next run.
    let scanned = pipeline::Scanned {
        dataset: &dataset,
        hashes: content_hashes,
        influence,
        classes: &classes,
        plan: plan.as_ref(),
        releases: &releases,
    };
    let prepared = pipeline::prepare_reference(config, scanned);
    let (diff, saved) = pipeline::finish(config, plan.as_ref(), prepared)?;
    let quarantined = report["totals"]["quarantined"].as_u64().unwrap_or(0);
    let mut summary = format!(
        "datavet: {} rows; quarantined {quarantined}; attacked classes: {}; stages: {}",
        report["totals"]["rows"],
        report["totals"]["attacked_classes"]
            .as_array()
            .filter(|a| !a.is_empty())
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(", "))
            .unwrap_or_else(|| "none".into()),
        run.statuses
            .iter()
            .map(|s| format!("{} {}", s.stage, s.status))
            .collect::<Vec<_>>()
            .join(", ")
    );
    summary.push_str(&pipeline::incremental_summary(summary_of_plan.as_ref(), diff.as_ref()));
    let warnings = report["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w.as_str().map(String::from))
        .collect();
    Ok(StagedOutcome {
        summary,
        warnings,
        quarantined,
        newly_quarantined: diff.map_or(quarantined as usize, |d| d.newly_quarantined.len()),
        reference: saved,
        stages: run.statuses,
    })
}

/// Deletes all but the `keep` most recently finished run directories under `out_dir/runs/`
/// (the current one, just finished, is always the newest). Returns the deleted directories.
pub fn prune_runs(out_dir: &Path, keep: usize) -> Result<Vec<PathBuf>, OutputError> {
    let runs = out_dir.join("runs");
    let Ok(entries) = std::fs::read_dir(&runs) else {
        return Ok(Vec::new());
    };
    // A run's age is its report stage's manifest time (the last thing a run writes).
    let mut dirs: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .map(|p| {
            let finished = std::fs::metadata(p.join("report").join("manifest.json"))
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            (finished, p)
        })
        .collect();
    dirs.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut deleted = Vec::new();
    for (_, dir) in dirs.into_iter().skip(keep.max(1)) {
        std::fs::remove_dir_all(&dir).map_err(|source| OutputError::Io {
            path: dir.clone(),
            source,
        })?;
        deleted.push(dir);
    }
    Ok(deleted)
}

/// The outputs the quarantine stage publishes (checked before it is reused).
const PUBLISHED: [&str; 3] = ["clean.parquet", "quarantine.parquet", "scores.parquet"];

/// What a staged run hands back to the CLI.
pub struct StagedOutcome {
    pub summary: String,
    pub warnings: Vec<String>,
    pub quarantined: u64,
    /// Since the reference the run started from (all quarantined rows when there was none).
    pub newly_quarantined: usize,
    /// The reference this run saved.
    pub reference: Option<PathBuf>,
    pub stages: Vec<StageStatus>,
}

fn hashes(dir: &Path, files: &[&str]) -> Vec<(String, String)> {
    files
        .iter()
        .filter_map(|f| file_sha256(&dir.join(f)).map(|h| (f.to_string(), h)))
        .collect()
}
