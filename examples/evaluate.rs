//! Detection quality over a grid of generated scenarios and seeds.
//!
//! `cargo run --release --example evaluate -- [first_seed] [seeds] [record_thr] [anomaly_thr] [trim]
//! [--losses] [--trusted=N] [--only=SUBSTRING] [--rows=N] [--label-overlap=R] [--per-seed] [--no-retrain]`. Tune on low seeds (1-200 so
//! far); the tests in tests/quality.rs and the README's tables use seeds from 1000 up, never tuned on: 5 for
//! the Gaussian rows, 50 for the ReLU rows (`1000 50 --only=Relu`; 20 with `--rows=3000`), whose means
//! move by up to 0.2 between blocks of 20 seeds.
//! `--losses` passes the ReLU network's per-epoch losses, `--trusted=N` gives N clean records per
//! class as a trusted set, `--only` keeps the scenarios whose name contains the substring,
//! `--label-overlap` sets `[detect.influence] label-overlap` (`inf`: cleanlab's rule),
//! `--per-seed` prints each seed's numbers under the scenario's mean, `--no-retrain` skips the
//! retrain check (for tuning sweeps).

use datavet::pipeline::ScanConfig;
use datavet::testkit::{Attack, EvalInputs, Kind, Spec, evaluate_with};

fn main() {
    let flags: Vec<String> = std::env::args().skip(1).filter(|a| a.starts_with("--")).collect();
    let flag = |name: &str| {
        flags
            .iter()
            .find_map(|f| f.strip_prefix(name).map(|v| v.trim_start_matches('=').to_string()))
    };
    let inputs = EvalInputs {
        losses: flag("--losses").is_some(),
        trusted_per_class: flag("--trusted").and_then(|v| v.parse().ok()).unwrap_or(0),
        no_retrain: flag("--no-retrain").is_some(),
    };
    let only = flag("--only").unwrap_or_default();
    let per_seed = flag("--per-seed").is_some();
    let mut seed_lines: Vec<String> = Vec::new();
    // `--rows=N` replaces every scenario's rows per class (e.g. to see a 1% cluster of 30 records).
    let rows_per_class: Option<usize> = flag("--rows").and_then(|v| v.parse().ok());
    let positional: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let args: Vec<u64> = positional.iter().take(2).filter_map(|a| a.parse().ok()).collect();
    let first = args.first().copied().unwrap_or(1);
    let seeds = args.get(1).copied().unwrap_or(5);
    let mut config = ScanConfig::new(vec![], "unused".into());
    if let Some(t) = positional.get(2).and_then(|a| a.parse().ok()) {
        config.decision.record_threshold = t;
    }
    if let Some(t) = positional.get(3).and_then(|a| a.parse().ok()) {
        config.decision.anomaly_threshold = t;
    }
    if let Some(t) = positional.get(4).and_then(|a| a.parse().ok()) {
        config.detectors.spectre.trim = t;
    }
    if let Some(t) = flag("--label-overlap").and_then(|v| v.parse().ok()) {
        config.detectors.influence.label_overlap = t;
    }
    println!(
        "{:<44} {:>6} {:>6} {:>6} {:>6} {:>7}  attacked(min/max)",
        "scenario", "AUROC", "recall", "prec", "FQR", "quar%"
    );
    for (kind, dim, rows) in [
        (Kind::Gaussian, 64, 500),
        (Kind::Gaussian, 256, 300),
        (Kind::Gaussian, 512, 300),
        (Kind::Gaussian, 2048, 300),
        (Kind::Relu, 64, 500),
        (Kind::Relu, 128, 300),
    ] {
        for attack in [
            Attack::None,
            Attack::Backdoor {
                target: 3,
                rate: 0.01,
                strength: 4.0,
            },
            Attack::Backdoor {
                target: 3,
                rate: 0.05,
                strength: 3.0,
            },
            Attack::Backdoor {
                target: 3,
                rate: 0.15,
                strength: 3.0,
            },
            Attack::Backdoor {
                target: 3,
                rate: 0.05,
                strength: 1.5,
            },
            Attack::LabelFlip { rate: 0.05 },
            Attack::NearCopies {
                target: 3,
                groups: 3,
                copies: 10,
            },
        ] {
            let rows = rows_per_class.unwrap_or(rows);
            let name = format!("{kind:?} d={dim} n={rows}x10 {attack:?}");
            if !name.contains(&only) {
                continue;
            }
            let mut agg = [0.0f64; 5];
            let mut per_detector: Vec<(String, f64, usize)> = Vec::new();
            // Attack success after retraining: on all data, on clean.parquet, with the poison removed.
            let (mut asr, mut asr_runs) = ([0.0f64; 3], 0usize);
            let mut wrong_class = 0;
            for s in first..first + seeds {
                let spec = Spec {
                    kind,
                    classes: 10,
                    rows_per_class: rows,
                    dim,
                    attack,
                    seed: s,
                };
                let m = evaluate_with(&spec, &config, inputs).expect("evaluation runs");
                agg[0] += m.auroc.unwrap_or(f64::NAN);
                agg[1] += m.recall;
                agg[2] += m.precision;
                agg[3] += m.false_quarantine;
                agg[4] += m.quarantined;
                if let Some(r) = &m.retrain {
                    asr[0] += r.all_data.attack_success;
                    asr[1] += r.clean_output.attack_success;
                    asr[2] += r.poison_removed.attack_success;
                    asr_runs += 1;
                }
                for (i, (name, a)) in m.detector_auroc.iter().enumerate() {
                    if per_detector.len() <= i {
                        per_detector.push((name.clone(), 0.0, 0));
                    }
                    if let Some(a) = a {
                        per_detector[i].1 += a;
                        per_detector[i].2 += 1;
                    }
                }
                // Backdoor: exactly the target class; near-copies: at most the target class (the
                // copies may or may not make it look attacked); otherwise no class.
                let wrong = match attack {
                    Attack::Backdoor { target, .. } => m.attacked != vec![target.to_string()],
                    Attack::NearCopies { target, .. } => m.attacked.iter().any(|c| *c != target.to_string()),
                    _ => !m.attacked.is_empty(),
                };
                wrong_class += wrong as usize;
                if per_seed {
                    let retrain = m.retrain.as_ref().map_or(String::new(), |r| {
                        format!(
                            ", attack success all {:.3} clean.parquet {:.3} removed {:.3}",
                            r.all_data.attack_success, r.clean_output.attack_success, r.poison_removed.attack_success
                        )
                    });
                    seed_lines.push(format!(
                        "    seed {s}: recall {:.3} FQR {:.4} quarantined {:.3}% attacked {:?}{retrain}",
                        m.recall,
                        m.false_quarantine,
                        100.0 * m.quarantined,
                        m.attacked
                    ));
                }
            }
            let k = seeds as f64;
            println!(
                "{:<44} {:>6.3} {:>6.3} {:>6.3} {:>6.4} {:>7.3}  wrong-class runs {wrong_class}/{seeds}  in-class AUROC: {}",
                name.chars().take(44).collect::<String>(),
                agg[0] / k,
                agg[1] / k,
                agg[2] / k,
                agg[3] / k,
                100.0 * agg[4] / k,
                per_detector
                    .iter()
                    .filter(|d| d.2 > 0)
                    .map(|(n, a, c)| format!("{n} {:.3}", a / *c as f64))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            seed_lines.drain(..).for_each(|l| println!("{l}"));
            if asr_runs > 0 {
                let k = asr_runs as f64;
                println!(
                    "    retrain attack success: all data {:.3}, clean.parquet {:.3}, poison removed {:.3}",
                    asr[0] / k,
                    asr[1] / k,
                    asr[2] / k
                );
            }
        }
    }
}
