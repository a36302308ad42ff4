//! `datavet run` and `datavet check` on pipeline files, including every file in pipelines/.

use predicates::str::contains;

use super::{Fixture, datavet};

fn shipped() -> Vec<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

#[test]
fn every_shipped_pipeline_checks_and_runs_on_the_sample_data() {
    let files = shipped();
    assert!(files.len() >= 2, "pipelines/ ships nightly-scan and pretrain-vetting");
    for file in files {
        datavet()
            .arg("check")
            .arg(&file)
            .assert()
            .success()
            .stdout(contains(": ok"));
        let fx = Fixture::new();
        let out = format!("output.dir={}", fx.out().display());
        // Exit 0 or 3 (a gate tripping on the planted poison is the pipeline working).
        let status = datavet()
            .arg("run")
            .arg(&file)
            .args(["--set", &out])
            .assert()
            .get_output()
            .status
            .code();
        assert!(
            matches!(status, Some(0) | Some(3)),
            "{}: exit {status:?}",
            file.display()
        );
        assert!(fx.out().join("clean.parquet").exists(), "{}", file.display());
    }
}

#[test]
fn the_nightly_gate_exits_3_on_the_planted_poison() {
    let fx = Fixture::new();
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/nightly-scan.toml");
    datavet()
        .arg("run")
        .arg(&file)
        .args(["--set", &format!("output.dir={}", fx.out().display())])
        .assert()
        .code(3)
        .stdout(contains("attacked classes: 3"));
    // The same records again (the scheduler's retry, or a night without new data): the same
    // alert, scored from the reference; a retry does not clear it.
    datavet()
        .arg("run")
        .arg(&file)
        .args(["--set", &format!("output.dir={}", fx.out().display())])
        .assert()
        .code(3)
        .stdout(contains("0 new, 0 changed, 0 gone, 0 scored (fit reused)"))
        .stdout(contains("every quarantined record counts as new"));
}

#[test]
fn a_bad_pipeline_names_file_line_and_key_and_exits_2() {
    let fx = Fixture::new();
    let file = fx.path("bad.toml");
    std::fs::write(
        &file,
        "[input]\npaths = [\"x.parquet\"]\n[output]\ndir = \"o\"\n[detect.spectral]\ntop-kk = 3\n",
    )
    .unwrap();
    super::check_refuses(&file, &["bad.toml", "line 6", "top-kk"]);
    std::fs::write(&file, "[input]\npaths = [\"x.parquet\"]\n[output]\ndir = \"o\"\n").unwrap();
    datavet()
        .arg("run")
        .arg(&file)
        .assert()
        .code(2)
        .stderr(contains("bad.toml:2: [input] `paths`: x.parquet not found"));
    // Values no run can mean, all named at once: keep-runs = 0 (silently kept one) and an empty
    // output path (wrote into the pipeline's own folder).
    std::fs::write(
        &file,
        "[input]\npaths = [\"bad.toml\"]\n[output]\ndir = \"\"\nkeep-runs = 0\n",
    )
    .unwrap();
    super::check_refuses(
        &file,
        &[
            "bad.toml:5: [output] `keep-runs` must be at least 1",
            "bad.toml:4: [output] `dir` holds an empty path",
        ],
    );
}
