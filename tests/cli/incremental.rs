//! Incremental scans: the reference every scan saves, tonight's records matched against it by key
//! and content, only new or changed ones scored against its fits, the same decision as a full
//! scan, the diff and its exit code, re-fits on drift, on a large new share and on other
//! settings, and references that cannot be used.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Int64Type};
use arrow_array::{Array, RecordBatch};
use datavet::testkit::{self, Attack, Kind, Spec, Synthetic};
use predicates::str::contains;

use super::{Fixture, datavet, read_all};

fn gaussian(classes: usize, rows_per_class: usize, dim: usize, attack: Attack, seed: u64) -> Synthetic {
    testkit::generate(&Spec {
        kind: Kind::Gaussian,
        classes,
        rows_per_class,
        dim,
        attack,
        seed,
    })
}

fn backdoor(target: usize) -> Attack {
    Attack::Backdoor {
        target,
        rate: 0.08,
        strength: 4.0,
    }
}

/// Yesterday's rows in `data/day1.parquet`, tonight's addition in `day2.parquet` (outside `data/`
/// until [`arrive`] moves it in). Returns the data directory.
fn split(fx: &Fixture, data: &Synthetic, new: &[bool]) -> PathBuf {
    let dir = fx.path("data");
    std::fs::create_dir_all(&dir).unwrap();
    data.write_split(new, &dir.join("day1.parquet"), &fx.path("day2.parquet"), 250)
        .unwrap();
    dir
}

fn arrive(fx: &Fixture, dir: &Path) {
    std::fs::rename(fx.path("day2.parquet"), dir.join("day2.parquet")).unwrap();
}

fn scan(out: &Path, input: &Path, args: &[&str]) -> assert_cmd::assert::Assert {
    datavet()
        .arg("scan")
        .arg("--out")
        .arg(out)
        .arg("--input")
        .arg(input)
        .args(args)
        .assert()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn stdout(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8(a.get_output().stdout.clone()).unwrap()
}

/// scores.parquet by id: (quarantined, every detector's score by column name).
struct Scores {
    rows: HashMap<i64, (bool, HashMap<String, f32>)>,
    labels: HashMap<i64, String>,
}

impl Scores {
    fn read(path: &Path) -> Scores {
        let b: RecordBatch = read_all(path);
        let ids = b.column_by_name("id").unwrap().as_primitive::<Int64Type>().clone();
        let quarantined = b.column_by_name("quarantined").unwrap().as_boolean().clone();
        let detectors: Vec<(String, arrow_array::Float32Array)> = b
            .schema()
            .fields()
            .iter()
            .filter(|f| f.data_type() == &arrow_schema::DataType::Float32 && !f.name().starts_with("pc"))
            .map(|f| {
                let c = b
                    .column_by_name(f.name())
                    .unwrap()
                    .as_primitive::<Float32Type>()
                    .clone();
                (f.name().clone(), c)
            })
            .collect();
        let rows = (0..b.num_rows())
            .map(|i| {
                let scores = detectors
                    .iter()
                    .filter(|(_, c)| c.is_valid(i))
                    .map(|(n, c)| (n.clone(), c.value(i)))
                    .collect();
                (ids.value(i), (quarantined.value(i), scores))
            })
            .collect();
        let label = b.column_by_name("label").unwrap().as_string::<i32>();
        let labels = (0..b.num_rows())
            .map(|i| (ids.value(i), label.value(i).to_string()))
            .collect();
        Scores { rows, labels }
    }

    fn quarantined(&self) -> HashSet<i64> {
        self.rows.iter().filter(|(_, (q, _))| *q).map(|(&id, _)| id).collect()
    }
}

#[test]
fn an_unchanged_dataset_rescans_to_byte_identical_outputs() {
    let fx = Fixture::new();
    let input = fx.path("in.parquet");
    gaussian(5, 300, 32, backdoor(2), 71)
        .write_parquet(&input, 250)
        .unwrap();
    fx.scan(&input, &[]).success();
    let files = ["clean.parquet", "quarantine.parquet", "scores.parquet"];
    let before: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(fx.out().join(f)).unwrap()).collect();
    assert_eq!(
        std::fs::read_to_string(fx.out().join("reference/CURRENT")).unwrap(),
        "000001\n"
    );

    let a = fx.scan(&input, &["--incremental"]).success();
    let line = stdout(&a);
    assert!(
        line.contains("0 new, 0 changed, 0 gone, 0 scored (fit reused)") && line.contains("newly quarantined 0"),
        "{line}"
    );
    let after: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(fx.out().join(f)).unwrap()).collect();
    assert!(before == after, "outputs changed on a rescan of the same data");
    let report = json(&fx.out().join("report.json"));
    assert_eq!(report["incremental"]["unchanged"], 1500);
    assert_eq!(report["incremental"]["refit"], false);
    assert_eq!(report["influence"]["incremental"]["records_scored"], 0);
    let diff = json(&fx.out().join("diff.json"));
    assert_eq!(diff["newly_quarantined"].as_array().unwrap().len(), 0);
    assert!(diff["still_quarantined"].as_u64().unwrap() > 0);
    assert_eq!(
        std::fs::read_to_string(fx.out().join("reference/CURRENT")).unwrap(),
        "000002\n"
    );
}

#[test]
fn new_records_are_scored_against_the_reference_and_decided_like_a_full_scan() {
    let fx = Fixture::new();
    let data = gaussian(10, 400, 64, backdoor(3), 72);
    let new = data.new_rows(0.1);
    let dir = split(&fx, &data, &new);
    scan(&fx.out(), &dir, &[]).success();
    arrive(&fx, &dir);
    let a = scan(&fx.out(), &dir, &["--incremental"]).success();
    let fresh = new.iter().filter(|&&n| n).count();
    assert!(
        stdout(&a).contains(&format!("{fresh} new, 0 changed, 0 gone, {fresh} scored (fit reused)")),
        "{}",
        stdout(&a)
    );
    let report = json(&fx.out().join("report.json"));
    assert_eq!(report["incremental"]["new"], fresh);
    assert_eq!(report["influence"]["incremental"]["records_scored"], fresh);
    assert_eq!(report["conservation"]["ok"], true);
    assert_eq!(report["totals"]["rows"], 4000);

    // Yesterday's records keep yesterday's scores: the fits are the reference's. (Projections
    // are block matrix products, whose rounding depends on the block's shape: equal to float
    // precision. SPECTRE's whitened second moment is re-taken over tonight's class, as a full
    // scan would, so its scores move with what tonight adds: a little in the attacked class,
    // where one direction dominates; in clean classes, whose spectrum is flat, they re-rank,
    // which does not matter there, since a clean class quarantines nothing by them. The shared
    // shift keeps no fit: its groups are searched among tonight's class, yesterday's records and
    // tonight's together, as a full scan would, so its scores move too; the decision below is
    // what must hold.)
    let yesterday = Scores::read(&fx.out().join("reference/000001/scores.parquet"));
    let tonight = Scores::read(&fx.out().join("scores.parquet"));
    let mut compared = 0;
    let mut spectre_moves = Vec::new();
    for (id, (_, old)) in &yesterday.rows {
        let (_, now) = &tonight.rows[id];
        for (name, v) in old {
            if name == "shared_shift" {
                continue;
            }
            if name == "spectre" {
                if yesterday.labels[id] == "3" {
                    spectre_moves.push(((now[name] - v) / v.abs().max(1e-3)).abs());
                }
            } else {
                assert!(
                    (now[name] - v).abs() <= 1e-5 * v.abs().max(1.0),
                    "{id} {name}: {v} -> {}",
                    now[name]
                );
                compared += 1;
            }
        }
    }
    assert!(compared >= 3600 * 5, "{compared} scores compared");
    spectre_moves.sort_by(f32::total_cmp);
    let median = spectre_moves[spectre_moves.len() / 2];
    assert!(median < 0.05, "median relative move of SPECTRE scores {median}");

    // The same calibrated decision as a full scan of the same data.
    let full = fx.path("full");
    scan(&full, &dir, &["--no-reference"]).success();
    let (inc, all) = (
        tonight.quarantined(),
        Scores::read(&full.join("scores.parquet")).quarantined(),
    );
    let differ = inc.symmetric_difference(&all).count();
    assert!(
        differ <= 3.max(all.len() / 10),
        "incremental {} vs full {}: {differ} differ",
        inc.len(),
        all.len()
    );
    // And tonight's poison is caught among tonight's records.
    let ids = &data.ids;
    let new_poison: Vec<i64> = (0..ids.len())
        .filter(|&i| new[i] && data.poisoned[i])
        .map(|i| ids[i])
        .collect();
    let caught = new_poison.iter().filter(|id| inc.contains(id)).count();
    assert!(
        !new_poison.is_empty() && caught * 10 >= new_poison.len() * 8,
        "{caught} of {}",
        new_poison.len()
    );
    assert!(!full.join("reference").exists(), "--no-reference saves none");
}

#[test]
fn changed_and_removed_records_are_told_apart_from_new_ones() {
    let fx = Fixture::new();
    let input = fx.path("in.parquet");
    let mut data = gaussian(5, 300, 32, backdoor(2), 73);
    data.write_parquet(&input, 250).unwrap();
    fx.scan(&input, &[]).success();
    let first = Scores::read(&fx.out().join("scores.parquet"));
    let gone_quarantined = *first.quarantined().iter().min().unwrap();
    let gone_clean = data.ids[0];
    // Tonight: record 10 has a new vector under its old id; two records are gone.
    let changed = 10;
    data.x[changed * 32..(changed + 1) * 32]
        .iter_mut()
        .for_each(|v| *v += 0.5);
    let removed: Vec<bool> = data
        .ids
        .iter()
        .map(|&id| id == gone_quarantined || id == gone_clean)
        .collect();
    data.write_split(&removed, &input, &fx.path("removed.parquet"), 250)
        .unwrap();
    let a = fx.scan(&input, &["--incremental"]).success();
    assert!(
        stdout(&a).contains("0 new, 1 changed, 2 gone, 1 scored"),
        "{}",
        stdout(&a)
    );
    let diff = json(&fx.out().join("diff.json"));
    let gone: Vec<String> = diff["gone"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(gone, vec![gone_quarantined.to_string()]);
    assert_eq!(diff["records_removed"], 2);
    let report = json(&fx.out().join("report.json"));
    assert_eq!(report["totals"]["rows"], 1498);
    assert_eq!(report["conservation"]["ok"], true);
}

#[test]
fn a_large_new_share_or_drifted_classes_refit_and_say_why() {
    let fx = Fixture::new();
    let data = gaussian(5, 300, 32, backdoor(2), 74);
    let new = data.new_rows(0.3);
    let dir = split(&fx, &data, &new);
    scan(&fx.out(), &dir, &[]).success();
    arrive(&fx, &dir);
    let a = scan(&fx.out(), &dir, &["--incremental"]).success();
    assert!(stdout(&a).contains("(re-fitted)"), "{}", stdout(&a));
    let report = json(&fx.out().join("report.json"));
    let why = report["incremental"]["refit_reasons"].to_string();
    assert!(why.contains("new or changed since the fit, over 0.2"), "{why}");
    assert_eq!(report["incremental"]["scored"], 1500);
    // A re-fit is a full scan: the same outputs as one.
    let full = fx.path("full");
    scan(&full, &dir, &["--no-reference"]).success();
    for f in ["clean.parquet", "quarantine.parquet", "scores.parquet"] {
        assert!(
            std::fs::read(fx.out().join(f)).unwrap() == std::fs::read(full.join(f)).unwrap(),
            "{f} differs from a full scan's"
        );
    }
    assert_eq!(
        json(&fx.out().join("reference/000002/reference.json"))["fit"]["generation"],
        2
    );

    // Drift: tonight's records of class 1 arrive moved by about a class radius.
    let fx = Fixture::new();
    let mut data = gaussian(5, 300, 32, backdoor(2), 75);
    let new = data.new_rows(0.1);
    for i in (0..data.ids.len()).filter(|&i| new[i] && data.labels[i] == 1) {
        data.x[i * 32..(i + 1) * 32].iter_mut().for_each(|v| *v += 0.6);
    }
    let dir = split(&fx, &data, &new);
    scan(&fx.out(), &dir, &[]).success();
    arrive(&fx, &dir);
    scan(&fx.out(), &dir, &["--incremental"]).success();
    let report = json(&fx.out().join("report.json"));
    let why = report["incremental"]["refit_reasons"].to_string();
    assert!(why.contains("class `1` drifted"), "{why}");
    let drift = report["incremental"]["drift"].as_array().unwrap();
    let shift = |c: &str| {
        drift.iter().find(|d| d["class"] == c).unwrap()["shift"]
            .as_f64()
            .unwrap()
    };
    assert!(shift("1") > 0.5 && shift("0") < 0.3, "{drift:?}");
}

#[test]
fn other_settings_or_another_tool_version_refit() {
    let fx = Fixture::new();
    let input = fx.path("in.parquet");
    gaussian(5, 300, 32, backdoor(2), 76)
        .write_parquet(&input, 250)
        .unwrap();
    fx.scan(&input, &[]).success();
    fx.scan(&input, &["--incremental", "--nb-dims", "8"]).success();
    let why = json(&fx.out().join("report.json"))["incremental"]["refit_reasons"].to_string();
    assert!(why.contains("settings changed since the fit: detectors"), "{why}");
    // The decision's settings are not the fit's: changing them reuses it.
    fx.scan(
        &input,
        &["--incremental", "--nb-dims", "8", "--record-threshold", "2.5"],
    )
    .success()
    .stdout(contains("(fit reused)"));
    let header = fx.out().join("reference/000003/reference.json");
    let mut value = json(&header);
    value["tool_version"] = "0.0.1".into();
    std::fs::write(&header, serde_json::to_vec(&value).unwrap()).unwrap();
    fx.scan(&input, &["--incremental", "--nb-dims", "8"]).success();
    let why = json(&fx.out().join("report.json"))["incremental"]["refit_reasons"].to_string();
    assert!(why.contains("fitted by datavet 0.0.1"), "{why}");
}

#[test]
fn references_that_cannot_be_used_are_errors_that_name_the_file() {
    let fx = Fixture::new();
    let input = fx.path("in.parquet");
    gaussian(5, 200, 16, Attack::None, 77)
        .write_parquet(&input, 250)
        .unwrap();
    // A full scan saves a reference (a first --incremental night does too: see
    // a_retried_first_night_alerts_again...); --since-reference a folder without one fails.
    fx.scan(&input, &[]).success().stdout(contains("datavet: 1000 rows"));
    assert!(fx.out().join("reference/000001/records.json").is_file());
    let empty = fx.path("empty");
    std::fs::create_dir_all(&empty).unwrap();
    fx.scan(&input, &["--since-reference", empty.to_str().unwrap()])
        .code(2)
        .stderr(contains("no datavet reference here"));

    let header = fx.out().join("reference/000001/reference.json");
    let good = std::fs::read(&header).unwrap();
    let mut value: serde_json::Value = serde_json::from_slice(&good).unwrap();
    value["format_version"] = 999.into();
    std::fs::write(&header, serde_json::to_vec(&value).unwrap()).unwrap();
    fx.scan(&input, &["--incremental"])
        .code(2)
        .stderr(contains("reference.json: reference format 999"))
        .stderr(contains("reads format 1 only"));
    std::fs::write(&header, &good).unwrap();

    let records = fx.out().join("reference/000001/records.json");
    let bytes = std::fs::read(&records).unwrap();
    std::fs::write(&records, &bytes[..bytes.len() / 2]).unwrap();
    fx.scan(&input, &["--since-reference", fx.out().to_str().unwrap()])
        .code(2)
        .stderr(contains("records.json: not a readable datavet reference"));
    // The failed scans published nothing and left the reference as it was.
    assert_eq!(
        std::fs::read_to_string(fx.out().join("reference/CURRENT")).unwrap(),
        "000001\n"
    );
    std::fs::write(&records, &bytes).unwrap();

    // A damaged snapshot of the reference's outputs fails only the diff, after publishing: the
    // next reference is saved all the same, so the night after diffs against it (every later
    // night failed on the same snapshot).
    std::fs::remove_file(fx.out().join("reference/000001/scores.parquet")).unwrap();
    fx.scan(&input, &["--incremental"])
        .code(2)
        .stderr(contains("are complete, but the diff against the reference failed"));
    assert_eq!(
        std::fs::read_to_string(fx.out().join("reference/CURRENT")).unwrap(),
        "000002\n"
    );
    fx.scan(&input, &["--incremental", "--fail-if-new", "0"])
        .success()
        .stdout(contains("against reference generation 2"));
}

/// `--fail-if-new` alerts on records quarantined since the last scan. A rerun on the same
/// records (a scheduler retrying the job that exited 3, or a night without new data) reports
/// what that scan reported, so the retry fails the gate too, until a reviewer acknowledges the
/// alert (`datavet ack`); the next night with new records diffs against the last scan again, and
/// yesterday's alert is not repeated.
#[test]
fn fail_if_new_alerts_on_new_quarantines_and_a_retry_alerts_again() {
    let fx = Fixture::new();
    let data = gaussian(10, 300, 32, backdoor(4), 78);
    // Tonight brings most of the poison; yesterday had some of it; a few clean records come
    // the night after.
    let tonight: Vec<bool> = (0..data.ids.len())
        .map(|i| (data.poisoned[i] && i % 3 != 0) || i % 20 == 0)
        .collect();
    let later: Vec<bool> = (0..data.ids.len())
        .map(|i| !tonight[i] && !data.poisoned[i] && i % 37 == 1)
        .collect();
    let dir = fx.path("data");
    std::fs::create_dir_all(&dir).unwrap();
    let all = data.to_batch();
    let rows = |keep: &dyn Fn(usize) -> bool| {
        let mask: arrow_array::BooleanArray = (0..data.ids.len()).map(|i| Some(keep(i))).collect();
        arrow_select::filter::filter_record_batch(&all, &mask).unwrap()
    };
    super::write_batch(&dir.join("day1.parquet"), &rows(&|i| !tonight[i] && !later[i]));
    scan(&fx.out(), &dir, &[]).success();
    super::write_batch(&dir.join("day2.parquet"), &rows(&|i| tonight[i]));
    let newly_of = |a: &assert_cmd::assert::Assert| -> usize {
        let line = stdout(a);
        line.split("newly quarantined ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{line}"))
    };
    let generations = || {
        let mut kept: Vec<String> = std::fs::read_dir(fx.out().join("reference"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        kept.sort();
        kept
    };
    let newly = newly_of(&scan(&fx.out(), &dir, &["--incremental", "--fail-if-new", "0"]).code(3));
    assert!(newly > 0);
    // Retried twice on the same records: the same alert, diffed against generation 1 each time,
    // which is kept for it beside the current and the previous generation.
    for (retry, kept) in [
        ["000001", "000002", "000003", "CURRENT"],
        ["000001", "000003", "000004", "CURRENT"],
    ]
    .iter()
    .enumerate()
    {
        let a = scan(&fx.out(), &dir, &["--incremental", "--fail-if-new", "0"]).code(3);
        assert_eq!(newly_of(&a), newly, "retry {retry}");
        let report = json(&fx.out().join("report.json"));
        let base = report["incremental"]["diff_against"].as_str().unwrap().to_string();
        assert!(base.ends_with("000001"), "{base}");
        assert_eq!(generations(), kept, "retry {retry}");
    }
    let yesterday: HashSet<String> = json(&fx.out().join("diff.json"))["newly_quarantined"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(yesterday.len(), newly);
    // A reviewer acknowledges the alert (logged): the next rerun on the same records is quiet.
    datavet()
        .args([
            "ack",
            fx.out().to_str().unwrap(),
            "--reason",
            "ticket 7: poison, kept out",
            "--by",
            "alice",
        ])
        .assert()
        .success()
        .stdout(contains("acknowledged the alert of reference generation 4"));
    let audit = std::fs::read_to_string(fx.out().join("audit.jsonl")).unwrap();
    let entry: serde_json::Value = serde_json::from_str(audit.lines().last().unwrap()).unwrap();
    assert_eq!(
        (entry["action"].as_str(), entry["by"].as_str()),
        (Some("acknowledge"), Some("alice"))
    );
    let a = scan(&fx.out(), &dir, &["--incremental", "--fail-if-new", "0"]).success();
    assert_eq!(newly_of(&a), 0);
    assert_eq!(generations(), ["000004", "000005", "CURRENT"]);
    // The next night: a few clean records more. Diffed against the last scan, none of
    // yesterday's newly quarantined records is new again.
    super::write_batch(&dir.join("day3.parquet"), &rows(&|i| later[i]));
    scan(&fx.out(), &dir, &["--incremental"]).success();
    let diff = json(&fx.out().join("diff.json"));
    let again: Vec<&str> = diff["newly_quarantined"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap())
        .filter(|k| yesterday.contains(*k))
        .collect();
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(generations(), ["000005", "000006", "CURRENT"]);
}

/// The first incremental night (no reference yet) counts every quarantined record as new, and
/// so does its retry; a retry whose earlier snapshot is damaged diffs against the reference
/// (with a warning) rather than failing every night.
#[test]
fn a_retried_first_night_alerts_again_and_a_damaged_earlier_snapshot_is_skipped() {
    let fx = Fixture::new();
    let data = gaussian(6, 200, 16, backdoor(2), 79);
    let dir = split(&fx, &data, &data.new_rows(0.1));
    let first = scan(&fx.out(), &dir, &["--incremental", "--fail-if-new", "0"]).code(3);
    let quarantined = json(&fx.out().join("report.json"))["totals"]["quarantined"].clone();
    assert!(quarantined.as_u64().unwrap() > 0, "{}", stdout(&first));
    let retry = scan(&fx.out(), &dir, &["--incremental", "--fail-if-new", "0"]).code(3);
    assert!(
        stdout(&retry).contains("every quarantined record counts as new"),
        "{}",
        stdout(&retry)
    );
    assert!(
        String::from_utf8_lossy(&retry.get_output().stderr)
            .contains(&format!("{quarantined} records newly quarantined"))
    );
    // The next night's retry (generation 2 diffed against generation 1) with generation 1's
    // report damaged: diffed against generation 2 instead, nothing new.
    arrive(&fx, &dir);
    scan(&fx.out(), &dir, &["--incremental"]).success();
    std::fs::write(fx.out().join("reference/000002/report.json"), b"{\"truncated").unwrap();
    let a = scan(&fx.out(), &dir, &["--incremental", "--fail-if-new", "0"]).success();
    let line = stdout(&a);
    assert!(line.contains("newly quarantined 0"), "{line}");
    assert!(!line.contains("diffed against"), "{line}");
    let stderr = String::from_utf8_lossy(&a.get_output().stderr).to_string();
    assert!(stderr.contains("cannot be read"), "{stderr}");
}

#[test]
fn copies_and_flipped_labels_arriving_tonight_are_caught() {
    let fx = Fixture::new();
    let data = gaussian(
        5,
        300,
        16,
        Attack::NearCopies {
            target: 2,
            groups: 2,
            copies: 8,
        },
        79,
    );
    // Every copy arrives tonight, with 5% of the clean records.
    let share = data.new_rows(0.05);
    let new: Vec<bool> = (0..data.ids.len()).map(|i| data.poisoned[i] || share[i]).collect();
    let dir = split(&fx, &data, &new);
    scan(&fx.out(), &dir, &[]).success();
    arrive(&fx, &dir);
    scan(&fx.out(), &dir, &["--incremental"]).success();
    let q = read_all(&fx.out().join("quarantine.parquet"));
    let ids = q.column_by_name("id").unwrap().as_primitive::<Int64Type>();
    let reasons = q.column_by_name("reasons").unwrap().as_string::<i32>();
    let copies: HashSet<i64> = data.poisoned_ids().into_iter().collect();
    let caught = (0..q.num_rows())
        .filter(|&i| copies.contains(&ids.value(i)) && reasons.value(i).contains("near_duplicates"))
        .count();
    assert_eq!(caught, copies.len(), "every copy is quarantined as one");

    let fx = Fixture::new();
    let data = gaussian(5, 300, 16, Attack::LabelFlip { rate: 0.06 }, 80);
    let new = data.new_rows(0.1);
    let dir = split(&fx, &data, &new);
    scan(&fx.out(), &dir, &[]).success();
    arrive(&fx, &dir);
    scan(&fx.out(), &dir, &["--incremental"]).success();
    let quarantined = Scores::read(&fx.out().join("scores.parquet")).quarantined();
    let flips: Vec<i64> = (0..data.ids.len())
        .filter(|&i| new[i] && data.poisoned[i])
        .map(|i| data.ids[i])
        .collect();
    let caught = flips.iter().filter(|id| quarantined.contains(id)).count();
    assert!(
        !flips.is_empty() && caught * 10 >= flips.len() * 7,
        "{caught} of {} new flips",
        flips.len()
    );
}

/// Ids of the records in quarantine.parquet whose reasons call them label issues.
fn label_issues(out: &Path) -> HashSet<i64> {
    let q = read_all(&out.join("quarantine.parquet"));
    let ids = q.column_by_name("id").unwrap().as_primitive::<Int64Type>();
    let reasons = q.column_by_name("reasons").unwrap().as_string::<i32>();
    (0..q.num_rows())
        .filter(|&i| reasons.value(i).contains("label issue"))
        .map(|i| ids.value(i))
        .collect()
}

#[test]
fn all_zero_vectors_are_counted_and_never_label_issues_full_or_incremental() {
    // A layer that zeroes all of class 4 and a third of classes 0-3: the zero vectors share one
    // set of probabilities, in which class 4 is the largest label (threshold about 0.43), so
    // cleanlab's rule calls the 400 zero vectors of classes 0-3 label issues of class 4.
    let fx = Fixture::new();
    let mut data = gaussian(5, 300, 16, Attack::None, 81);
    let (n, dim) = (data.ids.len(), data.dim);
    let zero: Vec<bool> = (0..n).map(|i| data.labels[i] == 4 || i % 3 == 0).collect();
    (0..n)
        .filter(|&i| zero[i])
        .for_each(|i| data.x[i * dim..(i + 1) * dim].fill(0.0));
    let new = data.new_rows(0.05);
    let zero_ids: HashSet<i64> = (0..n).filter(|&i| zero[i]).map(|i| data.ids[i]).collect();
    assert!(
        (0..n).any(|i| new[i] && zero[i] && data.labels[i] != 4),
        "zero vectors arrive tonight"
    );
    // Each class's all-zero vectors are counted, and the classes named in a warning, the whole
    // zero class first.
    let counted = |arrived: bool| {
        let report = json(&fx.out().join("report.json"));
        for class in report["classes"].as_array().unwrap() {
            let label: i64 = class["label"].as_str().unwrap().parse().unwrap();
            let expected = (0..n)
                .filter(|&i| zero[i] && data.labels[i] == label && (arrived || !new[i]))
                .count();
            assert_eq!(class["zero_vectors"], expected, "class {label}");
        }
        let warnings = report["warnings"].as_array().unwrap();
        assert!(
            warnings
                .iter()
                .any(|w| w.as_str().unwrap().starts_with("all-zero vectors in 5 classes: `4` ")),
            "{warnings:?}"
        );
        // report.html's class table: class 4's row shows its count.
        let html = std::fs::read_to_string(fx.out().join("report.html")).unwrap();
        let row = html.split("<tr").find(|r| r.contains("<code>4</code>")).unwrap();
        let class_4 = (0..n).filter(|&i| data.labels[i] == 4 && (arrived || !new[i])).count();
        assert!(
            row.contains(&format!("<td class=num>{class_4}</td><td class=reason>")),
            "{row}"
        );
    };
    let dir = split(&fx, &data, &new);
    scan(&fx.out(), &dir, &[]).success();
    counted(false);
    let influence = &json(&fx.out().join("report.json"))["influence"];
    let zeros_yesterday = (0..n).filter(|&i| zero[i] && !new[i]).count();
    assert_eq!(
        influence["zero_vectors_not_label_checked"], zeros_yesterday,
        "{influence:#}"
    );
    let issues = label_issues(&fx.out());
    assert!(issues.is_disjoint(&zero_ids), "{issues:?}");
    assert!(issues.len() <= 15, "{} label issues in a clean set", issues.len());
    arrive(&fx, &dir);
    let tonight = scan(&fx.out(), &dir, &["--incremental"]).success();
    assert!(stdout(&tonight).contains("scored (fit reused)"), "{}", stdout(&tonight));
    counted(true);
    let influence = &json(&fx.out().join("report.json"))["influence"];
    assert_eq!(
        influence["zero_vectors_not_label_checked"],
        zero_ids.len(),
        "{influence:#}"
    );
    let issues = label_issues(&fx.out());
    assert!(issues.is_disjoint(&zero_ids), "{issues:?}");
}

#[test]
fn a_nightly_pipeline_runs_incrementally() {
    let fx = Fixture::new();
    let data = gaussian(5, 300, 32, backdoor(2), 81);
    let dir = split(&fx, &data, &data.new_rows(0.1));
    let out = fx.path("nightly");
    let file = fx.path("nightly.toml");
    std::fs::write(
        &file,
        "[input]\npaths = [\"data\"]\n[output]\ndir = \"nightly\"\nfail-if-new = 0\n[incremental]\nenabled = true\n[incremental.refit]\nmax-drift = 0.8\n",
    )
    .unwrap();
    datavet().arg("run").arg(&file).assert().code(3); // the first night: all quarantined rows are new
    arrive(&fx, &dir);
    let a = datavet().arg("run").arg(&file).assert();
    let line = stdout(&a);
    assert!(
        line.contains("150 new, 0 changed, 0 gone, 150 scored (fit reused); newly quarantined"),
        "{line}"
    );
    let report = json(&out.join("report.json"));
    assert_eq!(report["incremental"]["new"], 150);
    assert_eq!(report["incremental"]["refit"], false);
    assert_eq!(report["influence"]["incremental"]["records_scored"], 150);
    let before = std::fs::read(out.join("scores.parquet")).unwrap();
    // Re-run on the same records (a retried job): the same diff, so the same exit code.
    let newly = line
        .split("newly quarantined ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    let again = datavet()
        .arg("run")
        .arg(&file)
        .assert()
        .code(a.get_output().status.code().unwrap());
    assert!(
        stdout(&again).contains(&format!("newly quarantined {newly} ")),
        "{}",
        stdout(&again)
    );
    assert!(before == std::fs::read(out.join("scores.parquet")).unwrap());
    // The re-run reused the quarantine stage; its report.json says the re-run's match (it kept
    // the earlier run's: generation 1, 150 new).
    let report = json(&out.join("report.json"));
    assert_eq!(
        report["incremental"]["reference_generation"], 2,
        "{:#}",
        report["incremental"]
    );
    assert_eq!(report["incremental"]["new"], 0);

    std::fs::write(
        &file,
        "[input]\npaths = [\"data\"]\n[output]\ndir = \"nightly\"\n[incremental]\nenabled = true\nreference = \"nowhere\"\n[incremental.refit]\nmax-drift = -1\n",
    )
    .unwrap();
    super::check_refuses(
        &file,
        &[
            "nightly.toml:7: [incremental] `reference`",
            "nightly.toml:9: [incremental.refit] `max-drift` must be positive",
        ],
    );
}

#[test]
fn released_records_stay_in_clean_until_their_content_changes() {
    let fx = Fixture::new();
    let input = fx.path("in.parquet");
    let mut data = gaussian(5, 300, 32, backdoor(2), 82);
    data.write_parquet(&input, 250).unwrap();
    fx.scan(&input, &[]).success();
    let quarantined = Scores::read(&fx.out().join("scores.parquet")).quarantined();
    let mut ids: Vec<i64> = quarantined.iter().copied().collect();
    ids.sort();
    let (kept, edited) = (ids[0], ids[1]);
    let list = fx.path("reviewed.txt");
    std::fs::write(&list, format!("{kept}\n{edited}\n")).unwrap();
    datavet()
        .args(["release"])
        .arg(fx.out())
        .arg("--ids")
        .arg(&list)
        .args(["--reason", "checked by hand", "--by", "alice"])
        .assert()
        .success()
        .stdout(contains("2 kept in clean by later scans while unchanged"));

    // The next scans, incremental or full, keep both in clean and say why; nothing is new.
    for args in [&["--incremental"][..], &[]] {
        let a = fx.scan(&input, args).success();
        let now = Scores::read(&fx.out().join("scores.parquet"));
        assert!(!now.quarantined().contains(&kept) && !now.quarantined().contains(&edited));
        assert_eq!(now.quarantined().len(), quarantined.len() - 2);
        if args.is_empty() {
            continue;
        }
        assert!(stdout(&a).contains("newly quarantined 0"), "{}", stdout(&a));
        let diff = json(&fx.out().join("diff.json"));
        assert_eq!(
            diff["released"].as_array().unwrap().len(),
            0,
            "the release was yesterday's"
        );
    }
    let scores = read_all(&fx.out().join("scores.parquet"));
    let id_col = scores.column_by_name("id").unwrap().as_primitive::<Int64Type>();
    let reasons = scores.column_by_name("reasons").unwrap().as_string::<i32>();
    let reason = (0..scores.num_rows())
        .find(|&i| id_col.value(i) == kept)
        .map(|i| reasons.value(i))
        .unwrap();
    assert!(
        reason.starts_with("kept in clean: released on review by alice at ")
            && reason.contains("checked by hand; flagged again: "),
        "{reason}"
    );

    // A released record whose content changes is judged afresh.
    let row = data.ids.iter().position(|&id| id == edited).unwrap();
    data.x[row * 32] += 1e-3;
    data.write_parquet(&input, 250).unwrap();
    fx.scan(&input, &["--incremental"]).success();
    let now = Scores::read(&fx.out().join("scores.parquet")).quarantined();
    assert!(now.contains(&edited) && !now.contains(&kept));

    // A night without the released record, then it comes back unchanged: still released (it
    // was forgotten with the night it was missing).
    let absent: Vec<bool> = data.ids.iter().map(|&id| id == kept).collect();
    data.write_split(&absent, &input, &fx.path("aside.parquet"), 250)
        .unwrap();
    fx.scan(&input, &["--incremental"]).success();
    data.write_parquet(&input, 250).unwrap();
    let a = fx.scan(&input, &["--incremental", "--fail-if-new", "0"]).success();
    let now = Scores::read(&fx.out().join("scores.parquet")).quarantined();
    assert!(!now.contains(&kept), "{}", stdout(&a));
}

/// `data` as a tabular dataset: id, label and one Float64 column per dimension (f00, f01, ...),
/// the rows where `keep` is true.
fn tabular(data: &Synthetic, keep: &[bool]) -> RecordBatch {
    use std::sync::Arc;
    let rows: Vec<usize> = (0..data.ids.len()).filter(|&i| keep[i]).collect();
    let mut fields = vec![
        arrow_schema::Field::new("id", arrow_schema::DataType::Int64, false),
        arrow_schema::Field::new("label", arrow_schema::DataType::Int64, false),
    ];
    let mut columns: Vec<arrow_array::ArrayRef> = vec![
        Arc::new(arrow_array::Int64Array::from(
            rows.iter().map(|&i| data.ids[i]).collect::<Vec<_>>(),
        )),
        Arc::new(arrow_array::Int64Array::from(
            rows.iter().map(|&i| data.labels[i]).collect::<Vec<_>>(),
        )),
    ];
    for j in 0..data.dim {
        fields.push(arrow_schema::Field::new(
            format!("f{j:02}"),
            arrow_schema::DataType::Float64,
            false,
        ));
        let values: Vec<f64> = rows.iter().map(|&i| data.x[i * data.dim + j] as f64).collect();
        columns.push(Arc::new(arrow_array::Float64Array::from(values)));
    }
    RecordBatch::try_new(Arc::new(arrow_schema::Schema::new(fields)), columns).unwrap()
}

/// Yesterday's records of `data` (all but a tenth) as `data/day1.parquet` with one Float64
/// column per dimension: tonight's rows, the data directory and the `--feature-cols` list.
fn tabular_day1(fx: &Fixture, data: &Synthetic) -> (Vec<bool>, PathBuf, String) {
    let new = data.new_rows(0.1);
    let dir = fx.path("data");
    std::fs::create_dir_all(&dir).unwrap();
    super::write_batch(
        &dir.join("day1.parquet"),
        &tabular(data, &new.iter().map(|n| !n).collect::<Vec<_>>()),
    );
    let cols = (0..data.dim).map(|j| format!("f{j:02}")).collect::<Vec<_>>().join(",");
    (new, dir, cols)
}

#[test]
fn tabular_features_and_scans_without_influence_run_incrementally() {
    let fx = Fixture::new();
    let data = gaussian(5, 300, 12, backdoor(2), 83);
    let (new, dir, cols) = tabular_day1(&fx, &data);
    for extra in [&[][..], &["--no-influence"][..]] {
        let out = fx.path(&format!("out{}", extra.len()));
        let args: Vec<&str> = [&["--feature-cols", cols.as_str()][..], extra].concat();
        scan(&out, &dir, &args).success();
        let day2 = dir.join("day2.parquet");
        super::write_batch(&day2, &tabular(&data, &new));
        let incremental = [&args[..], &["--incremental"]].concat();
        scan(&out, &dir, &incremental)
            .success()
            .stdout(contains("150 new, 0 changed, 0 gone, 150 scored (fit reused)"));
        // Feature columns are standardized as the reference did: yesterday's records read back
        // the same vectors, hence the same scores.
        let yesterday = Scores::read(&out.join("reference/000001/scores.parquet"));
        let tonight = Scores::read(&out.join("scores.parquet"));
        for (id, (_, old)) in &yesterday.rows {
            let spectral = old["spectral"];
            assert!(
                (tonight.rows[id].1["spectral"] - spectral).abs() <= 1e-5 * spectral.abs().max(1.0),
                "{id}"
            );
        }
        std::fs::remove_file(&day2).unwrap();
    }
}

/// Without an id column a record is keyed `name#row`, the name being the file's path below the
/// `--input` folder: a nightly scan that spells the folder another way (relative, through a
/// symlink, from a pipeline in another working directory) keys yesterday's records as yesterday
/// did. A symlink loop in the folder, or a file reached twice, is read once.
#[test]
fn records_without_ids_keep_their_keys_however_the_input_is_spelled() {
    let fx = Fixture::new();
    let data = gaussian(4, 150, 16, backdoor(1), 71);
    let dir = fx.path("data");
    std::fs::create_dir_all(&dir).unwrap();
    let batch = data.to_batch();
    let without_id = batch.project(&(1..batch.num_columns()).collect::<Vec<_>>()).unwrap();
    super::write_batch(&dir.join("day1.parquet"), &without_id);
    let out = fx.path("out");
    scan(&out, &dir, &["-q"]).success();
    let scores = read_all(&out.join("scores.parquet"));
    let keys = scores.column_by_name("key").unwrap().as_string::<i32>();
    assert_eq!(keys.value(0), "day1.parquet#0");

    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(&dir, fx.path("latest")).unwrap();
        std::os::unix::fs::symlink(".", dir.join("loop")).unwrap();
    }
    // Relative to the working directory, through a symlink, with a loop inside, and the file
    // named a second time: the same 600 records, none new.
    let assert = datavet()
        .current_dir(fx.path(""))
        .args(["scan", "--out", "out", "--input"])
        .arg(if cfg!(unix) { "./latest/" } else { "data" })
        .args(["--input", "data/day1.parquet", "--incremental", "--fail-if-new", "0"])
        .assert()
        .success();
    assert!(
        stdout(&assert).contains("0 new, 0 changed, 0 gone"),
        "{}",
        stdout(&assert)
    );
    assert_eq!(json(&out.join("report.json"))["totals"]["rows"], 600);

    // A second input holding a file of the same name: only its records take the input's name
    // in front; yesterday's keep their keys (all of them were re-keyed, a false alert).
    let other = fx.path("other");
    std::fs::create_dir_all(&other).unwrap();
    super::write_batch(&other.join("day1.parquet"), &without_id.slice(0, 100));
    let assert = scan(&out, &dir, &["--input", other.to_str().unwrap(), "--incremental"]).success();
    assert!(
        stdout(&assert).contains("100 new, 0 changed, 0 gone"),
        "{}",
        stdout(&assert)
    );
    let scores = read_all(&out.join("scores.parquet"));
    let keys = scores.column_by_name("key").unwrap().as_string::<i32>();
    assert!(keys.iter().any(|k| k == Some("other/day1.parquet#0")));
    assert!(keys.iter().any(|k| k == Some("day1.parquet#0")));

    // Nested inputs in either order read each file once, and neither is "empty".
    let nested = fx.path("nested");
    std::fs::create_dir_all(nested.join("sub")).unwrap();
    std::fs::copy(dir.join("day1.parquet"), nested.join("sub/part.parquet")).unwrap();
    for first in [nested.join("sub"), nested.clone()] {
        let second = if first == nested {
            nested.join("sub")
        } else {
            nested.clone()
        };
        datavet()
            .args(["scan", "-q", "--out"])
            .arg(fx.path("nested_out"))
            .arg("--input")
            .arg(&first)
            .arg("--input")
            .arg(&second)
            .assert()
            .success();
        assert_eq!(json(&fx.path("nested_out/report.json"))["totals"]["rows"], 600);
    }
}

/// An id column rewritten from integers to strings (the same ids) matches yesterday's records by
/// their text: nothing new, nothing gone, as diff.json says too.
#[test]
fn ids_rewritten_as_strings_still_match_the_reference() {
    let fx = Fixture::new();
    let input = fx.path("in.parquet");
    let batch = gaussian(4, 150, 16, backdoor(1), 72).to_batch();
    super::write_batch(&input, &batch);
    fx.scan(&input, &["-q"]).success();
    let ids = batch.column_by_name("id").unwrap().as_primitive::<Int64Type>();
    let text: arrow_array::StringArray = ids.iter().map(|v| v.map(|v| v.to_string())).collect();
    let mut columns = batch.columns().to_vec();
    columns[0] = std::sync::Arc::new(text);
    let mut fields: Vec<arrow_schema::Field> = batch.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields[0] = arrow_schema::Field::new("id", arrow_schema::DataType::Utf8, false);
    let as_text = RecordBatch::try_new(std::sync::Arc::new(arrow_schema::Schema::new(fields)), columns).unwrap();
    super::write_batch(&input, &as_text);
    let assert = fx.scan(&input, &["--incremental"]).success();
    let line = stdout(&assert);
    assert!(line.contains("0 new, 0 changed, 0 gone"), "{line}");
    assert!(
        String::from_utf8_lossy(&assert.get_output().stderr).contains("matched by their keys' text"),
        "the change is said"
    );
    let diff = json(&fx.out().join("diff.json"));
    assert_eq!(diff["newly_quarantined"].as_array().unwrap().len(), 0);
}

/// `--since-reference` naming an older generation of the same output directory: the diff reads
/// it before the new reference is committed (committing prunes to two generations).
#[test]
fn a_scan_since_an_older_generation_diffs_against_it() {
    let fx = Fixture::new();
    let input = fx.path("in.parquet");
    gaussian(4, 150, 16, Attack::None, 74)
        .write_parquet(&input, 250)
        .unwrap();
    let out = fx.path("out");
    for _ in 0..3 {
        scan(&out, &input, &["--incremental", "-q"]).success();
    }
    let older = out.join("reference/000002");
    scan(&out, &input, &["--since-reference", older.to_str().unwrap()])
        .success()
        .stdout(contains("against reference generation 2"));
}

/// A label new tonight that sorts before the others moves every class's index: each class's
/// drift is still measured against its own fit, by name (it was measured against the fit at
/// its index: the new class against class 0's, and the report gave false drift reasons).
#[test]
fn drift_is_measured_against_the_fit_of_the_same_class() {
    let fx = Fixture::new();
    let mut data = gaussian(4, 200, 16, Attack::None, 73);
    let dir = fx.path("data");
    std::fs::create_dir_all(&dir).unwrap();
    let tonight: Vec<bool> = (0..data.ids.len()).map(|i| i % 10 == 0).collect();
    // Tonight's records of class 0 carry a new label, -1, which sorts first.
    for (i, label) in data.labels.iter_mut().enumerate() {
        if tonight[i] && *label == 0 {
            *label = -1;
        }
    }
    data.write_split(&tonight, &dir.join("day1.parquet"), &fx.path("day2.parquet"), 250)
        .unwrap();
    let out = fx.path("out");
    scan(&out, &dir, &["-q"]).success();
    arrive(&fx, &dir);
    scan(&out, &dir, &["--incremental", "-q"]).success();
    let incremental = &json(&out.join("report.json"))["incremental"];
    let drift = incremental["drift"].as_array().unwrap();
    assert_eq!(drift.len(), 3, "{incremental:#}");
    for d in drift {
        assert!(d["shift"].as_f64().unwrap() < 1.0, "{d}");
    }
    let reasons = incremental["refit_reasons"].to_string();
    assert!(
        reasons.contains("the classes changed") && !reasons.contains("drifted"),
        "{reasons}"
    );
}

/// A released record of feature columns stays released through scans that standardize the
/// columns anew (a full scan with tonight's rows): its content hash is of the values as read.
/// It was of the standardized vector, so any new scaling made every record "changed" and the
/// release was lost.
#[test]
fn released_feature_records_stay_released_when_the_scaling_changes() {
    let fx = Fixture::new();
    let data = gaussian(5, 300, 12, Attack::LabelFlip { rate: 0.05 }, 84);
    let (new, dir, cols) = tabular_day1(&fx, &data);
    let out = fx.path("out");
    scan(&out, &dir, &["--feature-cols", &cols, "-q"]).success();
    let quarantined = Scores::read(&out.join("scores.parquet")).quarantined();
    let released = *quarantined.iter().min().unwrap();
    std::fs::write(fx.path("ids.txt"), format!("{released}\n")).unwrap();
    datavet()
        .arg("release")
        .arg(&out)
        .arg("--ids")
        .arg(fx.path("ids.txt"))
        .args(["--reason", "checked", "--by", "alice"])
        .assert()
        .success();
    super::write_batch(&dir.join("day2.parquet"), &tabular(&data, &new));
    scan(&out, &dir, &["--feature-cols", &cols, "-q"]).success();
    assert!(
        !Scores::read(&out.join("scores.parquet"))
            .quarantined()
            .contains(&released)
    );
}
