//! End-to-end tests of the `datavet` binary: one test binary, a module per concern.
//!
//! Real-writer fixtures are read in place from `../shared/formats/`; tests that need them print a
//! note and pass when that folder is absent (it is beside the project root in CI).

mod bad_inputs;
mod incremental;
mod influence;
mod pipelines;
mod review;
mod scan;
mod stages;

use std::path::{Path, PathBuf};

use assert_cmd::Command;

/// A temp dir for outputs plus the path to the shared fixtures.
pub struct Fixture {
    dir: tempfile::TempDir,
}

impl Default for Fixture {
    fn default() -> Self {
        Fixture::new()
    }
}

impl Fixture {
    pub fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }
    pub fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    /// Path to a file in ../shared/formats, or `None` (with a note) when the folder is absent.
    pub fn format(name: &str) -> Option<PathBuf> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/formats");
        if !dir.is_dir() {
            eprintln!("note: ../shared/formats not found; skipping a fixture test");
            return None;
        }
        Some(dir.join(name))
    }
    /// `datavet scan --out OUT --input INPUT ARGS...`
    pub fn scan(&self, input: &Path, args: &[&str]) -> assert_cmd::assert::Assert {
        datavet()
            .arg("scan")
            .arg("--out")
            .arg(self.out())
            .arg("--input")
            .arg(input)
            .args(args)
            .assert()
    }
}

/// Every row of a Parquet file as one batch.
pub fn read_all(path: &Path) -> arrow_array::RecordBatch {
    let builder =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap())
            .unwrap();
    let schema = builder.schema().clone();
    let batches: Vec<arrow_array::RecordBatch> = builder.build().unwrap().map(|b| b.unwrap()).collect();
    arrow_select::concat::concat_batches(&schema, &batches).unwrap()
}

/// Writes one Arrow batch as a Parquet file.
pub fn write_batch(path: &Path, batch: &arrow_array::RecordBatch) {
    let mut sink = datavet::io::ParquetSink::create(path, batch.schema(), &["embedding"]).unwrap();
    sink.write(batch).unwrap();
    sink.commit().unwrap();
}

pub fn datavet() -> Command {
    Command::new(assert_cmd::cargo::cargo_bin!("datavet"))
}

/// `datavet check PIPELINE` exits 2 with every one of `messages` in stderr.
pub fn check_refuses(pipeline: &Path, messages: &[&str]) {
    let mut refused = datavet().arg("check").arg(pipeline).assert().code(2);
    for m in messages {
        refused = refused.stderr(predicates::str::contains(*m));
    }
}
