//! Staged runs: stage results and manifests under OUT/runs/<run-id>/, reuse of unchanged stages,
//! --from, and a run killed in the middle of a stage that resumes to the same outputs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use datavet::testkit::{self, Attack, Kind, Spec};
use predicates::str::contains;

use super::{Fixture, datavet};

/// A pipeline file over generated data (backdoor in class 2) writing to `out`.
fn pipeline(fx: &Fixture, out: &Path) -> PathBuf {
    let data = fx.path("data.parquet");
    if !data.exists() {
        testkit::generate(&Spec {
            kind: Kind::Gaussian,
            classes: 5,
            rows_per_class: 300,
            dim: 32,
            attack: Attack::Backdoor {
                target: 2,
                rate: 0.08,
                strength: 4.0,
            },
            seed: 61,
        })
        .write_parquet(&data, 500)
        .unwrap();
    }
    let file = fx.path(&format!("{}.toml", out.file_name().unwrap().to_str().unwrap()));
    std::fs::write(
        &file,
        format!(
            "[input]\npaths = [\"data.parquet\"]\n[output]\ndir = \"{}\"\n",
            out.display()
        ),
    )
    .unwrap();
    file
}

fn run(file: &Path, args: &[&str]) -> serde_json::Value {
    let out = datavet().arg("run").arg(file).args(args).assert().success();
    let line = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(line.contains("stages: ingest"), "{line}");
    let dir = std::fs::read_to_string(file).unwrap();
    let out_dir = dir
        .lines()
        .find_map(|l| l.strip_prefix("dir = \""))
        .unwrap()
        .trim_end_matches('"');
    serde_json::from_slice(&std::fs::read(Path::new(out_dir).join("report.json")).unwrap()).unwrap()
}

fn statuses(report: &serde_json::Value) -> Vec<String> {
    report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| format!("{} {}", s["stage"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect()
}

#[test]
fn a_rerun_reuses_what_is_unchanged_and_reruns_what_a_setting_changes() {
    let fx = Fixture::new();
    let file = pipeline(&fx, &fx.out());
    let first = run(&file, &[]);
    assert!(
        statuses(&first).iter().all(|s| s.ends_with(" ran")),
        "{:?}",
        statuses(&first)
    );
    let run_dir = PathBuf::from(first["run_directory"].as_str().unwrap());
    for stage in datavet::stages::STAGES {
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(run_dir.join(stage).join("manifest.json")).unwrap()).unwrap();
        assert_eq!(m["stage"], stage);
        assert_eq!(m["inputs"][0]["rows"], 1500, "manifests carry the input fingerprints");
        assert!(m["key"].as_str().unwrap().len() == 64 && m["finished_at"].is_string());
    }
    let second = run(&file, &[]);
    assert_eq!(
        statuses(&second),
        [
            "ingest reused",
            "features reused",
            "influence reused",
            "cluster reused",
            "score reused",
            "quarantine reused",
            "report ran"
        ]
    );
    let changed = run(&file, &["--set", "decision.anomaly-threshold=6.0"]);
    assert_eq!(
        statuses(&changed),
        [
            "ingest reused",
            "features reused",
            "influence reused",
            "cluster reused",
            "score ran",
            "quarantine ran",
            "report ran"
        ]
    );
    // A detector's setting re-runs the cluster stage on, the class bases and the influence stage
    // are reused.
    let detector = run(
        &file,
        &[
            "--set",
            "decision.anomaly-threshold=6.0",
            "--set",
            "detect.spectre.alpha=3.0",
        ],
    );
    assert_eq!(
        statuses(&detector)[..4],
        ["ingest reused", "features reused", "influence reused", "cluster ran"]
    );
    let forced = run(
        &file,
        &["--set", "decision.anomaly-threshold=6.0", "--from", "influence"],
    );
    assert_eq!(
        statuses(&forced),
        [
            "ingest reused",
            "features reused",
            "influence ran",
            "cluster ran",
            "score ran",
            "quarantine ran",
            "report ran"
        ]
    );
    // Published files edited behind the run's back are published again.
    std::fs::remove_file(fx.out().join("clean.parquet")).unwrap();
    let repaired = run(&file, &["--set", "decision.anomaly-threshold=6.0"]);
    assert!(statuses(&repaired).contains(&"quarantine ran".to_string()));
    assert!(fx.out().join("clean.parquet").exists());
    // The number of basis dimensions re-runs the class bases and everything after them.
    let dims = run(
        &file,
        &[
            "--set",
            "decision.anomaly-threshold=6.0",
            "--set",
            "detect.activation-clustering.nb-dims=8",
        ],
    );
    assert_eq!(statuses(&dims)[..2], ["ingest reused", "features ran"]);
    datavet()
        .arg("run")
        .arg(&file)
        .args(["--from", "clustering"])
        .assert()
        .code(2)
        .stderr(contains("--from clustering: no such stage"));
}

#[test]
fn a_run_killed_mid_stage_resumes_to_the_outputs_of_an_uninterrupted_run() {
    let fx = Fixture::new();
    let whole = fx.path("whole");
    run(&pipeline(&fx, &whole), &[]);

    let killed = fx.path("killed");
    let file = pipeline(&fx, &killed);
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin!("datavet"))
        .arg("run")
        .arg(&file)
        .env(datavet::stages::HANG_IN_STAGE, "cluster")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the run is inside the cluster stage, then kill it there.
    let started = Instant::now();
    let inside = || {
        std::fs::read_dir(killed.join("runs"))
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
            .is_some_and(|e| e.path().join("influence/manifest.json").exists() && e.path().join("cluster").is_dir())
    };
    while !inside() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the run reached the cluster stage"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !killed.join("clean.parquet").exists(),
        "nothing published by the killed run"
    );

    let resumed = run(&file, &[]);
    assert_eq!(
        statuses(&resumed),
        [
            "ingest reused",
            "features reused",
            "influence reused",
            "cluster ran",
            "score ran",
            "quarantine ran",
            "report ran"
        ]
    );
    for f in ["clean.parquet", "quarantine.parquet", "scores.parquet"] {
        assert!(
            std::fs::read(whole.join(f)).unwrap() == std::fs::read(killed.join(f)).unwrap(),
            "{f} equals the uninterrupted run's"
        );
    }
    let report = |dir: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap()
    };
    for key in ["totals", "classes", "conservation", "influence"] {
        let (a, b) = (report(&whole)[key].clone(), report(&killed)[key].clone());
        if key == "influence" {
            assert_eq!(a["confident_joint"], b["confident_joint"]);
        } else {
            assert_eq!(a, b, "report `{key}`");
        }
    }
}

#[test]
fn only_the_newest_run_directories_are_kept() {
    let fx = Fixture::new();
    let out = fx.out();
    let file = pipeline(&fx, &out);
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("[output]\n", "[output]\nkeep-runs = 2\n");
    std::fs::write(&file, text).unwrap();
    // Three input states (the data file grows), three run ids.
    let data = fx.path("data.parquet");
    for seed in [71, 72, 73] {
        testkit::generate(&Spec {
            kind: Kind::Gaussian,
            classes: 3,
            rows_per_class: 100 + seed as usize,
            dim: 8,
            attack: Attack::None,
            seed,
        })
        .write_parquet(&data, 500)
        .unwrap();
        run(&file, &[]);
        std::thread::sleep(Duration::from_millis(20));
    }
    let left: Vec<_> = std::fs::read_dir(out.join("runs")).unwrap().collect();
    assert_eq!(left.len(), 2, "keep-runs = 2");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert!(
        PathBuf::from(report["run_directory"].as_str().unwrap()).is_dir(),
        "the current run is kept"
    );
}
