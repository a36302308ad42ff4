//! Every broken input in ../shared/formats/README.md: exit 2, a message naming the file (and the
//! column and row where there is one), and no output written.

use predicates::str::contains;

use super::Fixture;

/// Scans `file` and expects exit 2 with every `needles` in stderr and no outputs.
fn rejects(file: &str, args: &[&str], needles: &[&str]) {
    let Some(input) = Fixture::format(file) else { return };
    let fx = Fixture::new();
    let mut assert = fx
        .scan(&input, args)
        .code(2)
        .stderr(contains(file.trim_end_matches('/')));
    for n in needles {
        assert = assert.stderr(contains(*n));
    }
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).to_string();
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    // Not even the --out folder, which the run creates to lock it.
    assert!(!fx.out().exists(), "nothing may be written for {file}");
}

#[test]
fn truncated_file() {
    rejects("bad_truncated.parquet", &[], &["not a Parquet file", "truncated"]);
}

#[test]
fn csv_renamed_to_parquet() {
    rejects("bad_not_parquet.parquet", &[], &["not a Parquet file"]);
}

#[test]
fn empty_file() {
    rejects("bad_empty_file.parquet", &[], &["not a Parquet file"]);
}

#[test]
fn zero_rows() {
    rejects("bad_zero_rows.parquet", &[], &["no rows"]);
}

#[test]
fn ragged_vectors_name_column_row_and_id() {
    rejects(
        "bad_ragged_vectors.parquet",
        &[],
        &[
            "column `embedding`, row 417 (0-based), id 100417",
            "length 15, expected 16",
        ],
    );
}

#[test]
fn empty_vector() {
    rejects("bad_empty_vector.parquet", &[], &["row 417", "empty"]);
}

#[test]
fn nan_in_vector() {
    rejects("bad_nan_in_vector.parquet", &[], &["row 417", "NaN"]);
}

#[test]
fn inf_in_vector() {
    rejects("bad_inf_in_vector.parquet", &[], &["row 417", "inf"]);
}

#[test]
fn null_vector() {
    rejects("bad_null_vector.parquet", &[], &["row 417", "vector is null"]);
}

#[test]
fn null_element_in_vector() {
    rejects("bad_null_element_in_vector.parquet", &[], &["row 417", "is null"]);
}

#[test]
fn null_label() {
    rejects(
        "bad_null_label.parquet",
        &[],
        &["label column `label`, row 417", "null"],
    );
}

#[test]
fn null_id() {
    rejects("bad_null_id.parquet", &[], &["id column `id`, row 417", "null"]);
}

#[test]
fn duplicate_ids_name_both_rows() {
    rejects(
        "bad_duplicate_ids.parquet",
        &[],
        &["id column `id`", "already appears", "ids must be unique"],
    );
}

#[test]
fn missing_label_column() {
    rejects(
        "bad_missing_label_column.parquet",
        &[],
        &["label column `label` not found", "--label-col"],
    );
}

#[test]
fn string_activations() {
    rejects(
        "bad_activations_string.parquet",
        &[],
        &["column `embedding` has type Utf8", "List"],
    );
}

#[test]
fn json_text_vectors() {
    rejects(
        "bad_fastparquet_json_vectors.parquet",
        &[],
        &["column `embedding`", "expected List"],
    );
}

#[test]
fn schema_mismatch_between_files() {
    rejects(
        "bad_schema_mismatch_dir",
        &[],
        &["schema differs", "part-0.parquet", "part-1.parquet"],
    );
}

#[test]
fn ambiguous_vector_columns_name_both() {
    rejects(
        "ambiguous_two_vector_columns.parquet",
        &[],
        &["`vec_a`", "`vec_b`", "--activations-col"],
    );
}

#[test]
fn feature_columns_need_a_flag() {
    rejects(
        "fastparquet_feature_columns.parquet",
        &[],
        &["no activations column", "f00", "--feature-cols"],
    );
}

#[test]
fn named_columns_that_do_not_exist() {
    rejects(
        "pyarrow_list_f32.parquet",
        &["--activations-col", "nope"],
        &["activations column `nope` not found"],
    );
    rejects(
        "pyarrow_list_f32.parquet",
        &["--id-col", "nope"],
        &["id column `nope` not found"],
    );
    rejects(
        "pyarrow_list_f32.parquet",
        &["--feature-cols", "source"],
        &["feature column `source` has type Utf8"],
    );
}

#[test]
fn missing_input_path() {
    let fx = Fixture::new();
    fx.scan(&fx.path("nowhere.parquet"), &[])
        .code(2)
        .stderr(contains("nowhere.parquet"));
}

#[test]
fn bad_settings_are_usage_errors() {
    let Some(input) = Fixture::format("pyarrow_list_f32.parquet") else {
        return;
    };
    let fx = Fixture::new();
    fx.scan(&input, &["--max-quarantine-fraction", "2"])
        .code(2)
        .stderr(contains("max-quarantine-fraction"));
    fx.scan(&input, &["--nb-dims", "0"]).code(2).stderr(contains("nb-dims"));
    assert!(!fx.out().join("clean.parquet").exists());
}

/// Dictionary-encoded ids are checked as their values: two keys naming one value are a
/// duplicate, a key naming a null value is a null id.
#[test]
fn dictionary_encoded_ids_are_checked_as_their_values() {
    use std::sync::Arc;

    use arrow_array::types::Int32Type;
    use arrow_array::{
        Array, DictionaryArray, FixedSizeListArray, Float32Array, Int32Array, Int64Array, RecordBatch, StringArray,
    };
    use arrow_schema::{DataType, Field, Schema};

    let rows: usize = 120;
    let write = |path: &std::path::Path, values: StringArray, keys: Vec<i32>| {
        let ids = DictionaryArray::<Int32Type>::try_new(Int32Array::from(keys), Arc::new(values)).unwrap();
        let item = Arc::new(Field::new("item", DataType::Float32, false));
        let vectors = (0..rows * 4)
            .map(|i| ((i * 7919) % 101) as f32 / 10.0)
            .collect::<Vec<_>>();
        let embedding = FixedSizeListArray::new(item, 4, Arc::new(Float32Array::from(vectors)), None);
        let schema = Schema::new(vec![
            Field::new("id", ids.data_type().clone(), true),
            Field::new("label", DataType::Int64, false),
            Field::new("embedding", embedding.data_type().clone(), false),
        ]);
        let labels = Int64Array::from((0..rows as i64).map(|i| i % 2).collect::<Vec<_>>());
        let batch = RecordBatch::try_new(
            Arc::new(schema),
            vec![Arc::new(ids), Arc::new(labels), Arc::new(embedding)],
        )
        .unwrap();
        super::write_batch(path, &batch);
    };
    let names: Vec<String> = (0..rows).map(|i| format!("rec-{i}")).collect();
    let fx = Fixture::new();
    let duplicate = fx.path("duplicate.parquet");
    let keys: Vec<i32> = (0..rows as i32).collect();
    let mut values = names.clone();
    values[7] = names[3].clone();
    write(&duplicate, StringArray::from(values), keys.clone());
    fx.scan(&duplicate, &["-q"])
        .code(2)
        .stderr(contains("duplicate.parquet"))
        .stderr(contains("rec-3 already appears"));
    let null = fx.path("null.parquet");
    let mut values: Vec<Option<String>> = names.into_iter().map(Some).collect();
    values[5] = None;
    write(&null, StringArray::from(values), keys);
    fx.scan(&null, &["-q"])
        .code(2)
        .stderr(contains("null.parquet"))
        .stderr(contains("id column `id`, row 5"));
    assert!(!fx.out().join("clean.parquet").exists());
}

/// `--feature-cols` that name no column, the label or the id, or one column twice are refused
/// before anything runs (the label as a feature made classes trivially separable; an empty list
/// in a pipeline file panicked).
#[test]
fn feature_columns_must_be_distinct_inputs() {
    let Some(input) = Fixture::format("fastparquet_feature_columns.parquet") else {
        return;
    };
    let fx = Fixture::new();
    for (cols, needle) in [
        ("f00,label", "names `label`, which is the id, label"),
        ("f00,id", "names `id`, which is the id, label"),
        ("f00,f01,f00", "names `f00` twice"),
    ] {
        fx.scan(&input, &["--feature-cols", cols])
            .code(2)
            .stderr(contains(needle));
    }
    let pipeline = fx.path("empty.toml");
    std::fs::write(
        &pipeline,
        format!(
            "[input]\npaths = [{:?}]\nfeature-cols = []\n[output]\ndir = {:?}\n",
            input.display().to_string(),
            fx.out().display().to_string()
        ),
    )
    .unwrap();
    for command in ["check", "run"] {
        super::datavet()
            .arg(command)
            .arg(&pipeline)
            .assert()
            .code(2)
            .stderr(contains("empty.toml:3: [input] `feature-cols` names no column"));
    }
    assert!(!fx.out().join("clean.parquet").exists());
}

/// `datavet sample` refuses sizes of zero, a target outside the classes and rates that are no
/// share, naming the flag (it panicked on zero sizes and clamped or spilled the rest).
#[test]
fn sample_refuses_impossible_sizes_and_rates() {
    let fx = Fixture::new();
    let out = fx.path("s.parquet");
    for (args, needle) in [
        (vec!["--classes", "0"], "`--classes` must be at least 1"),
        (vec!["--rows-per-class", "0"], "`--rows-per-class` must be at least 1"),
        (vec!["--dim", "0"], "`--dim` must be at least 1"),
        (vec!["--target", "10"], "`--target` must be one of the classes"),
        (vec!["--poison-rate", "1.5"], "`--poison-rate` must be a share"),
        (vec!["--poison-rate", "NaN"], "`--poison-rate` must be a share"),
        (
            vec!["--new-share", "1", "--new-out", "n.parquet"],
            "`--new-share` must be a share",
        ),
        (
            vec!["--classes", "1", "--attack", "label-flip", "--target", "0"],
            "`--classes` must be at least 2",
        ),
        (vec!["--strength", "1e308"], "`--strength` must be between"),
    ] {
        super::datavet()
            .arg("sample")
            .arg("--out")
            .arg(&out)
            .args(&args)
            .assert()
            .code(2)
            .stderr(contains(needle));
    }
    assert!(!out.exists());
    // The target is asked only of attacks that have one.
    super::datavet()
        .arg("sample")
        .arg("--out")
        .arg(&out)
        .args([
            "--classes",
            "2",
            "--attack",
            "label-flip",
            "--rows-per-class",
            "50",
            "--dim",
            "4",
        ])
        .assert()
        .success();
}

/// A FIFO named like a Parquet file, given or inside a folder, is an error, not a read that
/// never returns.
#[cfg(unix)]
#[test]
fn a_fifo_is_not_read() {
    let fx = Fixture::new();
    let dir = fx.path("in");
    std::fs::create_dir(&dir).unwrap();
    let fifo = dir.join("pipe.parquet");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("note: mkfifo unavailable; skipping");
        return;
    }
    for input in [&dir, &fifo] {
        fx.scan(input, &["-q"])
            .code(2)
            .stderr(contains("pipe.parquet: not a regular file or a directory"));
    }
    // A dangling link is named as not found.
    std::fs::remove_file(&fifo).unwrap();
    std::os::unix::fs::symlink(fx.path("gone.parquet"), dir.join("link.parquet")).unwrap();
    fx.scan(&dir, &["-q"])
        .code(2)
        .stderr(contains("link.parquet: cannot read: No such file"));
}

/// Role columns named like a column of scores.parquet are refused before the analysis (a label
/// named `quarantined` panicked the report after publishing; a source named `reasons` gave
/// scores.parquet two `reasons` columns, which readers refuse); input columns named like the
/// two quarantine.parquet adds (`suspicion`, `datavet_suspicion`) pass, under other names.
#[test]
fn role_columns_named_like_score_columns_are_refused() {
    use std::sync::Arc;

    use arrow_array::RecordBatch;
    use arrow_schema::{Field, Schema};

    let fx = Fixture::new();
    let data = datavet::testkit::generate(&datavet::testkit::Spec {
        kind: datavet::testkit::Kind::Gaussian,
        classes: 4,
        rows_per_class: 100,
        dim: 8,
        attack: datavet::testkit::Attack::None,
        seed: 3,
    });
    let batch = data.to_batch();
    let renamed = |names: [&str; 4]| {
        let fields: Vec<Field> = batch
            .schema()
            .fields()
            .iter()
            .zip(names)
            .map(|(f, n)| f.as_ref().clone().with_name(n))
            .collect();
        RecordBatch::try_new(Arc::new(Schema::new(fields)), batch.columns().to_vec()).unwrap()
    };
    let path = fx.path("q.parquet");
    super::write_batch(&path, &renamed(["id", "quarantined", "embedding", "reasons"]));
    for (args, needle) in [
        (
            &["--label-col", "quarantined"][..],
            "label column `quarantined` has the name",
        ),
        (
            &["--label-col", "quarantined", "--source-col", "reasons"][..],
            "label column `quarantined`",
        ),
    ] {
        fx.scan(&path, args).code(2).stderr(contains(needle));
    }
    let path = fx.path("s.parquet");
    super::write_batch(&path, &renamed(["id", "label", "embedding", "reasons"]));
    fx.scan(&path, &["--source-col", "reasons"])
        .code(2)
        .stderr(contains("source column `reasons` has the name"));
    assert!(!fx.out().join("clean.parquet").exists());
    let path = fx.path("suspicion.parquet");
    super::write_batch(&path, &renamed(["id", "label", "suspicion", "datavet_suspicion"]));
    fx.scan(&path, &["--activations-col", "suspicion"]).success();
    let schema = super::read_all(&fx.out().join("quarantine.parquet")).schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        [
            "id",
            "label",
            "suspicion",
            "datavet_suspicion",
            "datavet_datavet_suspicion",
            "reasons"
        ]
    );
}

/// An --out inside an input folder is refused (its outputs would be read as data by the next
/// scan, which then failed on their schema); one named `_*`, which the walk skips, is fine.
#[test]
fn an_output_directory_inside_the_input_is_refused() {
    let Some(file) = Fixture::format("pyarrow_list_f32.parquet") else {
        return;
    };
    let fx = Fixture::new();
    let dir = fx.path("data");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(&file, dir.join("part.parquet")).unwrap();
    super::datavet()
        .args(["scan", "--input"])
        .arg(&dir)
        .arg("--out")
        .arg(dir.join("out"))
        .assert()
        .code(2)
        .stderr(contains("the output directory is inside the input"));
    for _ in 0..2 {
        super::datavet()
            .args(["scan", "-q", "--input"])
            .arg(&dir)
            .arg("--out")
            .arg(dir.join("_datavet"))
            .assert()
            .success();
    }
}

/// A mistyped --out several folders deep: every folder the failed run created is removed.
#[test]
fn a_failed_run_removes_every_folder_it_created_for_out() {
    let Some(input) = Fixture::format("bad_truncated.parquet") else {
        return;
    };
    let fx = Fixture::new();
    for out in ["nest/a/b", "nest/../other"] {
        super::datavet()
            .args(["scan", "--input"])
            .arg(&input)
            .arg("--out")
            .arg(fx.path(out))
            .assert()
            .code(2);
        assert!(!fx.path("nest").exists() && !fx.path("other").exists(), "{out}");
    }
}

/// Files whose struct column names its fields otherwise hold other data: refused, naming the
/// column (matched by position, another file's `x, y` were written out as `a, b`). The same
/// fields in another order are the same data: each value lands under its own name.
#[test]
fn struct_fields_are_matched_by_name_across_files() {
    use std::sync::Arc;

    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    use arrow_array::{
        Array, ArrayRef, FixedSizeListArray, Float32Array, Int64Array, RecordBatch, StringArray, StructArray,
    };
    use arrow_schema::{DataType, Field, Fields, Schema};

    let rows: usize = 120;
    // `meta` holds (number = id, text = "r{id}") under the given names, in the given order.
    let write = |path: &std::path::Path, first_id: i64, names: [&str; 2], number_first: bool| {
        let ids: Vec<i64> = (0..rows as i64).map(|i| first_id + i).collect();
        let number: ArrayRef = Arc::new(Int64Array::from(ids.clone()));
        let text: ArrayRef = Arc::new(StringArray::from(
            ids.iter().map(|i| format!("r{i}")).collect::<Vec<_>>(),
        ));
        let (number_field, text_field) = (
            Field::new(names[0], DataType::Int64, false),
            Field::new(names[1], DataType::Utf8, false),
        );
        let meta = if number_first {
            StructArray::new(Fields::from(vec![number_field, text_field]), vec![number, text], None)
        } else {
            StructArray::new(Fields::from(vec![text_field, number_field]), vec![text, number], None)
        };
        let item = Arc::new(Field::new("item", DataType::Float32, false));
        let vectors = (0..rows * 4)
            .map(|i| ((i * 7919) % 101) as f32 / 10.0)
            .collect::<Vec<_>>();
        let embedding = FixedSizeListArray::new(item, 4, Arc::new(Float32Array::from(vectors)), None);
        let labels = Int64Array::from((0..rows as i64).map(|i| i % 2).collect::<Vec<_>>());
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("label", DataType::Int64, false),
            Field::new("embedding", embedding.data_type().clone(), false),
            Field::new("meta", meta.data_type().clone(), false),
        ]);
        let batch = RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(labels),
                Arc::new(embedding),
                Arc::new(meta),
            ],
        )
        .unwrap();
        super::write_batch(path, &batch);
    };
    let fx = Fixture::new();
    let renamed = fx.path("renamed");
    std::fs::create_dir(&renamed).unwrap();
    write(&renamed.join("part-0.parquet"), 0, ["number", "text"], true);
    write(&renamed.join("part-1.parquet"), 1000, ["n", "t"], true);
    fx.scan(&renamed, &["-q"])
        .code(2)
        .stderr(contains("part-1.parquet"))
        .stderr(contains("column `meta`"));
    assert!(!fx.out().join("clean.parquet").exists());

    let reordered = fx.path("reordered");
    std::fs::create_dir(&reordered).unwrap();
    write(&reordered.join("part-0.parquet"), 0, ["number", "text"], true);
    write(&reordered.join("part-1.parquet"), 1000, ["number", "text"], false);
    fx.scan(&reordered, &["-q"]).code(0);
    let mut seen = 0;
    for file in ["clean.parquet", "quarantine.parquet"] {
        let batch = super::read_all(&fx.out().join(file));
        let column = |name: &str| batch.column_by_name(name).unwrap().clone();
        let (ids, meta) = (column("id"), column("meta"));
        let (ids, meta) = (ids.as_primitive::<Int64Type>(), meta.as_struct());
        let number = meta.column_by_name("number").unwrap().as_primitive::<Int64Type>();
        let text = meta.column_by_name("text").unwrap().as_string::<i32>();
        for row in 0..batch.num_rows() {
            assert_eq!(number.value(row), ids.value(row), "{file} row {row}");
            assert_eq!(text.value(row), format!("r{}", ids.value(row)), "{file} row {row}");
            seen += 1;
        }
    }
    assert_eq!(seen, 2 * rows);
}
