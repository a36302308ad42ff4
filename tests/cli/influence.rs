//! The influence stage end to end: label flips and near-copies quarantined with reasons that name
//! the detector, the trusted set, the probabilities and loss columns, and their bad inputs.

use std::path::Path;

use datavet::testkit::{self, Attack, Kind, Spec, Synthetic};
use predicates::str::contains;

use super::{Fixture, datavet, read_all};

fn write(path: &Path, kind: Kind, attack: Attack, seed: u64) -> Synthetic {
    let data = testkit::generate(&Spec {
        kind,
        classes: 5,
        rows_per_class: 200,
        dim: 16,
        attack,
        seed,
    });
    data.write_parquet(path, 300).unwrap();
    data
}

fn report(fx: &Fixture) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(fx.out().join("report.json")).unwrap()).unwrap()
}

/// Ids of the quarantined rows and their reasons.
fn quarantined(fx: &Fixture) -> Vec<(i64, String)> {
    let q = read_all(&fx.out().join("quarantine.parquet"));
    let ids = q.column_by_name("id").unwrap();
    let ids = ids.as_any().downcast_ref::<arrow_array::Int64Array>().unwrap();
    let reasons = q.column_by_name("reasons").unwrap();
    let reasons = reasons.as_any().downcast_ref::<arrow_array::StringArray>().unwrap();
    (0..q.num_rows())
        .map(|i| (ids.value(i), reasons.value(i).to_string()))
        .collect()
}

#[test]
fn label_flips_are_quarantined_by_confident_learning() {
    let fx = Fixture::new();
    let input = fx.path("flips.parquet");
    let data = write(&input, Kind::Gaussian, Attack::LabelFlip { rate: 0.06 }, 31);
    fx.scan(&input, &[]).success();
    let q = quarantined(&fx);
    let flipped: Vec<i64> = data.poisoned_ids();
    let caught = q.iter().filter(|(id, _)| flipped.contains(id)).count();
    assert!(
        caught * 10 >= flipped.len() * 7,
        "{caught} of {} flips quarantined",
        flipped.len()
    );
    let by_cl: Vec<&(i64, String)> = q
        .iter()
        .filter(|(_, r)| r.contains("confident_learning: label issue"))
        .collect();
    assert!(!by_cl.is_empty(), "reasons name the detector: {q:?}");
    let right = by_cl.iter().filter(|(id, _)| flipped.contains(id)).count();
    assert!(
        right * 10 >= by_cl.len() * 9,
        "{right} of {} label issues are flips",
        by_cl.len()
    );
    let scores = read_all(&fx.out().join("scores.parquet"));
    for col in ["confident_learning", "self_influence", "deep_knn", "near_duplicates"] {
        assert!(scores.column_by_name(col).is_some(), "scores.parquet has `{col}`");
    }
    let influence = &report(&fx)["influence"];
    assert_eq!(influence["fold_fits"].as_array().unwrap().len(), 5);
    assert!(influence["full_fit"]["converged"].as_bool().unwrap());
    assert_eq!(
        influence["knn"]["recall"].as_f64().unwrap(),
        1.0,
        "small data is searched exactly"
    );
}

#[test]
fn near_copies_are_quarantined_as_a_group() {
    let fx = Fixture::new();
    let input = fx.path("copies.parquet");
    let attack = Attack::NearCopies {
        target: 2,
        groups: 2,
        copies: 8,
    };
    let data = write(&input, Kind::Gaussian, attack, 32);
    fx.scan(&input, &[]).success();
    let q = quarantined(&fx);
    let copies: Vec<i64> = data.poisoned_ids();
    for id in &copies {
        let reason = q.iter().find(|(q, _)| q == id).map(|(_, r)| r.as_str());
        assert!(
            reason.is_some_and(|r| r.contains("near_duplicates: one of 8 near-copies")),
            "copy {id}: {reason:?}"
        );
    }
    assert_eq!(report(&fx)["influence"]["knn"]["near_duplicate_groups"], 2);
}

#[test]
fn repeated_rows_of_discrete_features_are_not_flagged_as_near_copies() {
    // Five features of three levels each: 243 distinct rows among 3000, so nearly every row has
    // a dozen identical twins; the label is a function of two features (no label noise).
    let fx = Fixture::new();
    let input = fx.path("discrete.parquet");
    let mut state = 17u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % 3
    };
    let rows: Vec<Vec<f64>> = (0..3000).map(|_| (0..5).map(|_| next() as f64).collect()).collect();
    let mut fields = vec![
        arrow_schema::Field::new("id", arrow_schema::DataType::Int64, false),
        arrow_schema::Field::new("label", arrow_schema::DataType::Int64, false),
    ];
    let mut columns: Vec<arrow_array::ArrayRef> = vec![
        std::sync::Arc::new(arrow_array::Int64Array::from((0..3000).collect::<Vec<i64>>())),
        std::sync::Arc::new(arrow_array::Int64Array::from(
            rows.iter().map(|r| (r[0] + r[1]) as i64 % 3).collect::<Vec<_>>(),
        )),
    ];
    for j in 0..5 {
        fields.push(arrow_schema::Field::new(
            format!("c{j}"),
            arrow_schema::DataType::Float64,
            false,
        ));
        columns.push(std::sync::Arc::new(arrow_array::Float64Array::from(
            rows.iter().map(|r| r[j]).collect::<Vec<_>>(),
        )));
    }
    let schema = std::sync::Arc::new(arrow_schema::Schema::new(fields));
    super::write_batch(&input, &arrow_array::RecordBatch::try_new(schema, columns).unwrap());
    fx.scan(&input, &["--feature-cols", "c0,c1,c2,c3,c4"]).success();
    let warnings = report(&fx)["warnings"].to_string();
    assert!(warnings.contains("near-copies not flagged"), "{warnings}");
    let copies: Vec<_> = quarantined(&fx)
        .into_iter()
        .filter(|(_, why)| why.contains("near_duplicates"))
        .collect();
    assert!(copies.is_empty(), "{} rows quarantined as near-copies", copies.len());
}

#[test]
fn no_influence_runs_only_the_clustering_detectors() {
    let fx = Fixture::new();
    let input = fx.path("in.parquet");
    write(&input, Kind::Gaussian, Attack::None, 33);
    fx.scan(&input, &["--no-influence"]).success();
    let scores = read_all(&fx.out().join("scores.parquet"));
    assert!(scores.column_by_name("confident_learning").is_none());
    assert!(scores.column_by_name("spectre").is_some());
    assert!(report(&fx)["influence"].is_null());
}

#[test]
fn too_many_class_probabilities_skip_the_surrogate_but_not_the_neighbour_search() {
    // 900 rows x 5 classes = 4500 probabilities, over a limit of 4000 (as an ImageNet-sized set
    // is at the default): no surrogate, so no confident learning or self-influence, but the
    // neighbour search runs and its near-copy groups are quarantined, in a full scan and in the
    // incremental scans that extend it when 100 more rows arrive and the night after.
    let fx = Fixture::new();
    let attack = Attack::NearCopies {
        target: 2,
        groups: 2,
        copies: 8,
    };
    let data = testkit::generate(&Spec {
        kind: Kind::Gaussian,
        classes: 5,
        rows_per_class: 200,
        dim: 16,
        attack,
        seed: 32,
    });
    let dir = fx.path("data");
    std::fs::create_dir_all(&dir).unwrap();
    let new = data.new_rows(0.1);
    data.write_split(&new, &dir.join("day1.parquet"), &fx.path("day2.parquet"), 300)
        .unwrap();
    let file = fx.path("limit.toml");
    std::fs::write(
        &file,
        format!(
            "[input]\npaths = [\"data\"]\n[output]\ndir = \"{}\"\n\
             [detect.influence]\nmax-probability-values = 4000\n",
            fx.out().display()
        ),
    )
    .unwrap();
    let copies: Vec<i64> = data.poisoned_ids();
    for night in 1..=3 {
        if night == 2 {
            std::fs::rename(fx.path("day2.parquet"), dir.join("day2.parquet")).unwrap();
        }
        datavet()
            .arg("run")
            .arg(&file)
            .args(["--set", &format!("incremental.enabled={}", night > 1)])
            .assert()
            .success();
        let r = report(&fx);
        // The incremental scan extends the first night's state, fitted (or not) on 900 rows.
        let why = r["influence"]["surrogate_skipped"].to_string();
        assert!(
            why.contains("900 rows x 5 classes make 4500 class probabilities"),
            "night {night}: {why}"
        );
        assert!(r["warnings"].to_string().contains("max-probability-values"));
        // Said once, however many nights extend the state.
        let extended = r["warnings"]
            .to_string()
            .matches("when the reference was fitted")
            .count();
        assert_eq!(extended, (night > 1) as usize, "{}", r["warnings"]);
        assert!(r["influence"]["full_fit"].is_null() && r["influence"]["fold_fits"] == serde_json::json!([]));
        assert_eq!(r["incremental"].is_null(), night == 1, "{:#}", r["incremental"]);
        let scores = read_all(&fx.out().join("scores.parquet"));
        for (column, present) in [
            ("confident_learning", false),
            ("self_influence", false),
            ("deep_knn", true),
            ("near_duplicates", true),
        ] {
            assert_eq!(
                scores.column_by_name(column).is_some(),
                present,
                "night {night}: {column}"
            );
        }
        let q = quarantined(&fx);
        let arrived: Vec<i64> = (0..data.ids.len())
            .filter(|&i| night > 1 || !new[i])
            .map(|i| data.ids[i])
            .collect();
        for id in copies.iter().filter(|id| arrived.contains(id)) {
            let reason = q.iter().find(|(q, _)| q == id).map(|(_, r)| r.as_str());
            assert!(
                reason.is_some_and(|r| r.contains("near_duplicates")),
                "night {night}, copy {id}: {reason:?}"
            );
        }
    }
    // At the limit the surrogate is fitted.
    datavet()
        .arg("run")
        .arg(&file)
        .args(["--set", "detect.influence.max-probability-values=5000"])
        .assert()
        .success();
    let r = report(&fx);
    assert!(
        r["influence"]["surrogate_skipped"].is_null() && r["influence"]["full_fit"]["converged"].as_bool().unwrap()
    );
    assert!(
        read_all(&fx.out().join("scores.parquet"))
            .column_by_name("confident_learning")
            .is_some()
    );
}

#[test]
fn a_trusted_set_adds_influence_on_it_and_reports_the_solve() {
    let fx = Fixture::new();
    let input = fx.path("flips.parquet");
    write(&input, Kind::Gaussian, Attack::LabelFlip { rate: 0.06 }, 34);
    let trusted = fx.path("trusted.parquet");
    write(&trusted, Kind::Gaussian, Attack::None, 34); // same seed: the same classes, no flips
    fx.scan(&input, &["--trusted", trusted.to_str().unwrap()]).success();
    let scores = read_all(&fx.out().join("scores.parquet"));
    assert!(scores.column_by_name("trusted_influence").is_some());
    let solve = &report(&fx)["influence"]["trusted"];
    assert_eq!(solve["rows"], 1000);
    assert!(solve["converged"].as_bool().unwrap(), "{solve}");
}

#[test]
fn a_trusted_set_with_an_unknown_label_is_an_error() {
    let fx = Fixture::new();
    let input = fx.path("in.parquet");
    write(&input, Kind::Gaussian, Attack::None, 35);
    let trusted = fx.path("trusted.parquet");
    testkit::generate(&Spec {
        kind: Kind::Gaussian,
        classes: 7, // labels 5 and 6 do not exist in the scanned data
        rows_per_class: 20,
        dim: 16,
        attack: Attack::None,
        seed: 35,
    })
    .write_parquet(&trusted, 100)
    .unwrap();
    fx.scan(&input, &["--trusted", trusted.to_str().unwrap()])
        .code(2)
        .stderr(contains("trusted.parquet: trusted-set label `5` is not a class"));
    assert!(!fx.out().join("clean.parquet").exists());
}

#[test]
fn relu_inputs_carry_probs_and_losses_that_feed_their_detectors() {
    let fx = Fixture::new();
    let input = fx.path("relu.parquet");
    let attack = Attack::Backdoor {
        target: 1,
        rate: 0.1,
        strength: 3.0,
    };
    write(&input, Kind::Relu, attack, 36);
    fx.scan(&input, &["--loss-col", "loss"]).success();
    let scores = read_all(&fx.out().join("scores.parquet"));
    assert!(
        scores.column_by_name("model_probs").is_some(),
        "`probs` is found by name"
    );
    assert!(scores.column_by_name("loss_trajectory").is_some());
    let classes = report(&fx)["classes"].as_array().unwrap().clone();
    assert!(classes.iter().all(|c| c["stats"]["loss_trajectory"].is_array()));
}

#[test]
fn probabilities_of_the_wrong_width_are_an_error() {
    let fx = Fixture::new();
    let input = fx.path("relu.parquet");
    write(&input, Kind::Relu, Attack::None, 37);
    // Use the 8-epoch loss column as probabilities: 8 values, but 5 classes.
    fx.scan(&input, &["--probs-col", "loss"])
        .code(2)
        .stderr(contains("probs column `loss` has type vectors of length 8"))
        .stderr(contains("one probability per class"));
}

#[test]
fn a_missing_loss_column_is_named() {
    let fx = Fixture::new();
    let input = fx.path("in.parquet");
    write(&input, Kind::Gaussian, Attack::None, 38);
    fx.scan(&input, &["--loss-col", "epoch_loss"])
        .code(2)
        .stderr(contains("loss column `epoch_loss` not found"))
        .stderr(contains("use --loss-col NAME"));
}

#[test]
fn influence_settings_are_checked_in_pipeline_files() {
    let fx = Fixture::new();
    let input = fx.path("in.parquet");
    write(&input, Kind::Gaussian, Attack::None, 39);
    let pipeline = fx.path("p.toml");
    std::fs::write(
        &pipeline,
        "[input]\npaths = [\"in.parquet\"]\n[output]\ndir = \"out\"\n[detect.influence]\nfolds = 1\n",
    )
    .unwrap();
    super::check_refuses(&pipeline, &["p.toml:6: [detect.influence] `folds` must be in 2..=50"]);
}

#[test]
fn a_trusted_set_with_another_vector_length_is_an_error() {
    let fx = Fixture::new();
    let input = fx.path("in.parquet");
    write(&input, Kind::Gaussian, Attack::None, 40);
    let trusted = fx.path("trusted.parquet");
    testkit::generate(&Spec {
        kind: Kind::Gaussian,
        classes: 5,
        rows_per_class: 20,
        dim: 8, // the scanned data has 16
        attack: Attack::None,
        seed: 40,
    })
    .write_parquet(&trusted, 100)
    .unwrap();
    fx.scan(&input, &["--trusted", trusted.to_str().unwrap()])
        .code(2)
        .stderr(contains(
            "trusted.parquet: trusted-set vectors have 8 dimensions, the scanned data 16",
        ));
    assert!(!fx.out().join("clean.parquet").exists());
}

#[test]
fn a_loss_or_probs_column_of_the_wrong_type_is_named() {
    let fx = Fixture::new();
    let input = fx.path("in.parquet");
    write(&input, Kind::Gaussian, Attack::None, 41);
    fx.scan(&input, &["--loss-col", "source"]).code(2).stderr(contains(
        "loss column `source` has type Utf8, expected a number, or a list of per-epoch losses",
    ));
    fx.scan(&input, &["--probs-col", "label"])
        .code(2)
        .stderr(contains("probs column `label` has type Int64"));
}

#[test]
fn a_group_of_one_class_sitting_inside_another_is_quarantined_as_a_separated_group() {
    // Five clean Gaussian classes, plus 30 records labelled 0 that sit together inside class 1,
    // offset from its centre: their own class is far, their nearest outsiders are class 1's.
    let fx = Fixture::new();
    let input = fx.path("group.parquet");
    let mut data = testkit::generate(&Spec {
        kind: Kind::Gaussian,
        classes: 5,
        rows_per_class: 200,
        dim: 16,
        attack: Attack::None,
        seed: 34,
    });
    let dim = data.dim;
    let class_one: Vec<usize> = (0..data.ids.len()).filter(|&i| data.labels[i] == 1).collect();
    let centre: Vec<f32> = (0..dim)
        .map(|j| class_one.iter().map(|&i| data.x[i * dim + j]).sum::<f32>() / class_one.len() as f32)
        .collect();
    let spread = (class_one
        .iter()
        .map(|&i| (0..dim).map(|j| (data.x[i * dim + j] - centre[j]).powi(2)).sum::<f32>())
        .sum::<f32>()
        / class_one.len() as f32)
        .sqrt();
    let planted: Vec<i64> = (0..30).map(|k| 10_000 + k).collect();
    for (k, &id) in planted.iter().enumerate() {
        // A record of class 1, pulled halfway to an offset point: a clump inside class 1.
        let source = class_one[k];
        for (j, &c) in centre.iter().enumerate() {
            let offset = if j == 0 { 0.6 * spread } else { 0.0 };
            data.x.push(0.5 * data.x[source * dim + j] + 0.5 * (c + offset));
        }
        data.ids.push(id);
        data.labels.push(0);
        data.sources.push("planted".into());
    }
    data.write_parquet(&input, 300).unwrap();
    fx.scan(&input, &[]).success();
    let q = quarantined(&fx);
    for id in &planted {
        let reason = q.iter().find(|(q, _)| q == id).map(|(_, r)| r.as_str());
        assert!(
            reason.is_some_and(|r| r.contains("separated_group")),
            "planted {id}: {reason:?}"
        );
    }
    let report = report(&fx);
    assert_eq!(report["influence"]["knn"]["separated_records"], 30);
    let class_zero = &report["classes"][0];
    assert_eq!(class_zero["label"], "0");
    assert_eq!(class_zero["stats"]["separated_group"][0]["value"], 30.0);
    assert!(class_zero["verdict"]["attacked"].as_bool().unwrap());
}
