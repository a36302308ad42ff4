//! End-to-end scan throughput and peak memory.
//!
//! `cargo bench --bench scan` runs 200k x 256 and 1M x 256 (f32, 10 classes, 5% backdoor in one
//! class); `cargo bench --bench scan -- --quick` runs 50k x 256 (CI). Each size is generated,
//! written to a temp Parquet file, then scanned by the release `datavet` binary in a child
//! process, so the peak RSS reported is the scan's alone. Per-stage times come from report.json.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use datavet::testkit::{Attack, Kind, Spec, generate};

fn peak_rss_children_mib() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    usage.ru_maxrss as f64 / 1024.0 // Linux reports KiB
}

fn bench(rows: usize, dim: usize, dir: &Path) {
    let spec = Spec {
        kind: Kind::Gaussian,
        classes: 10,
        rows_per_class: rows / 10,
        dim,
        attack: Attack::Backdoor {
            target: 3,
            rate: 0.05,
            strength: 3.0,
        },
        seed: 99,
    };
    let input = dir.join(format!("bench_{rows}x{dim}.parquet"));
    let data = generate(&spec);
    data.write_parquet(&input, 65_536).expect("write bench input");
    let poisoned = data.poisoned.clone();
    drop(data);
    let size_mib = std::fs::metadata(&input).unwrap().len() as f64 / 1048576.0;
    let out = dir.join(format!("out_{rows}"));
    let start = Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_datavet"))
        .args(["scan", "-q", "--input"])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .status()
        .expect("run datavet");
    let wall = start.elapsed().as_secs_f64();
    assert!(status.success(), "scan failed");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let stages: Vec<String> = report["timings_ms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let ms = t[1].as_f64().unwrap();
            format!(
                "{} {:.2}s ({:.0} rows/s)",
                t[0].as_str().unwrap(),
                ms / 1e3,
                rows as f64 / (ms / 1e3).max(1e-9)
            )
        })
        .collect();
    // Quality on the bench data too (it is generated with a seed never used for tuning).
    let scores = std::fs::File::open(out.join("scores.parquet")).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(scores)
        .unwrap()
        .build()
        .unwrap();
    let mut suspicion = Vec::new();
    for b in reader {
        let b = b.unwrap();
        let col = b.column_by_name("suspicion").unwrap();
        let col = col.as_any().downcast_ref::<arrow_array::Float64Array>().unwrap();
        suspicion.extend(col.values().iter().copied());
    }
    let auroc = datavet::stats::auroc(&suspicion, &poisoned).unwrap_or(f64::NAN);
    println!(
        "scan {rows} x {dim} ({size_mib:.0} MiB parquet): {wall:.2}s end to end, {:.0} rows/s, peak RSS {:.0} MiB; AUROC {auroc:.3}; {}",
        rows as f64 / wall,
        peak_rss_children_mib(),
        stages.join(", ")
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick") || std::env::var_os("DATAVET_BENCH_QUICK").is_some();
    let dir = tempfile::tempdir().expect("tempdir");
    let sizes: &[usize] = if quick { &[50_000] } else { &[200_000, 1_000_000] };
    for &rows in sizes {
        bench(rows, 256, dir.path());
    }
}
