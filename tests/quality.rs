//! Detection quality on generated data with seeds never used for tuning (tuning used seeds 1-5;
//! these use 1000+). The thresholds are what the issue asks where the current detectors reach it,
//! and the measured level otherwise (see README "Detection quality" for the full table).

use datavet::pipeline::ScanConfig;
use datavet::testkit::{Attack, Kind, Metrics, Spec, evaluate};

/// 10 classes of `rows` records.
fn spec(kind: Kind, dim: usize, rows: usize, attack: Attack, seed: u64) -> Spec {
    Spec {
        kind,
        classes: 10,
        rows_per_class: rows,
        dim,
        attack,
        seed,
    }
}

fn run(kind: Kind, dim: usize, rows: usize, attack: Attack, seed: u64) -> Metrics {
    let spec = spec(kind, dim, rows, attack, seed);
    let m = evaluate(&spec, &ScanConfig::new(vec![], "unused".into())).expect("evaluation runs");
    eprintln!("{kind:?} d={dim} {attack:?} seed {seed}: {m:?}");
    m
}

/// A Gaussian scan with a backdoor in class 3 (`rate` of it, trigger `strength`), checked to
/// judge exactly that class attacked.
fn backdoor_found(dim: usize, rows: usize, rate: f64, strength: f64, seed: u64) -> Metrics {
    let attack = Attack::Backdoor {
        target: 3,
        rate,
        strength,
    };
    let m = run(Kind::Gaussian, dim, rows, attack, seed);
    assert_eq!(
        m.attacked,
        vec!["3".to_string()],
        "the attacked class is found, seed {seed}"
    );
    m
}

#[test]
fn clean_datasets_stay_quiet() {
    for (seed, dim) in [(1001, 64), (1002, 256), (1003, 128)] {
        let m = run(Kind::Gaussian, dim, 300, Attack::None, seed);
        assert!(
            m.quarantined <= 0.01,
            "clean dataset quarantined {:.2}%",
            100.0 * m.quarantined
        );
        assert!(
            m.attacked.is_empty(),
            "no class of a clean dataset is attacked: {:?}",
            m.attacked
        );
    }
}

#[test]
fn clean_relu_activations_stay_mostly_quiet() {
    // Sparse, heavy-tailed activations of a trained network. Measured on seeds 1000-1004: one run
    // in five judges a clean class attacked (1.7% quarantined); the average stays under 1%.
    let runs: Vec<Metrics> = (1000..1005)
        .map(|seed| run(Kind::Relu, 64, 500, Attack::None, seed))
        .collect();
    let mean = runs.iter().map(|m| m.quarantined).sum::<f64>() / runs.len() as f64;
    assert!(mean <= 0.01, "mean quarantined {:.2}%", 100.0 * mean);
    let loud = runs.iter().filter(|m| !m.attacked.is_empty()).count();
    assert!(loud <= 1, "{loud} of 5 clean runs judged a class attacked");
}

#[test]
fn backdoor_cluster_is_found_in_high_dimensions() {
    // The range is 64-512 dims; 64 is covered by the tests below.
    let mut recalls = Vec::new();
    for (dim, seed, rate) in [
        (256, 1011, 0.05),
        (256, 1012, 0.15),
        (256, 1013, 0.05),
        (512, 1014, 0.05),
        (512, 1015, 0.15),
    ] {
        let m = backdoor_found(dim, 300, rate, 3.0, seed);
        assert!(m.auroc.unwrap() >= 0.95, "AUROC {:?}", m.auroc);
        assert!(m.false_quarantine <= 0.02, "false quarantine {:.3}", m.false_quarantine);
        // The goal is recall >= 0.9. Since 0.2.13 (flags regrown along the group's
        // shift) these runs reach 0.8-1.0, mean 0.96 (0.2.12: 0.8-0.95); 15 poison records in a
        // class of 300 leave little room, so one run may miss a few.
        assert!(m.recall >= 0.75, "recall {:.3}", m.recall);
        recalls.push(m.recall);
    }
    let mean = recalls.iter().sum::<f64>() / recalls.len() as f64;
    assert!(mean >= 0.9, "mean recall {mean:.3}");
}

fn detector_auroc(m: &Metrics, name: &str) -> f64 {
    m.detector_auroc
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, a)| *a)
        .unwrap_or_else(|| panic!("{name} scored the poisoned classes: {:?}", m.detector_auroc))
}

#[test]
fn label_flips_are_caught_by_confident_learning() {
    // 5% random flips: the clustering detectors see no cluster; out-of-fold confident learning
    // marks the flipped records. Measured on seeds 1000-1004: recall 0.89, false quarantine
    // <= 0.03% (Gaussian); recall 0.47-0.56 on ReLU activations of a network trained on the
    // flipped labels (its hidden layer has partly memorised them), ranking AUROC 0.97-0.99.
    for (seed, dim) in [(1021, 128), (1022, 64)] {
        let m = run(Kind::Gaussian, dim, 300, Attack::LabelFlip { rate: 0.05 }, seed);
        assert!(m.recall >= 0.8, "recall {:.3}", m.recall);
        assert!(m.false_quarantine <= 0.01, "false quarantine {:.3}", m.false_quarantine);
        assert!(detector_auroc(&m, "confident_learning") >= 0.95);
    }
    let m = run(Kind::Relu, 64, 500, Attack::LabelFlip { rate: 0.05 }, 1023);
    assert!(detector_auroc(&m, "confident_learning") >= 0.9);
    assert!(m.auroc.unwrap() >= 0.9, "AUROC {:?}", m.auroc);
    assert!(m.recall >= 0.3, "recall {:.3}", m.recall);
    assert!(m.false_quarantine <= 0.02, "false quarantine {:.3}", m.false_quarantine);
}

#[test]
fn injected_near_copies_are_found() {
    // Three groups of ten near-identical records (one input repeated with 1% jitter), labelled
    // with another class. Measured on seeds 1000-1004: recall 1.0 Gaussian, 0.87-1.0 ReLU.
    let attack = Attack::NearCopies {
        target: 3,
        groups: 3,
        copies: 10,
    };
    let m = run(Kind::Gaussian, 64, 500, attack, 1041);
    assert!(m.recall >= 0.95, "recall {:.3}", m.recall);
    assert!(m.false_quarantine <= 0.01, "false quarantine {:.3}", m.false_quarantine);
    let m = run(Kind::Relu, 64, 500, attack, 1042);
    assert!(detector_auroc(&m, "near_duplicates") >= 0.95);
    assert!(m.recall >= 0.6, "recall {:.3}", m.recall);
    assert!(m.false_quarantine <= 0.01, "false quarantine {:.3}", m.false_quarantine);
}

#[test]
fn near_copies_are_found_when_the_dataset_is_denser_than_their_jitter() {
    // Three groups of ten copies in ReLU classes of 3000 (64 dims): the dataset's typical
    // nearest-neighbour distance is now below the copies' jitter, so the distance rule alone
    // found no group on these seeds (recall 0 and 0, 83 and 62 clean records quarantined). The
    // cliff in each copy's neighbour distances finds the groups that are not near-zero vectors:
    // measured recall 0.67 and 0.33 (67 and 28 clean records quarantined); on seeds
    // 1000-1004 recall 0.07 -> 0.47.
    let attack = Attack::NearCopies {
        target: 3,
        groups: 3,
        copies: 10,
    };
    for seed in [1091, 1092] {
        let m = run(Kind::Relu, 64, 3000, attack, seed);
        assert!(
            m.recall >= 0.3,
            "a whole group found, seed {seed}: recall {:.3}",
            m.recall
        );
        assert!(m.false_quarantine <= 0.01, "false quarantine {:.3}", m.false_quarantine);
    }
}

#[test]
fn retrain_check_measures_the_backdoor() {
    // The end-to-end question: retrained on clean.parquet, does the backdoor still work?
    let m = run(
        Kind::Relu,
        64,
        300,
        Attack::Backdoor {
            target: 3,
            rate: 0.15,
            strength: 4.0,
        },
        1031,
    );
    let r = m.retrain.expect("ReLU backdoor cases carry a retrain check");
    eprintln!("retrain: {r:?}");
    assert!(
        r.all_data.attack_success > r.poison_removed.attack_success + 0.2,
        "the planted backdoor works when trained on all data: {r:?}"
    );
    assert!(
        r.poison_removed.clean_accuracy > 0.8,
        "the task itself is learnable: {r:?}"
    );
    assert!(
        r.clean_output.attack_success <= r.all_data.attack_success + 0.05,
        "retraining on clean.parquet never helps the attack: {r:?}"
    );
}

/// Tonight's scan, incremental against yesterday's reference and full, on unseen seeds: the
/// quarantined ids of each, and the ids of tonight's poison.
fn two_nights(kind: Kind, dim: usize, rows: usize, attack: Attack, seed: u64) -> (Vec<i64>, Vec<i64>, Vec<i64>) {
    use datavet::progress::NoProgress;
    let data = datavet::testkit::generate(&spec(kind, dim, rows, attack, seed));
    let new = data.new_rows(0.1);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("data");
    std::fs::create_dir_all(&input).unwrap();
    let tonight = dir.path().join("day2.parquet");
    data.write_split(&new, &input.join("day1.parquet"), &tonight, 500)
        .unwrap();
    let out = dir.path().join("out");
    datavet::pipeline::run_scan(&ScanConfig::new(vec![input.clone()], out.clone()), &NoProgress).unwrap();
    std::fs::rename(&tonight, input.join("day2.parquet")).unwrap();
    let mut incremental = ScanConfig::new(vec![input.clone()], out.clone());
    incremental.reference.since = Some(out.clone());
    let outcome = datavet::pipeline::run_scan(&incremental, &NoProgress).unwrap();
    let summary = outcome.report.incremental.expect("an incremental scan");
    assert!(!summary.refit, "{:?}", summary.refit_reasons);
    let full = dir.path().join("full");
    datavet::pipeline::run_scan(&ScanConfig::new(vec![input], full.clone()), &NoProgress).unwrap();
    let quarantined = |dir: &std::path::Path| -> Vec<i64> {
        let q = std::fs::File::open(dir.join("quarantine.parquet")).unwrap();
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(q)
            .unwrap()
            .build()
            .unwrap()
            .flat_map(|b| {
                let b = b.unwrap();
                let ids = b.column_by_name("id").unwrap();
                let ids = ids.as_any().downcast_ref::<arrow_array::Int64Array>().unwrap();
                ids.values().to_vec()
            })
            .collect()
    };
    let poison = (0..data.ids.len())
        .filter(|&i| new[i] && data.poisoned[i])
        .map(|i| data.ids[i])
        .collect();
    (quarantined(&out), quarantined(&full), poison)
}

#[test]
fn incremental_scans_decide_like_full_scans() {
    // 10% of the rows arrive tonight (poison in proportion). Measured on seeds 1051-1053: the
    // incremental and full scans quarantine the same records but for a few, and catch the same
    // share of tonight's poison.
    for (kind, dim, rows, seed) in [
        (Kind::Gaussian, 256, 300, 1051),
        (Kind::Gaussian, 64, 500, 1052),
        (Kind::Relu, 128, 300, 1053),
    ] {
        let attack = Attack::Backdoor {
            target: 3,
            rate: 0.1,
            strength: 3.0,
        };
        let (inc, full, poison) = two_nights(kind, dim, rows, attack, seed);
        let (inc_set, full_set): (std::collections::HashSet<i64>, std::collections::HashSet<i64>) =
            (inc.iter().copied().collect(), full.iter().copied().collect());
        let differ = inc_set.symmetric_difference(&full_set).count();
        let caught = |set: &std::collections::HashSet<i64>| poison.iter().filter(|p| set.contains(p)).count();
        eprintln!(
            "{kind:?} d={dim} seed {seed}: incremental {} full {} differ {differ}; tonight's poison {} caught {} / {}",
            inc.len(),
            full.len(),
            poison.len(),
            caught(&inc_set),
            caught(&full_set)
        );
        assert!(differ <= 3 + full.len() / 10, "{differ} of {} differ", full.len());
        assert!(
            caught(&inc_set) + 1 >= caught(&full_set),
            "tonight's poison caught as a full scan would"
        );
    }
}

#[test]
fn a_tight_cluster_is_found_where_the_spectrum_misses_it() {
    // 15% triggered records, tight and modestly offset, in 64 dims: SPECTRE's robust fit can
    // centre on such a group, and a 2-means split halves the class instead; the density
    // detector finds the class and its dense records. Measured on seeds 1000-1004 before it:
    // the class found in 2 of 5 runs, recall 0.48; with it: 5 of 5, recall 0.76; with the dense
    // core regrown to the whole cluster (detect::untangle): recall 0.84. On these seeds the
    // dense records alone reach 0.83-0.93, regrown 0.99-1.0.
    for seed in [1061, 1062, 1063] {
        let m = backdoor_found(64, 500, 0.15, 3.0, seed);
        assert!(m.recall >= 0.95, "recall {:.3}", m.recall);
        assert!(m.false_quarantine <= 0.01, "false quarantine {:.3}", m.false_quarantine);
    }
}

#[test]
fn a_one_percent_cluster_is_found_in_classes_large_enough_to_hold_one() {
    // 1% of a 3000-record class is 30 triggered records, 64 dims. SPECTRE ranks them first
    // (in-class AUROC 1.0), and its whitened top eigenvalue is ~1.45 against ~1.05 for clean
    // classes; the anomaly comparison's spread floor (0.1 on the log scale) used to hide that
    // (found in 1 of 5 runs on seeds 1000-1004, recall 0.20); with 0.05: 5 of 5, recall 1.0.
    for seed in [1071, 1072] {
        let m = backdoor_found(64, 3000, 0.01, 4.0, seed);
        assert!(m.recall >= 0.9, "recall {:.3}", m.recall);
        assert!(m.false_quarantine <= 0.01, "false quarantine {:.3}", m.false_quarantine);
    }
}

/// Runs on `seeds` with a 1% backdoor of strength 4 in class 3 of 10 Gaussian classes of `rows`
/// records in `dim` dims: no class but the target may be judged attacked, nor more than
/// `max_false_quarantine` of the clean records quarantined; how many runs judged the target with
/// `min_recall` of its records quarantined.
fn one_percent_backdoors_found(
    dim: usize,
    rows: usize,
    seeds: std::ops::Range<u64>,
    min_recall: f64,
    max_false_quarantine: f64,
) -> usize {
    let attack = Attack::Backdoor {
        target: 3,
        rate: 0.01,
        strength: 4.0,
    };
    let mut found = 0;
    for seed in seeds {
        let m = run(Kind::Gaussian, dim, rows, attack, seed);
        assert!(
            m.attacked.is_empty() || m.attacked == ["3"],
            "seed {seed}: only the target may be judged attacked: {:?}",
            m.attacked
        );
        assert!(
            m.false_quarantine <= max_false_quarantine,
            "seed {seed}: false quarantine {:.4}",
            m.false_quarantine
        );
        found += (m.attacked == ["3"] && m.recall >= min_recall) as usize;
    }
    found
}

#[test]
fn a_one_percent_cluster_of_five_records_is_found_by_its_shared_shift() {
    // 1% of a 500-record class is 5 triggered records, 64 dims: too few to move the class's
    // spectrum (SPECTRE's signal stayed under its bound on the tuning seeds), but each stands far
    // out along the others' mean direction in the class's whitened space (detect::shared_shift).
    // Tuning seeds 11-20: found in 1 of 10 runs before it, 9 of 10 with it; these seeds: 8 of 10
    // (1082 and 1083 missed: their groups stood out under the bound).
    let found = one_percent_backdoors_found(64, 500, 1081..1091, 0.8, 0.005);
    assert!(found >= 7, "found in {found} of 10 runs");
}

#[test]
fn three_records_shifted_together_in_a_class_of_few_records_per_dimension_are_found() {
    // 1% of a 300-record class at 256 dims is 3 triggered records, 1.2 records per dimension:
    // the shared shift's few-records search (harder shrinkage, groups of 3).
    // Tuning seeds 11-20: recall 0.300 -> 0.600. These seeds: found in 3 of 10 runs before it,
    // 6 with it (1092, 1096 and 1100 are missed by every detector; 1091 is found in part).
    let found = one_percent_backdoors_found(256, 300, 1091..1101, 0.6, 0.005);
    assert!(found >= 5, "found in {found} of 10 runs");
}

#[test]
fn three_records_off_their_class_shell_are_found() {
    // 1% of a 300-record class at 512 dims: 3 triggered records whose source classes spread
    // more or less than the target's share too little direction for a group, but lie inside or
    // outside the class's shell of whitened lengths (detect::shared_shift, 0.2.51). These seeds
    // (fresh, first run when it was built): found in 4 of 10 runs before it, 7 with it (7003 is
    // missed by every detector; 7004 and 7007 are found in part, 2 of 3).
    let found = one_percent_backdoors_found(512, 300, 7000..7010, 0.9, 0.01);
    assert!(found >= 6, "found in {found} of 10 runs");
}

#[test]
fn relu_poison_held_apart_from_its_class_is_found_in_large_classes() {
    // A trained ReLU layer, 3000 records per class, 5% backdoor (64 dims): no class statistic
    // tells the attacked class from clean classes with natural lobes (before 0.2.14 the class
    // was picked in none of the 5 tuning runs nor of 5 runs on seeds 1000-1004). The poison,
    // taken from other classes, is often a population of its own in the neighbour graph whose
    // nearest outsiders are those classes (`influence::separated`). Where the graph links it to
    // its class only the distance analysis can find it: on these seeds (first run here, 0.2.14)
    // the class was found in 1 of 5 runs, seed 1113, recall 0.90; since 0.2.20's direction split
    // in 2 of 5 (1113, 1114), recall 0.91-0.93; on 0.2.25's clipped-training layers in 4 of 5,
    // recall 0.973-1.0.
    relu_target_found(64, 3000, 0.05, 3.0, 2, 0.85);
}

#[test]
fn a_relu_backdoor_in_large_classes_is_split_from_its_class_by_direction() {
    // 15% of a class of 3000 (64 units): k-means on positions splits such a class into long
    // and short records, poison on both sides, and its cluster was closer to another class in
    // none of 5 runs on seeds 1000-1004 (recall 0.085). The distance analysis splits directions
    // (0.2.20): on these seeds (first run here) the class found in 4 of 5 runs, recall 0.91-1.0
    // there; seeds 1000-1004: recall 0.342, 128 dims 0.332 -> 0.874. Since 0.2.25's generator
    // (clipped training, no more dead units) found in 5 of 5, recall 0.998, 1.0, 0.469, 1.0, 1.0.
    relu_target_found(64, 3000, 0.15, 3.0, 4, 0.85);
}

/// Five ReLU runs of `rows` records per class (seeds 1111-1115), a backdoor in class 3: in at least
/// `min_found` of them the class is judged attacked and at least `min_recall` of its poison
/// quarantined.
fn relu_target_found(dim: usize, rows: usize, rate: f64, strength: f64, min_found: usize, min_recall: f64) {
    relu_target_found_in(1111..1116, dim, rows, rate, strength, min_found, min_recall);
}

/// [`relu_target_found`] over `seeds`.
fn relu_target_found_in(
    seeds: std::ops::Range<u64>,
    dim: usize,
    rows: usize,
    rate: f64,
    strength: f64,
    min_found: usize,
    min_recall: f64,
) {
    let attack = Attack::Backdoor {
        target: 3,
        rate,
        strength,
    };
    let runs: Vec<Metrics> = seeds.map(|seed| run(Kind::Relu, dim, rows, attack, seed)).collect();
    let summaries: Vec<String> = runs
        .iter()
        .map(|m| format!("attacked {:?} recall {:.3}", m.attacked, m.recall))
        .collect();
    let good = runs
        .iter()
        .filter(|m| m.attacked.contains(&"3".to_string()) && m.recall >= min_recall)
        .count();
    assert!(
        good >= min_found,
        "{good} of {} runs found the target class at recall {min_recall}: {summaries:?}",
        runs.len()
    );
}

#[test]
fn a_one_percent_relu_backdoor_is_found_through_mutual_neighbours() {
    // 30 poisoned records among 3000 per class on a trained ReLU layer (128 units): a loose group
    // tied to its class only by its own records' neighbour lists, which the mutual-neighbour
    // graph sets apart (`influence::separated`, 0.2.16). Measured on these seeds: the class found
    // in 4 of 5 runs, recall 0.83-1.0 there; on the grid's seeds 1000-1004 (README) recall 0.993
    // over all 5 runs (0.647 before). 0.2.25's clipped-training layers: found in 4 of 5, recall
    // 0.833-1.0; seeds 1000-1004 recall 0.813.
    relu_target_found(128, 3000, 0.01, 4.0, 3, 0.75);
}

#[test]
fn a_relu_backdoor_cluster_closer_to_other_classes_is_found() {
    // 15% of a class of 500 (64 units), made of other classes' inputs with a trigger: a second
    // mode of the class like the lobes clean classes have, whose k = 2 cluster sits closer to
    // another class's median than to its own (`detect::distance_analysis`, 0.2.19). Measured on
    // these seeds (first run here): the class found in 5 of 5 runs, recall 0.96-1.0 (0.2.18: 4
    // of 5, recall 0.76-1.0 there, 0.744 over the five); seeds 1000-1004: recall 0.56 -> 1.0.
    // 0.2.25's clipped-training layers: 5 of 5, recall 1.0; seeds 1000-1004 0.80.
    relu_target_found(64, 500, 0.15, 3.0, 4, 0.9);
}

#[test]
fn a_relu_backdoor_of_five_records_is_found_by_where_its_class_s_tail_comes_from() {
    // 1% of 500 records per class (5 poisoned, 64 units): the class's SPECTRE eigenvalue is
    // usually like the other classes', but the top of its SPECTRE scores holds the poison: a
    // group whose nearest records outside the tail are other classes' (score::other_inputs,
    // 0.2.27), or whose neighbours have other labels and whose label a surrogate trained without
    // it doubts ("A tail of other classes' inputs", 0.2.26). Measured on these seeds: the class
    // found in 10 of 15 runs, recall 1.0 in each; with 0.2.26's rules in 5, with neither in 3.
    // Seeds 1000-1004 (README): recall 0.64 -> 0.80. Asks for 8: two runs of slack, more than
    // 0.2.26 gives.
    relu_target_found_in(1111..1126, 64, 500, 0.01, 4.0, 8, 0.8);
}

#[test]
fn a_relu_backdoor_of_three_records_is_found_by_its_trigger_s_fingerprint() {
    // 1% of 300 records per class (3 poisoned, 128 units), where neither a class signal nor the
    // tail rules speak: the top of the class's SPECTRE ranking holds records that look like
    // other classes' inputs and share what their source classes' records lack
    // (score::fingerprint, 0.2.30). Measured on these seeds (first run here): found in 12 of 20
    // runs at recall 0.6 or more; 10 without the rule. From 0.2.39 a pair of such records passes
    // in classes this small: 15 of 20 (13 on 0.2.38). Asks for 14.
    relu_target_found_in(3100..3120, 128, 300, 0.01, 4.0, 14, 0.6);
}

#[test]
fn a_relu_backdoor_of_twenty_five_records_is_found_by_its_group_of_other_classes_inputs() {
    // 5% of 500 records per class (64 units): in some runs no class signal stands out and
    // deep k-NN misses the poison, whose nearest records are each other; set the class's SPECTRE
    // tail aside and their nearest are the classes their inputs came from (score::other_inputs,
    // 0.2.27). Measured on these seeds (first run here): found in 19 of 20 runs, recall 1.0 in
    // each; without that rule 17. Asks for 18.
    relu_target_found_in(1300..1320, 64, 500, 0.05, 3.0, 18, 0.8);
}

#[test]
fn a_relu_backdoor_in_large_classes_is_regrown_without_the_class_s_tail() {
    // 1% of a class of 3000 (64 units): where the class is found, its flags are regrown to the
    // poison's population. Fisher's discriminant, fitted on them in a class this heavy-tailed,
    // took in the class's own records by the dozen; the line between the flags' centroid and
    // the rest's holds the poison as a narrow mode (`untangle::population_along_centroids`,
    // 0.2.28). On these seeds (first run here), in the 4 runs that found the class: false
    // quarantine 0.0010-0.0037 before, 0.00003-0.0020 now; recall 1.0, 0.767, 1.0, 1.0 before,
    // 1.0 in each now.
    let attack = Attack::Backdoor {
        target: 3,
        rate: 0.01,
        strength: 4.0,
    };
    let runs: Vec<Metrics> = (1111..1116)
        .map(|seed| run(Kind::Relu, 64, 3000, attack, seed))
        .collect();
    let summaries: Vec<String> = runs
        .iter()
        .map(|m| {
            format!(
                "attacked {:?} recall {:.3} FQR {:.5}",
                m.attacked, m.recall, m.false_quarantine
            )
        })
        .collect();
    let good = runs
        .iter()
        .filter(|m| m.attacked == ["3"] && m.recall >= 0.9 && m.false_quarantine <= 0.0015)
        .count();
    assert!(
        good >= 3,
        "{good} of 5 runs found the class at recall 0.9, FQR 0.0015: {summaries:?}"
    );
}
