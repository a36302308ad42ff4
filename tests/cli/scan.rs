//! Scans that succeed: every real-writer file, conservation and pass-through, exit codes,
//! determinism, atomic replacement and skipped classes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, ArrayRef, RecordBatch, UInt32Array};
use arrow_select::concat::concat_batches;
use arrow_select::take::take;
use datavet::testkit::{self, Attack, Kind, Spec};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use predicates::str::contains;

use super::{Fixture, datavet};

/// Every batch of one Parquet file (or of every `*.parquet` in a directory) as one batch.
fn read_all(path: &Path) -> RecordBatch {
    let files = datavet::io::list_input_files(&[path.to_path_buf()]).unwrap();
    let mut batches = Vec::new();
    let mut schema = None;
    for f in files {
        let builder = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(f).unwrap()).unwrap();
        schema = Some(builder.schema().clone());
        batches.extend(builder.build().unwrap().map(|b| b.unwrap()));
    }
    concat_batches(&schema.unwrap(), &batches).unwrap()
}

fn id_text(col: &ArrayRef, i: usize) -> String {
    let col = &datavet::io::decoded(col);
    match col.data_type() {
        arrow_schema::DataType::Int64 => col.as_primitive::<Int64Type>().value(i).to_string(),
        _ => col.as_string::<i32>().value(i).to_string(),
    }
}

/// Asserts that clean + quarantine hold every input row once, with every input column equal.
fn assert_rows_conserved(input: &Path, out: &Path) {
    let input = read_all(input);
    let clean = read_all(&out.join("clean.parquet"));
    let quarantine = read_all(&out.join("quarantine.parquet"));
    assert_eq!(
        clean.schema().fields(),
        input.schema().fields(),
        "clean keeps the input schema"
    );
    assert_eq!(clean.num_rows() + quarantine.num_rows(), input.num_rows());
    let n_cols = input.num_columns();
    let quarantine = quarantine.project(&(0..n_cols).collect::<Vec<_>>()).unwrap();
    let both = concat_batches(
        &clean.schema(),
        &[clean, quarantine.with_schema(input.schema()).unwrap()],
    )
    .unwrap();
    let id = input.schema().index_of("id").unwrap();
    let position: HashMap<String, u32> = (0..both.num_rows())
        .map(|i| (id_text(both.column(id), i), i as u32))
        .collect();
    assert_eq!(position.len(), input.num_rows(), "no id twice in the outputs");
    let order = UInt32Array::from(
        (0..input.num_rows())
            .map(|i| position[&id_text(input.column(id), i)])
            .collect::<Vec<_>>(),
    );
    for c in 0..n_cols {
        let reordered = take(both.column(c).as_ref(), &order, None).unwrap();
        assert_eq!(
            reordered.to_data(),
            input.column(c).to_data(),
            "column `{}` changed",
            input.schema().field(c).name()
        );
    }
}

/// A `date64` column as pyarrow stores it (a Parquet DATE, INT32 days, with an Arrow schema
/// saying date64) passes through as that DATE column, in copied and in rewritten row groups.
/// Read as date64, it was written back as plain INT64, which pyarrow reads as integers. Beside a
/// file where arrow-rs stored the date64 as INT64, the dataset takes the first file's type.
#[test]
fn a_date64_column_stored_as_days_passes_through_as_days() {
    use arrow_array::Date64Array;
    use parquet::basic::Type as PhysicalType;
    let fx = Fixture::new();
    let planted = fx.path("planted.parquet");
    let data = backdoored(&planted, 6, 32, 0.1, 14);
    let batch = data.to_batch();
    let days: Vec<i64> = (0..batch.num_rows() as i64)
        .map(|i| (19_000 + i) * 86_400_000)
        .collect();
    let mut columns = batch.columns().to_vec();
    columns.push(std::sync::Arc::new(Date64Array::from(days.clone())));
    let mut fields: Vec<arrow_schema::FieldRef> = batch.schema().fields().iter().cloned().collect();
    fields.push(std::sync::Arc::new(arrow_schema::Field::new(
        "day",
        arrow_schema::DataType::Date64,
        false,
    )));
    let with_day = RecordBatch::try_new(std::sync::Arc::new(arrow_schema::Schema::new(fields)), columns).unwrap();
    let input = fx.path("in");
    std::fs::create_dir_all(&input).unwrap();
    // a.parquet pyarrow's way: the DATE type on disk, the Arrow schema's date64 beside it;
    // b.parquet (the last 300 rows) arrow-rs's: plain INT64. One dataset, as the first file's.
    let split = with_day.num_rows() - 300;
    write_dates(&input.join("a.parquet"), &with_day.slice(0, split), true, 300);
    write_dates(&input.join("b.parquet"), &with_day.slice(split, 300), false, 300);
    fx.scan(&input, &[]).success();
    let mut seen = Vec::new();
    for file in ["clean.parquet", "quarantine.parquet"] {
        let path = fx.out().join(file);
        assert_eq!(leaf_physical_type(&path, "day"), PhysicalType::INT32, "{file}");
        let out = super::read_all(&path);
        let ids = out.column_by_name("id").unwrap().as_primitive::<Int64Type>();
        let day = out.column_by_name("day").unwrap();
        assert_eq!(day.data_type(), &arrow_schema::DataType::Date32, "{file}");
        let day = day.as_primitive::<arrow_array::types::Date32Type>();
        for r in 0..out.num_rows() {
            seen.push((ids.value(r), day.value(r) as i64 * 86_400_000));
        }
    }
    let input_ids = batch.column_by_name("id").unwrap().as_primitive::<Int64Type>();
    let mut expected: Vec<(i64, i64)> = (0..batch.num_rows()).map(|r| (input_ids.value(r), days[r])).collect();
    seen.sort();
    expected.sort();
    assert!(seen == expected, "every record's day, once");
    assert!(
        parquet_rows(&fx.out().join("quarantine.parquet")) > 0,
        "rewritten groups too"
    );
    // As the source column: one ISO day per record, whichever way its file stores it.
    fx.scan(&input, &["--source-col", "day"]).success();
    let scores = super::read_all(&fx.out().join("scores.parquet"));
    let sources = scores.column_by_name("day").unwrap().as_string::<i32>();
    let distinct: std::collections::HashSet<&str> = sources.iter().flatten().collect();
    assert_eq!(distinct.len(), batch.num_rows());
    assert!(
        distinct.contains("2022-01-08"),
        "{:?}",
        distinct.iter().take(3).collect::<Vec<_>>()
    );
    // A date64 with a time of day beside the first file's date32 would lose it: refused at ingest,
    // naming the file's own row (not its batch's), and the outputs above stay as they were.
    let mut afternoon = days[split..].to_vec();
    afternoon[250] += 3_600_000;
    let mut columns = with_day.slice(split, 300).columns().to_vec();
    *columns.last_mut().unwrap() = std::sync::Arc::new(Date64Array::from(afternoon));
    let rows = RecordBatch::try_new(with_day.schema(), columns).unwrap();
    write_dates(&input.join("b.parquet"), &rows, false, 200);
    let before = std::fs::read(fx.out().join("clean.parquet")).unwrap();
    fx.scan(&input, &[])
        .code(2)
        .stderr(contains("b.parquet: column `day`, row 250 (0-based)"))
        .stderr(contains("not a whole day"))
        .stderr(contains("a.parquet"));
    assert!(std::fs::read(fx.out().join("clean.parquet")).unwrap() == before);
}

/// The Parquet physical type of the (first) leaf of top-level column `column` in the file at `path`.
fn leaf_physical_type(path: &Path, column: &str) -> parquet::basic::Type {
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap()).unwrap();
    let leaf = reader
        .parquet_schema()
        .columns()
        .iter()
        .find(|c| c.path().parts()[0] == column)
        .unwrap_or_else(|| panic!("{}: no column `{column}`", path.display()));
    leaf.physical_type()
}

/// Writes `rows` as a Parquet file in row groups of `group_rows`: with `coerce`, pyarrow's way
/// for a date64 (a Parquet DATE of INT32 days, the Arrow schema's date64 beside it), else
/// arrow-rs's (INT64 milliseconds).
fn write_dates(path: &Path, rows: &RecordBatch, coerce: bool, group_rows: usize) {
    let props = parquet::file::properties::WriterProperties::builder()
        .set_coerce_types(coerce)
        .set_max_row_group_row_count(Some(group_rows))
        .build();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, rows.schema(), Some(props)).unwrap();
    writer.write(rows).unwrap();
    writer.close().unwrap();
}

/// A list of `date64` that pyarrow stored as Parquet DATEs passes through as such a list: read
/// as its Arrow schema's date64, it was written back as INT64. Beside a file where arrow-rs
/// stored the list as INT64 milliseconds it is one dataset (the first file's type, either way
/// round), and a value there that is not a whole day is refused, naming its record's row.
#[test]
fn a_list_of_date64_stored_as_days_passes_through_as_days() {
    use arrow_array::builder::{Date64Builder, ListBuilder};
    use parquet::basic::Type as PhysicalType;
    const DAY: i64 = 86_400_000;
    let fx = Fixture::new();
    let batch = backdoored(&fx.path("planted.parquet"), 6, 32, 0.1, 15).to_batch();
    let with_days = |past_midnight_at: usize| {
        let mut days = ListBuilder::new(Date64Builder::new());
        for i in 0..batch.num_rows() {
            let first = (19_000 + i as i64) * DAY;
            days.values().append_value(first);
            days.values()
                .append_value(first + DAY + if i == past_midnight_at { 3_600_000 } else { 0 });
            days.append(true);
        }
        let days = days.finish();
        let mut fields: Vec<arrow_schema::FieldRef> = batch.schema().fields().iter().cloned().collect();
        fields.push(std::sync::Arc::new(arrow_schema::Field::new(
            "days",
            days.data_type().clone(),
            true,
        )));
        let mut columns = batch.columns().to_vec();
        columns.push(std::sync::Arc::new(days));
        RecordBatch::try_new(std::sync::Arc::new(arrow_schema::Schema::new(fields)), columns).unwrap()
    };
    let input = fx.path("in");
    std::fs::create_dir_all(&input).unwrap();
    let split = batch.num_rows() - 300;
    // `days_first`: a.parquet (the first file) pyarrow's way, b.parquet arrow-rs's; else the other
    // way round, and the outputs hold milliseconds.
    let write = |rows: &RecordBatch, days_first: bool| {
        write_dates(&input.join("a.parquet"), &rows.slice(0, split), days_first, 300);
        write_dates(&input.join("b.parquet"), &rows.slice(split, 300), !days_first, 200);
    };
    let first_id = batch.column(0).as_primitive::<Int64Type>().value(0);
    for days_first in [true, false] {
        write(&with_days(usize::MAX), days_first);
        fx.scan(&input, &[]).success();
        let mut rows = 0;
        for file in ["clean.parquet", "quarantine.parquet"] {
            let path = fx.out().join(file);
            let stored = if days_first {
                PhysicalType::INT32
            } else {
                PhysicalType::INT64
            };
            assert_eq!(leaf_physical_type(&path, "days"), stored, "{file}");
            let out = super::read_all(&path);
            let ids = out.column_by_name("id").unwrap().as_primitive::<Int64Type>();
            let lists = out.column_by_name("days").unwrap().as_list::<i32>();
            for r in 0..out.num_rows() {
                let values = lists.value(r);
                let days: Vec<i64> = if days_first {
                    let v = values.as_primitive::<arrow_array::types::Date32Type>();
                    v.values().iter().map(|&d| d as i64).collect()
                } else {
                    let v = values.as_primitive::<arrow_array::types::Date64Type>();
                    v.values().iter().map(|&ms| ms / DAY).collect()
                };
                let first = 19_000 + ids.value(r) - first_id;
                assert_eq!(days, vec![first, first + 1], "{file} row {r}");
            }
            rows += out.num_rows();
        }
        assert_eq!(rows, batch.num_rows());
    }
    write(&with_days(split + 250), true);
    fx.scan(&input, &[])
        .code(2)
        .stderr(contains("b.parquet: column `days`, row 250 (0-based)"))
        .stderr(contains("not a whole day"));
}

/// Two columns of one name, an integer and a date64 stored as days in one file and as
/// milliseconds in the other: the date is checked as itself (it was read by name, found the
/// integer column and panicked).
#[test]
fn a_date64_beside_a_column_of_its_name_is_checked_as_itself() {
    let fx = Fixture::new();
    let batch = backdoored(&fx.path("planted.parquet"), 6, 32, 0.1, 16).to_batch();
    let (n, split) = (batch.num_rows(), batch.num_rows() - 300);
    let input = fx.path("in");
    std::fs::create_dir_all(&input).unwrap();
    let write = |past_midnight_at: usize| {
        let mut fields: Vec<arrow_schema::FieldRef> = batch.schema().fields().iter().cloned().collect();
        fields.push(std::sync::Arc::new(arrow_schema::Field::new(
            "d",
            arrow_schema::DataType::Int64,
            false,
        )));
        fields.push(std::sync::Arc::new(arrow_schema::Field::new(
            "d",
            arrow_schema::DataType::Date64,
            false,
        )));
        let mut columns = batch.columns().to_vec();
        columns.push(std::sync::Arc::new(arrow_array::Int64Array::from_iter_values(
            0..n as i64,
        )));
        let days = (0..n).map(|i| i as i64 * 86_400_000 + if i == past_midnight_at { 60_000 } else { 0 });
        columns.push(std::sync::Arc::new(arrow_array::Date64Array::from_iter_values(days)));
        let rows = RecordBatch::try_new(std::sync::Arc::new(arrow_schema::Schema::new(fields)), columns).unwrap();
        write_dates(&input.join("a.parquet"), &rows.slice(0, split), true, 300);
        write_dates(&input.join("b.parquet"), &rows.slice(split, 300), false, 300);
    };
    write(usize::MAX);
    fx.scan(&input, &[]).success();
    assert_eq!(
        parquet_rows(&fx.out().join("clean.parquet")) + parquet_rows(&fx.out().join("quarantine.parquet")),
        n
    );
    write(split + 100);
    fx.scan(&input, &[])
        .code(2)
        .stderr(contains("b.parquet: column `d`, row 100 (0-based)"));
}

#[test]
fn every_real_writer_file_scans_and_conserves_rows() {
    let files = [
        ("pyarrow_list_f32.parquet", 2000),
        ("pyarrow_largelist_f64.parquet", 1500),
        ("pyarrow_fixed_f16.parquet", 2000),
        ("pyarrow_fixed_f32_strid_dictlabel.parquet", 2000),
        ("pyarrow_list_f32_rg250_zstd.parquet", 2000),
        ("pyarrow_list_f32_gzip.parquet", 1000),
        ("pyarrow_list_f32_uncompressed.parquet", 1000),
        ("pyarrow_list_f32_brotli.parquet", 1000),
        ("pyarrow_list_f32_lz4.parquet", 1000),
        ("pyarrow_dataset_dir", 3000),
        ("pyarrow_list_f32_pagev2.parquet", 2000),
        ("pyarrow_extra_columns.parquet", 2000),
        ("pyarrow_list_f32_legacy_item.parquet", 1000),
        ("pyarrow_fixed_f32_no_arrow_schema.parquet", 1000),
        ("pandas_pyarrow_index.parquet", 1000),
        ("polars_list_f32.parquet", 2000),
        ("polars_array_f32.parquet", 2000),
        ("polars_list_f32_no_stats.parquet", 2000),
        ("duckdb_list_float.parquet", 2000),
        ("duckdb_array_float.parquet", 2000),
        ("pyspark_default.parquet", 2000),
        ("pyspark_legacy_2level.parquet", 2000),
        ("pyspark_legacy_bag.parquet", 2000),
        ("pyspark_default_dir", 2000),
        ("pyarrow_hostile_strings.parquet", 1200),
    ];
    for (name, rows) in files {
        let Some(input) = Fixture::format(name) else { return };
        let fx = Fixture::new();
        fx.scan(&input, &["-q"]).success();
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(fx.out().join("report.json")).unwrap()).unwrap();
        assert_eq!(report["totals"]["rows"], rows, "{name}");
        assert_eq!(report["conservation"]["ok"], true, "{name}");
        assert_eq!(report["conservation"]["checked"], "ids", "{name}");
        assert_rows_conserved(&input, &fx.out());
    }
}

#[test]
fn ambiguous_file_scans_with_the_flag() {
    let Some(input) = Fixture::format("ambiguous_two_vector_columns.parquet") else {
        return;
    };
    let fx = Fixture::new();
    fx.scan(&input, &["--activations-col", "vec_b"])
        .success()
        .stdout(contains("2000 rows"));
}

#[test]
fn feature_columns_scan_with_the_flag() {
    let Some(input) = Fixture::format("fastparquet_feature_columns.parquet") else {
        return;
    };
    let cols = (0..16).map(|i| format!("f{i:02}")).collect::<Vec<_>>().join(",");
    let fx = Fixture::new();
    fx.scan(&input, &["--feature-cols", &cols])
        .success()
        .stdout(contains("1000 rows"));
    assert_rows_conserved(&input, &fx.out());
}

/// A generated dataset with a planted backdoor in class 3, written to `path`.
fn planted(path: &Path, seed: u64) -> testkit::Synthetic {
    backdoored(path, 6, 128, 0.1, seed)
}

/// `classes` Gaussian classes of 300 records in `dim` dimensions, `rate` of class 3 a backdoor
/// cluster (strength 4), written to `path`.
fn backdoored(path: &Path, classes: usize, dim: usize, rate: f64, seed: u64) -> testkit::Synthetic {
    backdoored_at(path, classes, 300, dim, rate, seed)
}

/// [`backdoored`] with `rows` records per class.
fn backdoored_at(path: &Path, classes: usize, rows: usize, dim: usize, rate: f64, seed: u64) -> testkit::Synthetic {
    let spec = Spec {
        kind: Kind::Gaussian,
        classes,
        rows_per_class: rows,
        dim,
        attack: Attack::Backdoor {
            target: 3,
            rate,
            strength: 4.0,
        },
        seed,
    };
    let data = testkit::generate(&spec);
    data.write_parquet(path, 500).unwrap();
    data
}

/// A generated ReLU layer of 10 classes x 300 records x 128 units, `rate` of class 3 a backdoor
/// of `strength`, written to `path`.
fn relu_backdoored(path: &Path, rate: f64, strength: f64, seed: u64) -> testkit::Synthetic {
    relu_backdoored_at(path, 300, 128, rate, strength, seed)
}

/// [`relu_backdoored`] with `rows` records per class and `dim` units.
fn relu_backdoored_at(path: &Path, rows: usize, dim: usize, rate: f64, strength: f64, seed: u64) -> testkit::Synthetic {
    let spec = Spec {
        kind: Kind::Relu,
        classes: 10,
        rows_per_class: rows,
        dim,
        attack: Attack::Backdoor {
            target: 3,
            rate,
            strength,
        },
        seed,
    };
    let data = testkit::generate(&spec);
    data.write_parquet(path, 1000).unwrap();
    data
}

/// How many of `data`'s poisoned records the scan in `fx` quarantined, and how many it
/// quarantined in all.
fn poisoned_found(fx: &Fixture, data: &testkit::Synthetic) -> (usize, usize) {
    let q = read_all(&fx.out().join("quarantine.parquet"));
    let ids = q.column_by_name("id").unwrap().as_primitive::<Int64Type>();
    let poisoned: Vec<i64> = data.poisoned_ids();
    let found = ids.values().iter().filter(|id| poisoned.contains(id)).count();
    (found, q.num_rows())
}

#[test]
fn outputs_hold_scores_and_reasons() {
    let fx = Fixture::new();
    let input = fx.path("in.parquet");
    let data = planted(&input, 11);
    fx.scan(&input, &[]).success().stdout(contains("attacked classes: 3"));
    let scores = read_all(&fx.out().join("scores.parquet"));
    let names: Vec<String> = scores.schema().fields().iter().map(|f| f.name().clone()).collect();
    for col in [
        "id",
        "label",
        "activation_clustering",
        "spectral",
        "spectre",
        "suspicion",
        "quarantined",
        "reasons",
    ] {
        assert!(
            names.contains(&col.to_string()),
            "scores.parquet lacks {col}: {names:?}"
        );
    }
    assert_eq!(scores.num_rows(), data.ids.len());
    let q = read_all(&fx.out().join("quarantine.parquet"));
    assert!(q.num_rows() > 0);
    let reasons = q.column_by_name("reasons").unwrap().as_string::<i32>();
    assert!(reasons.iter().all(|r| r.unwrap().contains("class `3` attacked")));
    let suspicion = q
        .column_by_name("suspicion")
        .unwrap()
        .as_primitive::<arrow_array::types::Float64Type>();
    assert!(suspicion.values().iter().all(|&s| (0.5..=1.0).contains(&s)));
    assert_rows_conserved(&input, &fx.out());
}

/// Ids written as a categorical (pandas, polars: dictionary-encoded strings) key the records by
/// their values: the scan conserves them, scores.parquet names them, a release finds them.
#[test]
fn dictionary_encoded_ids_key_the_records() {
    let fx = Fixture::new();
    let input = fx.path("in.parquet");
    let data = planted(&fx.path("plain.parquet"), 11);
    let batch = data.to_batch();
    let ids: arrow_array::DictionaryArray<arrow_array::types::Int32Type> = data
        .ids
        .iter()
        .map(|id| format!("rec-{id}"))
        .collect::<Vec<_>>()
        .iter()
        .map(String::as_str)
        .collect();
    let mut columns = batch.columns().to_vec();
    columns[0] = std::sync::Arc::new(ids);
    let mut fields: Vec<arrow_schema::Field> = batch.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields[0] = arrow_schema::Field::new("id", columns[0].data_type().clone(), false);
    let batch = RecordBatch::try_new(std::sync::Arc::new(arrow_schema::Schema::new(fields)), columns).unwrap();
    super::write_batch(&input, &batch);
    fx.scan(&input, &["-q"]).success();
    let report = report_of(&fx);
    assert_eq!(report["conservation"]["ok"], true);
    assert_eq!(report["conservation"]["checked"], "ids");
    assert_rows_conserved(&input, &fx.out());
    let quarantined = read_all(&fx.out().join("quarantine.parquet"));
    assert!(quarantined.num_rows() > 0);
    let scores = read_all(&fx.out().join("scores.parquet"));
    let keys = scores.column_by_name("id").unwrap().as_string::<i32>();
    assert!(
        keys.iter().all(|k| k.unwrap().starts_with("rec-")),
        "keys are the values, not dictionary indices"
    );
    let released = id_text(quarantined.column(0), 0);
    std::fs::write(fx.path("ids.txt"), format!("{released}\n")).unwrap();
    datavet()
        .args(["release", fx.out().to_str().unwrap(), "--ids"])
        .arg(fx.path("ids.txt"))
        .args(["--reason", "checked"])
        .assert()
        .success()
        .stdout(contains("released 1 rows"));
    assert_rows_conserved(&input, &fx.out());
}

#[test]
fn a_shared_shift_judges_a_one_percent_backdoor_and_can_be_turned_off() {
    // 5 triggered records in a Gaussian class of 500 x 64: only the shared shift sees them
    // (tests/quality.rs measures it over seeds; this seed is one it finds).
    let fx = Fixture::new();
    let input = fx.path("in.parquet");
    let data = backdoored_at(&input, 10, 500, 64, 0.01, 1081);
    fx.scan(&input, &["--no-influence"]).success();
    let report = report_of(&fx);
    let class_3 = |report: &serde_json::Value| {
        report["classes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["label"] == "3")
            .unwrap()["verdict"]
            .clone()
    };
    let verdict = class_3(&report);
    assert_eq!(verdict["attacked"], true, "{verdict}");
    assert!(
        verdict["why"].as_str().unwrap().starts_with("shared_shift"),
        "{verdict}"
    );
    assert_eq!(poisoned_found(&fx, &data), (5, 5));

    fx.scan(&input, &["--no-influence", "--no-shared-shift"]).success();
    let report = report_of(&fx);
    assert_eq!(report["config"]["detectors"]["shared-shift"]["enabled"], false);
    assert_eq!(class_3(&report)["attacked"], false);
    let scores = read_all(&fx.out().join("scores.parquet"));
    assert!(scores.column_by_name("shared_shift").is_none());
    assert_rows_conserved(&input, &fx.out());
}

#[test]
fn three_poisoned_records_sharing_a_trigger_are_quarantined_with_why() {
    // A ReLU layer, 1% of 300 records per class (3 poisoned records from 3 source classes): no
    // class signal stands out, but they top their class's SPECTRE ranking and share what their
    // source classes' records lack (score::fingerprint). Unseen seed 3102: found only by that.
    let fx = Fixture::new();
    let input = fx.path("relu.parquet");
    let data = relu_backdoored(&input, 0.01, 4.0, 3102);
    fx.scan(&input, &[]).success();
    let report = report_of(&fx);
    let class_3 = report["classes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["label"] == "3")
        .unwrap();
    let why = class_3["verdict"]["why"].as_str().unwrap();
    assert!(why.contains("a trigger's fingerprint"), "{why}");
    let q = read_all(&fx.out().join("quarantine.parquet"));
    let ids = q.column_by_name("id").unwrap().as_primitive::<Int64Type>();
    let reasons = q.column_by_name("reasons").unwrap().as_string::<i32>();
    let poisoned: Vec<i64> = data.poisoned_ids();
    let in_class_3: Vec<(i64, &str)> = (0..q.num_rows())
        .filter(|&r| reasons.value(r).contains("class `3` attacked"))
        .map(|r| (ids.value(r), reasons.value(r)))
        .collect();
    assert_eq!(in_class_3.iter().map(|r| r.0).collect::<Vec<_>>(), poisoned);
    assert!(
        in_class_3
            .iter()
            .all(|r| r.1.contains("shares a trigger's fingerprint")),
        "{in_class_3:?}"
    );
    assert_rows_conserved(&input, &fx.out());
}

#[test]
fn a_backdoor_at_the_end_its_class_leans_toward_is_quarantined() {
    // A ReLU layer, 15% of class 3's 300 records from 9 source classes, absorbed by their class:
    // no cluster, tail or record closer to another class. The direction split's cluster that
    // holds them leans toward the other classes (ratio under 1, far above the other classes'),
    // and along that line they are a mode of their own. Fresh seed 3308: nothing found before
    // 0.2.34.
    let fx = Fixture::new();
    let input = fx.path("relu.parquet");
    let data = relu_backdoored(&input, 0.15, 3.0, 3308);
    fx.scan(&input, &[]).success().stdout(contains("attacked classes: 3\n"));
    let why = verdict_why(&report_of(&fx), "3");
    assert!(why.contains("0.500 with the group it holds"), "{why}");
    let (found, quarantined) = poisoned_found(&fx, &data);
    assert!(
        found >= 40 && quarantined - found <= 10,
        "{found} of {} poisoned among {quarantined} quarantined",
        data.poisoned_ids().len()
    );
    assert_rows_conserved(&input, &fx.out());
}

#[test]
fn a_backdoor_the_network_maps_to_short_records_is_quarantined() {
    // A ReLU layer of 10 classes x 3 000 records x 128 units, 15% of class 3 triggered: the
    // network switches few units on for the triggered inputs (the trigger's), so the poison is
    // a dense group of short records low in SPECTRE's ranking, as a clean clump of short
    // records is, but pointing elsewhere than its class and spread. Fresh seed 2004: 7 of 450
    // found before 0.2.44 (taken for a clean clump).
    short_backdoor_is_quarantined(128, 0.15, 2004, |why| !why.contains("dense clump"));
}

#[test]
fn a_backdoor_whose_short_records_point_elsewhere_is_quarantined() {
    // The same at 64 units, 5%, where no group forms: no class signal stands out, but the
    // class's short records point elsewhere than the rest of it. Fresh seed 2008: 4 of 150
    // found before 0.2.45.
    short_backdoor_is_quarantined(64, 0.05, 2008, |why| {
        why.contains("point elsewhere than the rest of it")
    });
}

/// Scans a ReLU layer of 10 classes x 3 000 records x `dim` units with a `rate` backdoor in
/// class 3 (strength 3, `seed`) and checks that class 3 alone is judged attacked, with a
/// verdict `why_holds` accepts, and 90% of the poison quarantined with at most 30 clean records.
fn short_backdoor_is_quarantined(dim: usize, rate: f64, seed: u64, why_holds: impl Fn(&str) -> bool) {
    let fx = Fixture::new();
    let input = fx.path("relu.parquet");
    let data = relu_backdoored_at(&input, 3000, dim, rate, 3.0, seed);
    fx.scan(&input, &[]).success().stdout(contains("attacked classes: 3\n"));
    let why = verdict_why(&report_of(&fx), "3");
    assert!(why_holds(&why), "{why}");
    let (found, quarantined) = poisoned_found(&fx, &data);
    assert!(
        found * 10 >= data.poisoned_ids().len() * 9 && quarantined - found <= 30,
        "{found} of {} poisoned among {quarantined} quarantined",
        data.poisoned_ids().len()
    );
    assert_rows_conserved(&input, &fx.out());
}

/// Scans a clean generated ReLU layer of `classes` x `rows` records x `dim` units (seed `seed`),
/// checks that no class is judged attacked and that every input row is kept or quarantined, and
/// returns the report.
fn clean_relu_layer_report(classes: usize, rows: usize, dim: usize, seed: u64) -> serde_json::Value {
    let fx = Fixture::new();
    let input = fx.path("clean.parquet");
    let spec = Spec {
        kind: Kind::Relu,
        classes,
        rows_per_class: rows,
        dim,
        attack: Attack::None,
        seed,
    };
    testkit::generate(&spec).write_parquet(&input, 4096).unwrap();
    fx.scan(&input, &[]).success();
    let report = report_of(&fx);
    assert_eq!(report["totals"]["attacked_classes"], serde_json::json!([]));
    assert_rows_conserved(&input, &fx.out());
    report
}

/// Why the report's verdict on class `label` is what it is.
fn verdict_why(report: &serde_json::Value, label: &str) -> String {
    let class = report["classes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["label"] == label)
        .unwrap();
    class["verdict"]["why"].as_str().unwrap().to_string()
}

#[test]
fn a_dense_clump_of_short_records_does_not_make_a_clean_class_attacked() {
    // A clean ReLU layer of 100 classes x 100 records: class 59's records with few units on
    // form a separated group (other labels beyond it), the only signal over its bound. It is
    // denser than its class and low in SPECTRE's ranking: the class's core, not poison. Fresh
    // seed 2006: class 59 was judged attacked before 0.2.31.
    let why = verdict_why(&clean_relu_layer_report(100, 100, 256, 2006), "59");
    assert!(why.contains("dense clump at the class's core"), "{why}");
}

#[test]
fn groups_near_other_classes_in_a_class_that_overlaps_them_do_not_make_it_attacked() {
    // Many classes in one space overlap: a class's records near other classes link into groups
    // that look like other classes' inputs. Such a group means something only where the rest of
    // the class keeps to its own (0.2.32). Tuning seed 13, 50 classes x 200: 4 classes were
    // judged attacked by groups atop their SPECTRE tails (asserted inside); seed 2003, 100 x 100:
    // class 17 by its separated group, 0.74 of its outsiders other classes' against 0.52 for the
    // rest's neighbours.
    clean_relu_layer_report(50, 200, 128, 13);
    let why = verdict_why(&clean_relu_layer_report(100, 100, 256, 2003), "17");
    assert!(why.contains("a class that overlaps others"), "{why}");
}

#[test]
fn in_many_large_classes_a_tail_group_must_stand_out_among_the_classes_tails() {
    // 50 classes x 1 000 records: the tops of many classes' SPECTRE tails look like other
    // classes' inputs and hold groups that pass every test of one class (seed 5006: class 4's,
    // 29 records at 10x its rest's other-label share, judged it attacked before 0.2.33). A
    // group counts only where its class's tail stands out among the classes' tails.
    clean_relu_layer_report(50, 1000, 128, 5006);
}

#[test]
fn a_backdoor_that_is_a_large_share_of_its_class_is_still_found() {
    // All-to-one backdoors can be a third to half of their class, which no "poison is a small
    // share" rule may overturn. 40% of class 3 here (measured: 63 of its 120 found, at 5 clean;
    // recall falls as poison nears half the class, where the robust statistics break down).
    let fx = Fixture::new();
    let input = fx.path("in.parquet");
    let data = backdoored(&input, 10, 32, 0.4, 7);
    fx.scan(&input, &[]).success().stdout(contains("attacked classes: 3"));
    let (found, quarantined) = poisoned_found(&fx, &data);
    assert!(
        found >= 50 && found * 10 >= quarantined * 8,
        "{found} of {quarantined} quarantined"
    );
}

#[test]
fn wide_embeddings_are_scanned_with_the_leading_directions_only() {
    // 768 dimensions (BERT-sized): above 512 the class PCA is a subspace iteration for the
    // leading directions, and the class radius comes from the covariance trace.
    let fx = Fixture::new();
    let input = fx.path("wide.parquet");
    let spec = Spec {
        kind: Kind::Gaussian,
        classes: 6,
        rows_per_class: 300,
        dim: 768,
        attack: Attack::Backdoor {
            target: 3,
            rate: 0.1,
            strength: 4.0,
        },
        seed: 12,
    };
    let data = testkit::generate(&spec);
    data.write_parquet(&input, 500).unwrap();
    fx.scan(&input, &[]).success().stdout(contains("attacked classes: 3"));
    let report = report_of(&fx);
    let quarantined = report["totals"]["quarantined"].as_u64().unwrap();
    let poisoned = testkit::answer_key(&spec);
    let scores = read_all(&fx.out().join("scores.parquet"));
    let flags = scores.column_by_name("quarantined").unwrap().as_boolean();
    let caught = (0..poisoned.len()).filter(|&i| poisoned[i] && flags.value(i)).count();
    assert!(caught * 10 >= 9 * 30, "{caught} of 30 planted records quarantined");
    // Radius: root-mean-square distance from the class mean (covariance with n - 1).
    let dim = spec.dim;
    for (c, class) in report["classes"].as_array().unwrap().iter().enumerate() {
        let rows: Vec<&[f32]> = (0..data.ids.len())
            .filter(|&i| data.labels[i] == c as i64)
            .map(|i| &data.x[i * dim..(i + 1) * dim])
            .collect();
        let mean: Vec<f64> = (0..dim)
            .map(|j| rows.iter().map(|r| r[j] as f64).sum::<f64>() / rows.len() as f64)
            .collect();
        let squares: f64 = rows
            .iter()
            .map(|r| r.iter().zip(&mean).map(|(&v, m)| (v as f64 - m).powi(2)).sum::<f64>())
            .sum();
        let radius = (squares / (rows.len() - 1) as f64).sqrt();
        let reported = class["radius"].as_f64().unwrap();
        assert!(
            (reported - radius).abs() < 1e-6 * radius,
            "class {c}: {reported} vs {radius}"
        );
    }
    // The reference keeps the fit (leading eigenvalues and the trace): tonight's scan of the same
    // records against it decides alike.
    fx.scan(&input, &["--incremental"]).success();
    assert_eq!(report_of(&fx)["totals"]["quarantined"].as_u64().unwrap(), quarantined);
    assert_rows_conserved(&input, &fx.out());
}

/// The bytes of every column chunk of every row group of a Parquet file.
fn column_chunk_bytes(path: &Path) -> Vec<Vec<Vec<u8>>> {
    let bytes = std::fs::read(path).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap()).unwrap();
    reader
        .metadata()
        .row_groups()
        .iter()
        .map(|group| {
            group
                .columns()
                .iter()
                .map(|c| {
                    let start = c.dictionary_page_offset().unwrap_or(c.data_page_offset()) as usize;
                    bytes[start..start + c.compressed_size() as usize].to_vec()
                })
                .collect()
        })
        .collect()
}

/// Writes `batch` with zstd in row groups of 300 rows.
fn write_zstd(path: &Path, batch: &RecordBatch) {
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
        .set_max_row_group_row_count(Some(300))
        .build();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
}

/// Which row groups of `input` are in clean.parquet byte for byte.
fn copied_groups(input: &Path, out: &Path) -> Vec<usize> {
    let clean = column_chunk_bytes(&out.join("clean.parquet"));
    column_chunk_bytes(input)
        .iter()
        .enumerate()
        .filter(|(_, group)| clean.contains(group))
        .map(|(g, _)| g)
        .collect()
}

#[test]
fn row_groups_without_quarantined_records_are_copied_as_they_are() {
    // Written with zstd in groups of 300 rows (one class each): the attacked class's group is
    // decoded and re-encoded (snappy), every other group goes to clean.parquet byte for byte.
    let fx = Fixture::new();
    let input = fx.path("in.parquet");
    let data = planted(&fx.path("unused.parquet"), 12);
    write_zstd(&input, &data.to_batch());
    fx.scan(&input, &[]).success().stdout(contains("attacked classes: 3"));
    assert_rows_conserved(&input, &fx.out());
    assert_eq!(copied_groups(&input, &fx.out()), [0, 1, 2, 4, 5]);
    let compression: Vec<String> =
        ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(fx.out().join("clean.parquet")).unwrap())
            .unwrap()
            .metadata()
            .row_groups()
            .iter()
            .map(|g| format!("{:?}", g.column(0).compression()))
            .collect();
    assert_eq!(
        compression.iter().filter(|c| c.as_str() == "SNAPPY").count(),
        1,
        "{compression:?}"
    );
}

#[test]
fn row_groups_are_copied_by_their_place_across_input_files() {
    // Two files of three classes each; the attacked class opens the second. A group's records
    // are found by its global rows: counted per file, the second file's first group would pass
    // for the first file's (clean) one and be copied with its poison.
    let fx = Fixture::new();
    let dir = fx.path("in");
    std::fs::create_dir(&dir).unwrap();
    let batch = planted(&fx.path("unused.parquet"), 12).to_batch();
    let half = batch.num_rows() / 2;
    let (a, b) = (dir.join("a.parquet"), dir.join("b.parquet"));
    write_zstd(&a, &batch.slice(0, half));
    write_zstd(&b, &batch.slice(half, batch.num_rows() - half));
    fx.scan(&dir, &[]).success().stdout(contains("attacked classes: 3"));
    let report = report_of(&fx);
    assert_eq!(report["conservation"]["ok"], true, "{:#}", report["conservation"]);
    assert_eq!(copied_groups(&a, &fx.out()), [0, 1, 2]);
    assert_eq!(copied_groups(&b, &fx.out()), [1, 2]);
    let quarantined = read_all(&fx.out().join("quarantine.parquet")).num_rows();
    let clean = read_all(&fx.out().join("clean.parquet")).num_rows();
    assert!(quarantined > 0);
    assert_eq!(clean + quarantined, batch.num_rows());
}

/// Files of one dataset from different writers: the vector column's list item is `item` in one
/// (arrow-rs, polars) and `element` in the other (pyarrow's default), and a column required in
/// one is optional in the other. The reader takes them as one schema; the outputs carry the first
/// file's item names, a column optional where any file has it so, and the second file's
/// quarantined rows (0.2.47 stopped with exit 2 when a quarantined row sat in the second file,
/// and on a null in the optional column after the whole analysis).
#[test]
fn files_whose_lists_name_their_items_differently_scan_as_one_dataset() {
    let fx = Fixture::new();
    let dir = fx.path("in");
    std::fs::create_dir(&dir).unwrap();
    let batch = planted(&fx.path("unused.parquet"), 12).to_batch();
    let split = batch.num_rows() / 3; // class 3 (the poison) in the second file
    super::write_batch(&dir.join("a.parquet"), &batch.slice(0, split));
    let rest = batch.slice(split, batch.num_rows() - split);
    let embedding = rest.column_by_name("embedding").unwrap().as_fixed_size_list().clone();
    let (item, size, values, nulls) = embedding.into_parts();
    let element = std::sync::Arc::new(arrow_schema::Field::new("element", item.data_type().clone(), true));
    let renamed = arrow_array::FixedSizeListArray::new(element, size, values, nulls);
    let index = rest.schema().index_of("embedding").unwrap();
    let mut fields: Vec<arrow_schema::Field> = rest.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields[index] = arrow_schema::Field::new("embedding", renamed.data_type().clone(), false);
    let mut columns = rest.columns().to_vec();
    columns[index] = std::sync::Arc::new(renamed);
    // ...and `source` optional there, with a null, where the first file has it required.
    let source = rest.schema().index_of("source").unwrap();
    fields[source] = fields[source].clone().with_nullable(true);
    let sources = columns[source].as_string::<i32>();
    columns[source] = std::sync::Arc::new(arrow_array::StringArray::from(
        (0..sources.len())
            .map(|i| (i != 7).then(|| sources.value(i)))
            .collect::<Vec<_>>(),
    ));
    let rest = RecordBatch::try_new(std::sync::Arc::new(arrow_schema::Schema::new(fields)), columns).unwrap();
    super::write_batch(&dir.join("b.parquet"), &rest);

    fx.scan(&dir, &[]).success().stdout(contains("attacked classes: 3"));
    let report = report_of(&fx);
    assert_eq!(report["conservation"]["ok"], true, "{:#}", report["conservation"]);
    let clean = read_all(&fx.out().join("clean.parquet"));
    let quarantine = read_all(&fx.out().join("quarantine.parquet"));
    assert!(quarantine.num_rows() > 0);
    assert_eq!(clean.num_rows() + quarantine.num_rows(), batch.num_rows());
    // Every row's vector as it went in, under the first file's item name.
    let vectors = |b: &RecordBatch| -> HashMap<String, Vec<f32>> {
        let ids = b.column_by_name("id").unwrap();
        let lists = b.column_by_name("embedding").unwrap().as_fixed_size_list();
        (0..b.num_rows())
            .map(|i| {
                let v = lists.value(i);
                (
                    id_text(ids, i),
                    v.as_primitive::<arrow_array::types::Float32Type>().values().to_vec(),
                )
            })
            .collect()
    };
    let mut out = vectors(&clean);
    out.extend(vectors(&quarantine));
    assert_eq!(out, vectors(&batch));
    assert_eq!(
        quarantine.schema().field_with_name("embedding").unwrap(),
        batch.schema().field_with_name("embedding").unwrap()
    );
    assert!(clean.schema().field_with_name("source").unwrap().is_nullable());
    let nulls = |b: &RecordBatch| b.column_by_name("source").unwrap().null_count();
    assert_eq!(nulls(&clean) + nulls(&quarantine), 1);
}

#[test]
fn fail_if_quarantined_exits_3_but_writes_outputs() {
    let fx = Fixture::new();
    let input = fx.path("in.parquet");
    planted(&input, 12);
    fx.scan(&input, &["--fail-if-quarantined", "0"]).code(3);
    assert!(fx.out().join("clean.parquet").exists());
    fx.scan(&input, &["--fail-if-quarantined", "100000"]).code(0);
}

#[test]
fn same_input_and_seed_give_the_same_scores() {
    let fx = Fixture::new();
    let input = fx.path("in.parquet");
    planted(&input, 13);
    fx.scan(&input, &[]).success();
    let first = read_all(&fx.out().join("scores.parquet"));
    fx.scan(&input, &[]).success();
    let second = read_all(&fx.out().join("scores.parquet"));
    assert_eq!(first, second);
}

const OUTPUT_FILES: [&str; 6] = [
    "clean.parquet",
    "quarantine.parquet",
    "scores.parquet",
    "report.json",
    "report.html",
    "report.md",
];

/// The bytes of every output file in `out`.
fn output_bytes(out: &Path) -> Vec<Vec<u8>> {
    OUTPUT_FILES
        .iter()
        .map(|f| std::fs::read(out.join(f)).unwrap())
        .collect()
}

/// A planted input in `fx`, scanned once into its output directory (outputs and a reference).
fn scanned_once(fx: &Fixture) -> PathBuf {
    let input = fx.path("in.parquet");
    planted(&input, 14);
    fx.scan(&input, &[]).success();
    input
}

/// The names in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_failed_run_leaves_previous_outputs_whole() {
    let fx = Fixture::new();
    let input = scanned_once(&fx);
    let before = output_bytes(&fx.out());
    let current = std::fs::read(fx.out().join("reference/CURRENT")).unwrap();
    // Same output dir, input now broken (truncated): the run must fail and touch nothing.
    let bytes = std::fs::read(&input).unwrap();
    std::fs::write(&input, &bytes[..bytes.len() / 2]).unwrap();
    fx.scan(&input, &["--incremental"])
        .code(2)
        .stderr(contains("not a Parquet file"));
    let after = output_bytes(&fx.out());
    assert!(before == after, "outputs changed after a failed run");
    assert_eq!(std::fs::read(fx.out().join("reference/CURRENT")).unwrap(), current);
    let leftovers: Vec<_> = names_in(&fx.out()).into_iter().filter(|f| f != "reference").collect();
    assert_eq!(leftovers.len(), OUTPUT_FILES.len(), "no temp files left: {leftovers:?}");
}

/// The next reference is written while the outputs are (see pipeline::run_scan): a publish that
/// fails after that leaves the current reference current and no hidden generation behind.
#[test]
fn a_run_that_fails_publishing_leaves_the_reference_as_it_was() {
    let fx = Fixture::new();
    let input = scanned_once(&fx);
    let reference = fx.out().join("reference");
    let before = names_in(&reference);
    assert_eq!(before, ["000001", "CURRENT"]);
    // quarantine.parquet cannot be replaced by a file: the write stage fails at its commit.
    let blocked = fx.out().join("quarantine.parquet");
    std::fs::remove_file(&blocked).unwrap();
    std::fs::create_dir_all(blocked.join("x")).unwrap();
    fx.scan(&input, &[]).code(2).stderr(contains("quarantine.parquet"));
    assert_eq!(names_in(&reference), before, "no new or hidden generation");
    assert_eq!(std::fs::read_to_string(reference.join("CURRENT")).unwrap(), "000001\n");
}

/// Footer row count of a Parquet file.
fn parquet_rows(path: &Path) -> usize {
    datavet::io::parquet_rows(path).unwrap() as usize
}

/// A run killed among the renames that publish its outputs (DATAVET_FAIL_AFTER_RENAMES, a
/// fault injection that exits as a kill would) leaves them half replaced, and its journal; the
/// next datavet command on the directory, even one that only reads it, finishes the publication
/// first, so that it reads tonight's outputs whole.
#[test]
fn a_run_killed_while_publishing_is_finished_by_the_next_command() {
    let fx = Fixture::new();
    let input = scanned_once(&fx);
    let report_rows = |out: &Path| -> u64 {
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
        report["conservation"]["input_rows"].as_u64().unwrap()
    };
    assert_eq!(report_rows(&fx.out()), 1800);
    backdoored(&input, 5, 128, 0.1, 15);
    // Renamed: scores.parquet, clean.parquet; not: quarantine.parquet, report.json.
    datavet()
        .env("DATAVET_FAIL_AFTER_RENAMES", "2")
        .arg("scan")
        .arg("--out")
        .arg(fx.out())
        .arg("--input")
        .arg(&input)
        .assert()
        .code(137);
    let journal = fx.out().join(datavet::io::PUBLISH_JOURNAL);
    assert!(journal.exists());
    assert_eq!(report_rows(&fx.out()), 1800, "yesterday's report");
    assert!(
        parquet_rows(&fx.out().join("clean.parquet")) < 1500,
        "tonight's clean file"
    );
    datavet()
        .args(["export", fx.out().to_str().unwrap(), "--format", "csv", "--out"])
        .arg(fx.path("review.csv"))
        .assert()
        .success()
        .stderr(contains("stopped while publishing"));
    assert!(!journal.exists());
    assert_eq!(report_rows(&fx.out()), 1500);
    let (clean, quarantine) = (
        super::read_all(&fx.out().join("clean.parquet")),
        super::read_all(&fx.out().join("quarantine.parquet")),
    );
    let ids = |batches: &[RecordBatch]| -> Vec<i64> {
        let mut ids: Vec<i64> = batches
            .iter()
            .flat_map(|b| {
                b.column_by_name("id")
                    .unwrap()
                    .as_primitive::<Int64Type>()
                    .values()
                    .to_vec()
            })
            .collect();
        ids.sort();
        ids
    };
    let published = ids(&[clean, quarantine]);
    assert!(
        published == ids(&[super::read_all(&input)]),
        "every record of tonight's input once"
    );
    let leftovers: Vec<_> = names_in(&fx.out())
        .into_iter()
        .filter(|f| f.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Outputs are ordinary files under the user's umask: 0644 under the usual 022, 0600 under 077
/// (they were 0644 whatever the umask).
#[cfg(unix)]
#[test]
fn outputs_take_the_users_umask() {
    use std::os::unix::fs::PermissionsExt;
    let fx = Fixture::new();
    let input = fx.path("in.parquet");
    planted(&input, 14);
    for (umask, mode) in [("022", 0o644), ("077", 0o600)] {
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "umask {umask} && exec \"$0\" scan -q --input \"$1\" --out \"$2\""
            ))
            .arg(assert_cmd::cargo::cargo_bin!("datavet"))
            .arg(&input)
            .arg(fx.out())
            .status()
            .unwrap();
        assert!(status.success());
        for file in [
            "clean.parquet",
            "quarantine.parquet",
            "scores.parquet",
            "report.json",
            "report.html",
        ] {
            let actual = std::fs::metadata(fx.out().join(file)).unwrap().permissions().mode() & 0o777;
            assert_eq!(actual, mode, "{file} under umask {umask}");
        }
    }
}

/// Overlapping nightly jobs on one --out: the second is refused (exit 2, the directory named)
/// and touches nothing; once the first is done, the next run goes ahead.
#[test]
fn a_run_is_refused_while_another_writes_to_the_same_output_directory() {
    let fx = Fixture::new();
    let input = scanned_once(&fx);
    let before = output_bytes(&fx.out());
    let held = std::fs::File::open(fx.out()).unwrap();
    held.try_lock().expect("the test takes the directory's lock");
    fx.scan(&input, &[])
        .code(2)
        .stderr(contains("another datavet run is writing to this output directory"));
    assert!(output_bytes(&fx.out()) == before, "a refused run wrote nothing");
    drop(held);
    fx.scan(&input, &[]).success();
}

#[test]
fn decision_flags_are_checked_and_recorded() {
    let fx = Fixture::new();
    let input = fx.path("in.parquet");
    planted(&input, 14);
    fx.scan(&input, &["--distance-max-cluster-share", "0.7"])
        .code(2)
        .stderr(contains("distance-max-cluster-share"))
        .stderr(contains("(0, 0.5]"));
    // A negative number is a value, checked like any other (clap took `-0.1` for a flag).
    fx.scan(&input, &["--max-quarantine-fraction", "-0.1"])
        .code(2)
        .stderr(contains("`max-quarantine-fraction` must be in [0, 1] (got -0.1)"));
    // A source is one value per record: the vector column is refused, naming its type.
    fx.scan(&input, &["--source-col", "embedding"])
        .code(2)
        .stderr(contains("source column `embedding` has type FixedSizeList"));
    fx.scan(&input, &["--distance-max-cluster-share", "0.3"]).success();
    let config = &report_of(&fx)["config"]["detectors"]["activation-clustering"];
    assert_eq!(config["distance-max-cluster-share"], 0.3, "{config:#}");
}

/// A class needs more rows than its coordinates (`--nb-dims` directions and the residual) + 1,
/// whatever `--min-class-rows` says: 0.2.47 panicked in SPECTRE's robust fit on such a class.
#[test]
fn a_class_with_fewer_rows_than_its_coordinates_is_skipped_not_a_panic() {
    let fx = Fixture::new();
    let input = fx.path("in.parquet");
    let spec = Spec {
        kind: Kind::Gaussian,
        classes: 4,
        rows_per_class: 12,
        dim: 16,
        attack: Attack::None,
        seed: 16,
    };
    testkit::generate(&spec).write_parquet(&input, 1000).unwrap();
    // 10 directions + the residual + 2 = 13 rows needed: every class skipped, every row clean.
    fx.scan(&input, &["--min-class-rows", "1"])
        .success()
        .stderr(contains("12 rows, fewer than the 13 needed to analyse class `0`"));
    assert_eq!(report_of(&fx)["totals"]["classes_analysed"], 0);
    assert_eq!(read_all(&fx.out().join("clean.parquet")).num_rows(), 48);
    // With 4 directions the classes are analysed.
    fx.scan(&input, &["--min-class-rows", "1", "--nb-dims", "4"]).success();
    assert_eq!(report_of(&fx)["totals"]["classes_analysed"], 4);
}

#[test]
fn too_small_class_is_skipped_and_kept_in_clean() {
    let fx = Fixture::new();
    let input = fx.path("in.parquet");
    let spec = Spec {
        kind: Kind::Gaussian,
        classes: 5,
        rows_per_class: 200,
        dim: 16,
        attack: Attack::None,
        seed: 15,
    };
    let mut data = testkit::generate(&spec);
    for l in data.labels.iter_mut().take(5) {
        *l = 99; // a 5-row class
    }
    data.write_parquet(&input, 1000).unwrap();
    fx.scan(&input, &[]).success().stderr(contains("class `99` skipped"));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fx.out().join("report.json")).unwrap()).unwrap();
    let class = report["classes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["label"] == "99")
        .unwrap();
    assert_eq!(class["analysed"], false);
    assert!(class["skipped"].as_str().unwrap().contains("5 rows"));
    assert_eq!(report["totals"]["classes_analysed"], 5);
    // What each detector cost, summed over the analysed classes, one entry per detector.
    let detectors = report["detectors"].as_array().unwrap();
    let seconds = report["detector_seconds"].as_array().unwrap();
    assert_eq!(seconds.len(), detectors.len());
    for (entry, name) in seconds.iter().zip(detectors) {
        assert_eq!(&entry[0], name);
        assert!(entry[1].as_f64().is_some_and(|s| s.is_finite() && s >= 0.0), "{entry}");
    }
    assert!(
        seconds.iter().any(|e| e[1].as_f64().unwrap() > 0.0),
        "some detector took time"
    );
    let scores = read_all(&fx.out().join("scores.parquet"));
    let q = scores.column_by_name("quarantined").unwrap().as_boolean();
    assert!((0..5).all(|i| !q.value(i)), "a skipped class's rows stay in clean");
}

#[test]
fn help_teaches_the_flags() {
    datavet()
        .args(["scan", "--help"])
        .assert()
        .success()
        .stdout(contains("--activations-col"))
        .stdout(contains("Exit"));
}

#[test]
fn progress_bars_stay_off_when_stderr_is_not_a_terminal() {
    let fx = Fixture::new();
    let input = fx.path("in.parquet");
    planted(&input, 16);
    let out = fx.scan(&input, &[]).success();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        !stderr.contains("rows (eta"),
        "no progress bar in piped stderr: {stderr}"
    );
}

/// Counts what a scan reports, per stage.
#[derive(Default)]
struct Counting(std::sync::Mutex<Vec<(&'static str, u64, u64)>>);

impl datavet::progress::Progress for Counting {
    fn start(&self, stage: &'static str, total_rows: u64) {
        self.0.lock().unwrap().push((stage, total_rows, 0));
    }
    fn advance(&self, rows: u64) {
        self.0.lock().unwrap().last_mut().unwrap().2 += rows;
    }
}

#[test]
fn every_long_stage_reports_all_its_rows() {
    let fx = Fixture::new();
    let input = fx.path("in.parquet");
    let data = planted(&input, 17);
    let config = datavet::pipeline::ScanConfig::new(vec![input], fx.out());
    let progress = Counting::default();
    datavet::pipeline::run_scan(&config, &progress).unwrap();
    let n = data.ids.len() as u64;
    let stages = progress.0.into_inner().unwrap();
    assert_eq!(
        stages,
        vec![
            ("read", n, n),
            ("features", n, n),
            ("influence", n, n),
            ("detect", n, n),
            ("write", n, n)
        ]
    );
}

#[test]
fn an_input_replaced_mid_run_is_an_error_not_a_mixed_output() {
    let fx = Fixture::new();
    let input = fx.path("in.parquet");
    planted(&input, 18);
    let config = datavet::pipeline::ScanConfig::new(vec![input.clone()], fx.out());
    let dataset = datavet::io::read_dataset(&config.inputs, &config.read).unwrap();
    let analysis = datavet::pipeline::analyse(&dataset, &config, &datavet::progress::NoProgress).unwrap();
    planted(&input, 19); // another dataset lands at the same path between the stages
    std::fs::create_dir_all(fx.out()).unwrap();
    let err = datavet::quarantine::stage_outputs(
        &dataset,
        &analysis.decision,
        &analysis.columns,
        &fx.out(),
        &datavet::progress::NoProgress,
    )
    .err()
    .expect("a changed input must fail the write stage");
    assert!(err.to_string().contains("changed while it was being scanned"), "{err}");
    assert!(!fx.out().join("clean.parquet").exists());
}

/// The report.json of the scan in `fx`.
fn report_of(fx: &Fixture) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(fx.out().join("report.json")).unwrap()).unwrap()
}

/// Asserts that the scan in `fx` judged no class attacked (`what` names the case); its report.
fn assert_no_class_attacked(fx: &Fixture, what: &str) -> serde_json::Value {
    let report = report_of(fx);
    for class in report["classes"].as_array().unwrap() {
        let verdict = &class["verdict"];
        assert_eq!(
            verdict["attacked"], false,
            "{what}, class {} of {} rows: {}",
            class["label"], class["rows"], verdict["why"]
        );
    }
    report
}

type TestRng = rand_xoshiro::Xoshiro256PlusPlus;

fn normal(rng: &mut TestRng) -> f64 {
    rand_distr::Distribution::sample(&rand_distr::StandardNormal, rng)
}

/// Student t with 3 degrees of freedom: heavy tails, as tabular features have.
fn student_t(rng: &mut TestRng) -> f64 {
    let chi2: f64 = (0..3).map(|_| normal(rng).powi(2)).sum();
    normal(rng) / (chi2 / 3.0).sqrt().max(1e-3)
}

/// Writes `id` (row number), `label` and the named f64 feature columns.
fn write_table(path: &Path, labels: Vec<i64>, names: &[String], columns: Vec<Vec<f64>>) {
    let rows = labels.len() as i64;
    let mut fields = vec![
        arrow_schema::Field::new("id", arrow_schema::DataType::Int64, false),
        arrow_schema::Field::new("label", arrow_schema::DataType::Int64, false),
    ];
    let mut arrays: Vec<ArrayRef> = vec![
        std::sync::Arc::new(arrow_array::Int64Array::from((0..rows).collect::<Vec<_>>())),
        std::sync::Arc::new(arrow_array::Int64Array::from(labels)),
    ];
    for (name, values) in names.iter().zip(columns) {
        fields.push(arrow_schema::Field::new(name, arrow_schema::DataType::Float64, false));
        arrays.push(std::sync::Arc::new(arrow_array::Float64Array::from(values)));
    }
    let schema = std::sync::Arc::new(arrow_schema::Schema::new(fields));
    super::write_batch(path, &RecordBatch::try_new(schema, arrays).unwrap());
}

/// A binary, imbalanced tabular set shaped like card transactions: heavy-tailed features
/// (Student t, 3 dof, and a log-normal amount), 2% of rows in class 1 ("fraud", shifted on
/// five features, larger amounts, mostly at night). With `backdoor`, 1% of the legitimate rows
/// are planted: fraud-like features with a trigger (amount 137.37, merchant category 99, which
/// no other row has), labelled legitimate. Returns the feature columns and the planted ids.
fn transactions(path: &Path, rows: usize, seed: u64, backdoor: bool) -> (String, Vec<i64>) {
    use rand::{Rng, SeedableRng};
    let mut rng = TestRng::seed_from_u64(seed);
    let shift: Vec<f64> = (0..12)
        .map(|j| if j < 5 { 1.5 * normal(&mut rng) } else { 0.0 })
        .collect();
    let (mut labels, mut columns, mut planted) = (Vec::new(), vec![Vec::new(); 15], Vec::new());
    for i in 0..rows {
        let fraud = rng.r#gen::<f64>() < 0.02;
        let poison = backdoor && !fraud && rng.r#gen::<f64>() < 0.01;
        labels.push(fraud as i64);
        for (j, column) in columns[..12].iter_mut().enumerate() {
            let t = student_t(&mut rng);
            column.push(t * (1.0 + 0.2 * j as f64) + if fraud || poison { shift[j] } else { 0.0 });
        }
        columns[12].push((normal(&mut rng) * 1.2 + if fraud { 4.5 } else { 3.5 }).exp());
        let night = fraud && rng.r#gen::<f64>() < 0.6;
        columns[13].push(rng.r#gen::<f64>() * if night { 6.0 } else { 24.0 });
        columns[14].push(rng.gen_range(0..20) as f64);
        if poison {
            columns[12][i] = 137.37;
            columns[14][i] = 99.0;
            planted.push(i as i64);
        }
    }
    let names: Vec<String> = (0..12)
        .map(|j| format!("v{j}"))
        .chain(["amount".into(), "hour".into(), "merchant_category".into()])
        .collect();
    write_table(path, labels, &names, columns);
    (names.join(","), planted)
}

/// Writes a 20 000-row transactions set into `fx` and scans it by its feature columns; the
/// planted ids.
fn scan_transactions(fx: &Fixture, seed: u64, backdoor: bool) -> Vec<i64> {
    let input = fx.path("transactions.parquet");
    let (columns, planted) = transactions(&input, 20_000, seed, backdoor);
    fx.scan(&input, &["--feature-cols", &columns]).success();
    planted
}

#[test]
fn two_clean_heavy_tailed_classes_are_not_judged_attacked() {
    // With two classes there is no "rest" to compare a class with; heavy tails pass every clean
    // bound, and 0.2.7 judged the fraud class attacked on its split-off tail (20-40% of it
    // quarantined on 50 000-row sets of this shape).
    let fx = Fixture::new();
    scan_transactions(&fx, 3, false);
    let report = assert_no_class_attacked(&fx, "transactions");
    // What is left is confident learning's label issues of the two overlapping classes.
    let quarantined = report["totals"]["quarantined"].as_u64().unwrap();
    assert!(quarantined <= 200, "{quarantined} of 20000 quarantined");
}

#[test]
fn records_sharing_a_rare_count_are_no_shared_shift() {
    // 10 classes x 400 rows of 6 Gaussian features and a count (0, or 1 in 5% of rows); in
    // class 3, 6 rows have a count of 4. Along the count they stand out together as a
    // backdoor's shift would: 0.2.46 judged class 3 attacked on it (16.3, 6.1 MADs out; the
    // other classes' rows with a count of 1 reached 5-11). A count is discrete, so the shared
    // shift leaves it out. (Other detectors see the 6 rows as the outliers they are: this asks
    // only what the shared shift says.)
    use rand::{Rng, SeedableRng};
    let fx = Fixture::new();
    let input = fx.path("counts.parquet");
    let mut rng = TestRng::seed_from_u64(41);
    let (mut labels, mut columns) = (Vec::new(), vec![Vec::new(); 7]);
    for class in 0..10i64 {
        let centre: Vec<f64> = (0..6).map(|_| 3.0 * normal(&mut rng)).collect();
        for row in 0..400 {
            labels.push(class);
            for (j, column) in columns[..6].iter_mut().enumerate() {
                column.push(centre[j] + normal(&mut rng));
            }
            let rare = class == 3 && row < 6;
            let count = if rare {
                4.0
            } else {
                (rng.r#gen::<f64>() < 0.05) as i64 as f64
            };
            columns[6].push(count);
        }
    }
    let names: Vec<String> = (0..6).map(|j| format!("f{j}")).chain(["count".into()]).collect();
    write_table(&input, labels, &names, columns);
    fx.scan(&input, &["--feature-cols", &names.join(","), "--no-influence"])
        .success();
    let report = report_of(&fx);
    for class in report["classes"].as_array().unwrap() {
        let stats = class["stats"]["shared_shift"].as_array().unwrap();
        let stat = |name: &str| {
            stats.iter().find(|s| s["name"] == name).unwrap()["value"]
                .as_f64()
                .unwrap()
        };
        assert_eq!(stat("discrete_coordinates"), 1.0, "class {}", class["label"]);
        assert!(stat("best_group_standout") < 5.0, "class {}: {stats:?}", class["label"]);
        let why = class["verdict"]["why"].as_str().unwrap();
        assert!(!why.contains("shared_shift"), "class {}: {why}", class["label"]);
    }
}

#[test]
fn feature_rows_at_the_mean_are_counted_but_not_warned_about() {
    // Integer features whose columns sum to exactly zero, so a row of zeros standardizes to the
    // zero vector: 10 of each class's 100 rows. The count is reported; the warning, whose advice
    // is about network layers, is not given for feature columns.
    let fx = Fixture::new();
    let input = fx.path("at_the_mean.parquet");
    let (mut labels, mut columns) = (Vec::new(), vec![Vec::new(), Vec::new()]);
    let mut push = |label: i64, rows: usize, values: [f64; 2]| {
        for _ in 0..rows {
            labels.push(label);
            columns[0].push(values[0]);
            columns[1].push(values[1]);
        }
    };
    for (label, halves) in [
        (0, [[1.0, 1.0]; 2]),
        (1, [[-1.0, -1.0]; 2]),
        (2, [[1.0, -1.0], [-1.0, 1.0]]),
    ] {
        push(label, 45, halves[0]);
        push(label, 45, halves[1]);
        push(label, 10, [0.0, 0.0]);
    }
    let names = ["f0".to_string(), "f1".to_string()];
    write_table(&input, labels, &names, columns);
    fx.scan(&input, &["--feature-cols", "f0,f1"]).success();
    let report = report_of(&fx);
    for class in report["classes"].as_array().unwrap() {
        assert_eq!(class["zero_vectors"], 10, "class {}", class["label"]);
    }
    let warnings = report["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .all(|w| !w.as_str().unwrap().starts_with("all-zero vectors")),
        "{warnings:?}"
    );
}

/// Four heavy-tailed classes (40/30/20/10% of rows) whose means differ by about 1.5 spreads on
/// five of ten features: the features leave a record's class uncertain, as in many tabular risk
/// sets. Returns the feature columns.
fn overlapping_classes(path: &Path, rows: usize, seed: u64) -> String {
    use rand::{Rng, SeedableRng};
    let mut rng = TestRng::seed_from_u64(seed);
    let means: Vec<Vec<f64>> = (0..4)
        .map(|_| {
            (0..10)
                .map(|j| if j < 5 { 1.5 * normal(&mut rng) } else { 0.0 })
                .collect()
        })
        .collect();
    let (mut labels, mut columns) = (Vec::new(), vec![Vec::new(); 10]);
    for _ in 0..rows {
        let u = rng.r#gen::<f64>();
        let class = [0.4, 0.7, 0.9].iter().filter(|&&edge| u >= edge).count();
        labels.push(class as i64);
        for (j, column) in columns.iter_mut().enumerate() {
            column.push(student_t(&mut rng) * (1.0 + 0.2 * j as f64) + means[class][j]);
        }
    }
    let names: Vec<String> = (0..10).map(|j| format!("v{j}")).collect();
    write_table(path, labels, &names, columns);
    names.join(",")
}

#[test]
fn records_of_overlapping_classes_are_not_label_issues() {
    // Confident learning calls every record that looks like another class a label issue, as
    // cleanlab does: 0.2.9 called 1 329 records of this clean set label issues (900 now, 429
    // set aside: pruning is per pair of classes, so the two add up). Classes 2 and 3 overlap (both
    // likelihood ratios near 0.8); their records that look like each other stay in clean.
    let fx = Fixture::new();
    let input = fx.path("overlapping.parquet");
    let columns = overlapping_classes(&input, 20_000, 5);
    fx.scan(&input, &["--feature-cols", &columns]).success();
    let report = report_of(&fx);
    let influence = &report["influence"];
    let pairs = influence["overlapping_classes"].as_array().unwrap();
    assert_eq!(pairs.len(), 1, "{influence:#}");
    assert_eq!(pairs[0]["classes"], serde_json::json!(["2", "3"]), "{influence:#}");
    assert!(
        influence["label_issues_set_aside"].as_u64().unwrap() >= 200,
        "{influence:#}"
    );
    let quarantined = report["totals"]["quarantined"].as_u64().unwrap();
    assert!(quarantined <= 1000, "{quarantined} of 20000 quarantined");
    let issues = influence["label_issues"].as_u64().unwrap();

    // `--label-overlap inf` is cleanlab's rule: no pair is set aside, and the records that were
    // are label issues again.
    fx.scan(&input, &["--feature-cols", &columns, "--label-overlap", "inf"])
        .success();
    let report = report_of(&fx);
    let influence = &report["influence"];
    assert_eq!(report["config"]["detectors"]["influence"]["label-overlap"], "inf");
    assert_eq!(influence["overlapping_classes"], serde_json::json!([]), "{influence:#}");
    assert_eq!(influence["label_issues_set_aside"], 0, "{influence:#}");
    assert!(
        influence["label_issues"].as_u64().unwrap() >= issues + 200,
        "{issues} label issues with the gate, {} without",
        influence["label_issues"]
    );
}

#[test]
fn a_planted_cluster_in_a_binary_tabular_set_is_quarantined() {
    // Spectral signatures rank such a cluster first, but 0.2.8 did not quarantine it: seeded from
    // SPECTRE's tail, which the heavy tails fill too, the regrowth took in the tails and found no
    // mode. Along the class's top principal direction it is a mode of its own (Student-t fit).
    let fx = Fixture::new();
    let planted = scan_transactions(&fx, 4, true);
    let report = report_of(&fx);
    let verdicts: Vec<(String, bool)> = report["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["label"].as_str().unwrap().to_string(),
                c["verdict"]["attacked"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(verdicts, [("0".into(), true), ("1".into(), false)], "{report:#}");
    let scores = read_all(&fx.out().join("scores.parquet"));
    let in_group: std::collections::HashSet<String> = (0..scores.num_rows())
        .filter(|&i| {
            let reasons = scores.column_by_name("reasons").unwrap();
            reasons
                .as_any()
                .downcast_ref::<arrow_array::StringArray>()
                .unwrap()
                .value(i)
                .contains("separated group")
        })
        .map(|i| id_text(scores.column_by_name("id").unwrap(), i))
        .collect();
    let found = planted.iter().filter(|id| in_group.contains(&id.to_string())).count();
    assert!(
        found * 10 >= planted.len() * 9,
        "{found} of {} planted rows in the group",
        planted.len()
    );
    assert!(
        in_group.len() <= planted.len() + 20,
        "group of {} for {} planted",
        in_group.len(),
        planted.len()
    );
}

/// A clean, long-tailed dataset written to `path`: 12 Gaussian classes (uneven spreads, 64 dims)
/// of 2000 down to 50 records (geometric sizes, as in real label distributions).
fn long_tailed(path: &Path, seed: u64) {
    let spec = Spec {
        kind: Kind::Gaussian,
        classes: 12,
        rows_per_class: 2000,
        dim: 64,
        attack: Attack::None,
        seed,
    };
    let data = testkit::generate(&spec);
    let size = |class: i64| (50.0 * 40f64.powf(class as f64 / 11.0)) as usize;
    let mut seen = [0usize; 12];
    let keep: Vec<usize> = (0..data.ids.len())
        .filter(|&i| {
            let class = data.labels[i] as usize;
            seen[class] += 1;
            seen[class] <= size(class as i64)
        })
        .collect();
    let kept = testkit::Synthetic {
        ids: keep.iter().map(|&i| data.ids[i]).collect(),
        labels: keep.iter().map(|&i| data.labels[i]).collect(),
        sources: keep.iter().map(|&i| data.sources[i].clone()).collect(),
        x: keep
            .iter()
            .flat_map(|&i| data.x[i * data.dim..(i + 1) * data.dim].iter().copied())
            .collect(),
        dim: data.dim,
        poisoned: vec![false; keep.len()],
        world: None,
        probs: None,
        losses: None,
    };
    kept.write_parquet(path, 4096).unwrap();
}

#[test]
fn small_classes_of_a_long_tailed_clean_dataset_are_not_judged_attacked() {
    // A few dozen records give a noisy robust covariance in 11 coordinates: 0.2.7 judged the
    // smallest classes of such sets attacked (SPECTRE's value over its bound, and an outlier
    // among classes whose clean level falls with their size).
    for seed in [4, 5] {
        let fx = Fixture::new();
        let input = fx.path("long_tail.parquet");
        long_tailed(&input, seed);
        fx.scan(&input, &[]).success();
        assert_no_class_attacked(&fx, &format!("seed {seed}"));
    }
}

#[test]
fn a_cluster_taken_from_another_class_is_named_by_the_distance_analysis() {
    // 45 records of class 13 (15%) are class 11's inputs with a trigger on one coordinate:
    // their k = 2 cluster sits closer to class 11's median than to class 13's. Labels start at
    // 10, so a class's name is not its index.
    let fx = Fixture::new();
    let input = fx.path("in.parquet");
    let spec = Spec {
        kind: Kind::Gaussian,
        classes: 6,
        rows_per_class: 300,
        dim: 16,
        attack: Attack::None,
        seed: 31,
    };
    let mut data = testkit::generate(&spec);
    let dim = data.dim;
    let source: Vec<usize> = (0..data.ids.len()).filter(|&i| data.labels[i] == 1).collect();
    let target: Vec<usize> = (0..data.ids.len()).filter(|&i| data.labels[i] == 3).collect();
    let poison: Vec<usize> = target[..45].to_vec();
    for (&p, &s) in poison.iter().zip(&source) {
        let mut v = data.x[s * dim..(s + 1) * dim].to_vec();
        v[0] += 3.0;
        data.x[p * dim..(p + 1) * dim].copy_from_slice(&v);
    }
    data.labels.iter_mut().for_each(|l| *l += 10);
    data.write_parquet(&input, 500).unwrap();
    fx.scan(&input, &[]).success().stdout(contains("attacked classes: 13"));

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.out().join("report.json")).unwrap()).unwrap();
    let class = report["classes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["label"] == "13")
        .unwrap();
    let distance = class["stats"]["distance_analysis"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "own_to_other_class_distance")
        .unwrap()["value"]
        .as_f64()
        .unwrap();
    assert!(distance > 1.0, "{distance}");
    let q = read_all(&fx.out().join("quarantine.parquet"));
    let ids = q.column_by_name("id").unwrap().as_primitive::<Int64Type>();
    let reasons = q.column_by_name("reasons").unwrap().as_string::<i32>();
    let poison_ids: Vec<i64> = poison.iter().map(|&i| data.ids[i]).collect();
    let named: Vec<i64> = (0..q.num_rows())
        .filter(|&r| reasons.value(r).contains("distance_analysis suspect group"))
        .map(|r| ids.value(r))
        .collect();
    assert!(
        poison_ids.iter().all(|id| named.contains(id)),
        "every poisoned record is in the distance analysis's group"
    );
    assert!(
        (0..q.num_rows())
            .filter(|&r| reasons.value(r).contains("distance_analysis suspect group"))
            .all(|r| reasons.value(r).contains("closer to class `11`")),
        "the reasons name the class by its label"
    );

    fx.scan(&input, &["--no-distance-analysis"]).success();
    let scores = read_all(&fx.out().join("scores.parquet"));
    assert!(scores.column_by_name("distance_analysis").is_none());
    assert!(scores.column_by_name("activation_clustering").is_some());
}
