//! Human reports, exports and releases: regenerated from a run directory, hostile data strings
//! come out as plain text everywhere, and a release keeps every row in exactly one file.

use std::path::Path;

use datavet::testkit::{self, Attack, Kind, Spec};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use predicates::str::contains;

use super::{Fixture, datavet, write_batch};

fn rows(path: &Path) -> usize {
    ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap())
        .unwrap()
        .metadata()
        .file_metadata()
        .num_rows() as usize
}

/// 5 classes x 200 records, 16 dims, 6% label flips.
fn flips(seed: u64) -> testkit::Synthetic {
    testkit::generate(&Spec {
        kind: Kind::Gaussian,
        classes: 5,
        rows_per_class: 200,
        dim: 16,
        attack: Attack::LabelFlip { rate: 0.06 },
        seed,
    })
}

fn flipped_run(fx: &Fixture) {
    let input = fx.path("flips.parquet");
    flips(51).write_parquet(&input, 250).unwrap();
    fx.scan(&input, &[]).success();
}

#[test]
fn a_scan_writes_html_and_markdown_reports_that_can_be_regenerated() {
    let fx = Fixture::new();
    flipped_run(&fx);
    let html = std::fs::read_to_string(fx.out().join("report.html")).unwrap();
    for part in [
        "<svg",
        "Most suspicious records",
        "Sources",
        "vendor-",
        "quarantine at 0.500",
        "confident_learning",
    ] {
        assert!(html.contains(part), "report.html has `{part}`");
    }
    assert!(!html.contains("<script"), "no script in the page");
    let md = std::fs::read_to_string(fx.out().join("report.md")).unwrap();
    assert!(md.contains("## Most suspicious records"));
    std::fs::remove_file(fx.out().join("report.html")).unwrap();
    datavet()
        .arg("report")
        .arg(fx.out())
        .assert()
        .success()
        .stdout(contains("report.html"));
    assert_eq!(std::fs::read_to_string(fx.out().join("report.html")).unwrap(), html);
}

#[test]
fn hostile_strings_of_real_writers_are_plain_text_in_the_reports() {
    let Some(input) = Fixture::format("pyarrow_hostile_strings.parquet") else {
        return;
    };
    let fx = Fixture::new();
    fx.scan(&input, &[]).success();
    let html = std::fs::read_to_string(fx.out().join("report.html")).unwrap();
    assert!(!html.contains("<script>alert"), "script tags escaped");
    assert!(!html.contains("<img src=x"), "event-handler markup escaped");
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
    assert!(html.contains("\\u{202e}evil"), "RTL override shown, not applied");
    assert!(!html.contains('\u{202e}') && !html.contains('\0'));
    assert!(html.contains("(5000 chars)"), "long values cut");
    let md = std::fs::read_to_string(fx.out().join("report.md")).unwrap();
    assert!(!md.contains("<script") && !md.contains('\u{202e}'));
    for line in md.lines().filter(|l| l.starts_with("| ") && l.contains("script")) {
        // Every table row keeps its cell count: no `|` from the data splits a cell.
        let cells = line.matches(" | ").count();
        assert!(cells == 2 || cells == 4, "{line}");
    }
}

/// The strings of ../shared/formats/pyarrow_hostile_strings.parquet, as ids and sources of
/// generated records with label flips, so some of them reach the quarantine and its exports.
const HOSTILE: [&str; 8] = [
    "<script>alert('x')</script>",
    "\"><img src=x onerror=alert(1)>",
    "line1\nline2\r\nline3",
    "tab\tsep,comma;semi",
    "\u{202e}evil\u{202c}",
    "\0nul-inside",
    "' OR 1=1 --",
    "{{template}}",
];

#[test]
fn hostile_ids_and_sources_stay_exact_and_parseable_in_exports() {
    use arrow_array::{ArrayRef, RecordBatch, StringArray};
    let fx = Fixture::new();
    let data = flips(53);
    let batch = data.to_batch();
    let ids: Vec<String> = (0..batch.num_rows())
        .map(|i| format!("{}#{i}", HOSTILE[i % 8]))
        .collect();
    let sources: Vec<String> = (0..batch.num_rows())
        .map(|i| HOSTILE[(i / 3) % 8].repeat(1 + i % 2))
        .collect();
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    let schema = arrow_schema::Schema::new(
        batch
            .schema()
            .fields()
            .iter()
            .map(|f| {
                if f.name() == "id" {
                    arrow_schema::Field::new("id", arrow_schema::DataType::Utf8, false)
                } else {
                    f.as_ref().clone()
                }
            })
            .collect::<Vec<_>>(),
    );
    columns[0] = std::sync::Arc::new(StringArray::from(ids.clone()));
    columns[3] = std::sync::Arc::new(StringArray::from(sources));
    let hostile = RecordBatch::try_new(std::sync::Arc::new(schema), columns).unwrap();
    let input = fx.path("hostile.parquet");
    write_batch(&input, &hostile);
    fx.scan(&input, &[]).success();
    let q = rows(&fx.out().join("quarantine.parquet"));
    assert!(q > 10, "label flips quarantined: {q}");
    for format in ["csv", "jsonl"] {
        datavet()
            .args(["export", fx.out().to_str().unwrap(), "--format", format])
            .assert()
            .success();
    }
    let jsonl = std::fs::read_to_string(fx.out().join("quarantine.jsonl")).unwrap();
    let parsed: Vec<serde_json::Value> = jsonl.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(parsed.len(), q, "one valid JSON object per quarantined row");
    for v in &parsed {
        assert!(
            ids.contains(&v["id"].as_str().unwrap().to_string()),
            "ids exact: {}",
            v["id"]
        );
    }
    let csv = std::fs::read(fx.out().join("quarantine.csv")).unwrap();
    assert_eq!(
        csv_records(&csv),
        q + 1,
        "header + one CSV record per row, newlines kept inside quotes"
    );
    let html = std::fs::read_to_string(fx.out().join("report.html")).unwrap();
    assert!(!html.contains("<script>") && !html.contains("<img src=x") && !html.contains('\u{202e}'));
    let md = std::fs::read_to_string(fx.out().join("report.md")).unwrap();
    assert!(!md.contains("<script>") && !md.contains("<img") && !md.contains('\u{202e}'));
}

/// Counts RFC 4180 records (newlines inside quoted fields do not end a record).
fn csv_records(bytes: &[u8]) -> usize {
    let (mut quoted, mut records) = (false, 0);
    for &b in bytes {
        match b {
            b'"' => quoted = !quoted,
            b'\n' if !quoted => records += 1,
            _ => {}
        }
    }
    assert!(!quoted, "quotes balance");
    records
}

/// The columns of `path`'s first row group that carry a dictionary page.
fn dictionary_columns(path: &Path) -> Vec<String> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap()).unwrap();
    reader
        .metadata()
        .row_group(0)
        .columns()
        .iter()
        .filter(|c| c.dictionary_page_offset().is_some())
        .map(|c| c.column_path().string())
        .collect()
}

#[test]
fn release_moves_reviewed_rows_back_and_logs_who_when_why() {
    let fx = Fixture::new();
    flipped_run(&fx);
    let (clean0, q0) = (
        rows(&fx.out().join("clean.parquet")),
        rows(&fx.out().join("quarantine.parquet")),
    );
    datavet()
        .args(["export", fx.out().to_str().unwrap(), "--format", "csv", "--out"])
        .arg(fx.path("review.csv"))
        .assert()
        .success();
    let csv = std::fs::read_to_string(fx.path("review.csv")).unwrap();
    let ids: Vec<&str> = csv
        .lines()
        .skip(1)
        .take(2)
        .map(|l| l.split(',').next().unwrap().trim_matches('"'))
        .collect();
    std::fs::write(
        fx.path("ids.txt"),
        format!("# reviewed today\n{}\n\n{}\n", ids[0], ids[1]),
    )
    .unwrap();
    // The audit log is appended to, never replaced: here it links to a team's central log.
    #[cfg(unix)]
    {
        std::fs::write(fx.path("central.jsonl"), "").unwrap();
        std::os::unix::fs::symlink(fx.path("central.jsonl"), fx.out().join("audit.jsonl")).unwrap();
    }
    datavet()
        .args(["release", fx.out().to_str().unwrap(), "--ids"])
        .arg(fx.path("ids.txt"))
        .args(["--reason", "checked by hand", "--by", "alice"])
        .assert()
        .success()
        .stdout(contains("released 2 rows"));
    assert_eq!(rows(&fx.out().join("clean.parquet")), clean0 + 2);
    assert_eq!(rows(&fx.out().join("quarantine.parquet")), q0 - 2);
    // Rewritten as a scan writes them: ids and vectors without a dictionary, labels with one.
    for file in ["clean.parquet", "quarantine.parquet"] {
        let dictionary = dictionary_columns(&fx.out().join(file));
        assert!(dictionary.iter().any(|c| c == "label"), "{file}: {dictionary:?}");
        assert!(
            !dictionary.iter().any(|c| c == "id" || c.starts_with("embedding")),
            "{file}: {dictionary:?}"
        );
    }
    let audit = std::fs::read_to_string(fx.out().join("audit.jsonl")).unwrap();
    #[cfg(unix)]
    {
        assert!(fx.out().join("audit.jsonl").is_symlink());
        assert_eq!(std::fs::read_to_string(fx.path("central.jsonl")).unwrap(), audit);
    }
    let entry: serde_json::Value = serde_json::from_str(audit.lines().next().unwrap()).unwrap();
    assert_eq!(entry["by"], "alice");
    assert_eq!(entry["reason"], "checked by hand");
    assert_eq!(entry["ids"], serde_json::json!([ids[0], ids[1]]));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fx.out().join("report.json")).unwrap()).unwrap();
    assert_eq!(report["totals"]["quarantined"], q0 - 2);
    // Releasing them again fails (they are no longer quarantined) and changes nothing.
    datavet()
        .args(["release", fx.out().to_str().unwrap(), "--ids"])
        .arg(fx.path("ids.txt"))
        .args(["--reason", "again"])
        .assert()
        .code(2)
        .stderr(contains("2 id(s) are not in the quarantine"));
    assert_eq!(rows(&fx.out().join("clean.parquet")), clean0 + 2);
    assert_eq!(
        std::fs::read_to_string(fx.out().join("audit.jsonl"))
            .unwrap()
            .lines()
            .count(),
        1
    );
}

/// `export` never writes over the run's own files, `release` wants a reason and a name for the
/// audit log, and waits for no one: while a scan holds the output directory it is refused (a
/// scan publishing meanwhile overwrote a release the audit log recorded).
#[test]
fn review_commands_guard_the_run_directory() {
    let fx = Fixture::new();
    flipped_run(&fx);
    let clean = std::fs::read(fx.out().join("clean.parquet")).unwrap();
    for name in ["clean.parquet", "report.json"] {
        datavet()
            .args(["export", fx.out().to_str().unwrap(), "--format", "parquet", "--out"])
            .arg(fx.out().join(name))
            .assert()
            .code(2)
            .stderr(contains("is one of the run's own outputs"));
    }
    assert_eq!(std::fs::read(fx.out().join("clean.parquet")).unwrap(), clean);
    let quarantined = read_quarantined_ids(&fx.out());
    std::fs::write(fx.path("ids.txt"), format!("{}\n", quarantined[0])).unwrap();
    let release = |reason: &str| {
        let mut cmd = datavet();
        cmd.args(["release", fx.out().to_str().unwrap(), "--ids"])
            .arg(fx.path("ids.txt"))
            .args(["--reason", reason, "--by", "alice"]);
        cmd.assert()
    };
    release(" ").code(2).stderr(contains("--reason is empty"));
    let lock = datavet::io::lock_output_dir(&fx.out()).unwrap();
    release("checked")
        .code(2)
        .stderr(contains("another datavet run is writing"));
    drop(lock);
    release("checked").success().stdout(contains("released 1 rows"));
    // A run killed between replacing clean.parquet and quarantine.parquet leaves rows in both
    // (here: every input row in clean): a release on top is refused, nothing moves.
    std::fs::write(fx.path("ids.txt"), format!("{}\n", quarantined[1])).unwrap();
    std::fs::copy(fx.path("flips.parquet"), fx.out().join("clean.parquet")).unwrap();
    let quarantine = std::fs::read(fx.out().join("quarantine.parquet")).unwrap();
    release("checked")
        .code(2)
        .stderr(contains("(a run killed while replacing them?); nothing was released"));
    assert_eq!(std::fs::read(fx.out().join("quarantine.parquet")).unwrap(), quarantine);
}

/// The input's schema metadata (pandas' index, a writer's notes) survives a release and an
/// export as it survives a scan (both rewrote the files without it).
#[test]
fn release_and_export_keep_the_schema_metadata() {
    let fx = Fixture::new();
    let input = fx.path("flips.parquet");
    let batch = flips(51).to_batch();
    let metadata = std::collections::HashMap::from([("owner".to_string(), "ml-platform".to_string())]);
    let schema = std::sync::Arc::new(batch.schema().as_ref().clone().with_metadata(metadata));
    let batch = batch.with_schema(schema).unwrap();
    write_batch(&input, &batch);
    fx.scan(&input, &[]).success();
    let quarantined = read_quarantined_ids(&fx.out());
    release_one(&fx, &quarantined[0].to_string()).success();
    datavet()
        .args(["export", fx.out().to_str().unwrap(), "--format", "parquet", "--out"])
        .arg(fx.path("export.parquet"))
        .assert()
        .success();
    for path in [
        fx.out().join("clean.parquet"),
        fx.out().join("quarantine.parquet"),
        fx.path("export.parquet"),
    ] {
        let builder = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path).unwrap()).unwrap();
        assert_eq!(
            builder.schema().metadata().get("owner").map(String::as_str),
            Some("ml-platform"),
            "{}",
            path.display()
        );
    }
}

/// UInt64 ids above i64::MAX (64-bit hashes as ids) are keyed by their decimal text: scores.parquet
/// names them as the input does (it held them wrapped to negative numbers), and a release keeps
/// scores.parquet and quarantine.parquet agreeing, also through the next scan.
#[test]
fn unsigned_ids_above_i64_max_keep_their_values() {
    let fx = Fixture::new();
    let input = fx.path("u64.parquet");
    let batch = flips(51).to_batch();
    let ids = arrow_array::UInt64Array::from((0..batch.num_rows() as u64).map(|i| u64::MAX - i).collect::<Vec<_>>());
    let mut columns = batch.columns().to_vec();
    columns[0] = std::sync::Arc::new(ids);
    let mut fields: Vec<arrow_schema::Field> = batch.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields[0] = arrow_schema::Field::new("id", arrow_schema::DataType::UInt64, false);
    let batch =
        arrow_array::RecordBatch::try_new(std::sync::Arc::new(arrow_schema::Schema::new(fields)), columns).unwrap();
    write_batch(&input, &batch);
    fx.scan(&input, &[]).success();
    let quarantined: Vec<u64> = {
        let q = super::read_all(&fx.out().join("quarantine.parquet"));
        let ids = q.column_by_name("id").unwrap();
        let ids = ids.as_any().downcast_ref::<arrow_array::UInt64Array>().unwrap();
        ids.values().to_vec()
    };
    assert!(quarantined.len() >= 2 && quarantined.iter().all(|&id| id > i64::MAX as u64));
    let scores_quarantined = || {
        let s = super::read_all(&fx.out().join("scores.parquet"));
        let ids = s
            .column_by_name("id")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow_array::StringArray>()
            .unwrap()
            .clone();
        let flags = s
            .column_by_name("quarantined")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow_array::BooleanArray>()
            .unwrap()
            .clone();
        (0..s.num_rows())
            .filter(|&i| flags.value(i))
            .map(|i| ids.value(i).parse::<u64>().unwrap())
            .collect::<Vec<_>>()
    };
    let mut listed = scores_quarantined();
    listed.sort();
    let mut expected = quarantined.clone();
    expected.sort();
    assert_eq!(listed, expected);
    release_one(&fx, &quarantined[0].to_string()).success();
    fx.scan(&input, &[]).success();
    let after = scores_quarantined();
    assert_eq!(after.len(), quarantined.len() - 1);
    assert!(!after.contains(&quarantined[0]));
    assert_eq!(rows(&fx.out().join("quarantine.parquet")), quarantined.len() - 1);
}

/// `datavet release OUT` of the one id `id`, reason "checked", by alice.
fn release_one(fx: &Fixture, id: &str) -> assert_cmd::assert::Assert {
    std::fs::write(fx.path("ids.txt"), format!("{id}\n")).unwrap();
    datavet()
        .args(["release", fx.out().to_str().unwrap(), "--ids"])
        .arg(fx.path("ids.txt"))
        .args(["--reason", "checked", "--by", "alice"])
        .assert()
}

/// A release killed among its renames (DATAVET_FAIL_AFTER_RENAMES: exits as a kill would after
/// replacing clean.parquet only) is finished by the next command on the directory: the record
/// is in clean once, its audit line and the reference's release are there, nothing is doubled.
#[test]
fn a_release_killed_while_publishing_is_finished_by_the_next_command() {
    let fx = Fixture::new();
    flipped_run(&fx);
    let (clean0, q0) = (
        rows(&fx.out().join("clean.parquet")),
        rows(&fx.out().join("quarantine.parquet")),
    );
    let id = read_quarantined_ids(&fx.out())[0];
    std::fs::write(fx.path("ids.txt"), format!("{id}\n")).unwrap();
    datavet()
        .env("DATAVET_FAIL_AFTER_RENAMES", "1")
        .args(["release", fx.out().to_str().unwrap(), "--ids"])
        .arg(fx.path("ids.txt"))
        .args(["--reason", "checked", "--by", "alice"])
        .assert()
        .code(137);
    // Half done: the record is in both files, and no audit line says why.
    assert_eq!(rows(&fx.out().join("clean.parquet")), clean0 + 1);
    assert_eq!(rows(&fx.out().join("quarantine.parquet")), q0);
    assert!(!fx.out().join("audit.jsonl").exists());
    datavet()
        .args(["report", fx.out().to_str().unwrap()])
        .assert()
        .success()
        .stderr(contains("stopped while publishing"));
    assert_eq!(rows(&fx.out().join("clean.parquet")), clean0 + 1);
    assert_eq!(rows(&fx.out().join("quarantine.parquet")), q0 - 1);
    assert!(!read_quarantined_ids(&fx.out()).contains(&id));
    let audit = std::fs::read_to_string(fx.out().join("audit.jsonl")).unwrap();
    assert_eq!(audit.lines().count(), 1);
    let releases = std::fs::read_dir(fx.out().join("reference"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("released.json"))
        .find(|p| p.is_file())
        .expect("the reference remembers the release");
    assert!(std::fs::read_to_string(&releases).unwrap().contains(&id.to_string()));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fx.out().join("report.json")).unwrap()).unwrap();
    assert_eq!(report["totals"]["quarantined"], q0 - 1);
    // The reference's snapshot is the released outputs, as after a release not interrupted.
    let generation = releases.parent().unwrap();
    for file in ["scores.parquet", "report.json"] {
        let (snapshot, published) = (generation.join(file), fx.out().join(file));
        assert!(
            std::fs::read(snapshot).unwrap() == std::fs::read(published).unwrap(),
            "{file}"
        );
    }
}

#[test]
fn review_commands_name_a_directory_that_is_not_a_run() {
    let fx = Fixture::new();
    std::fs::create_dir_all(fx.out()).unwrap();
    datavet()
        .args(["export", fx.out().to_str().unwrap(), "--format", "csv"])
        .assert()
        .code(2)
        .stderr(contains(
            "not a datavet output directory (quarantine.parquet is missing)",
        ));
}

#[test]
fn json_logs_are_one_object_per_line() {
    let fx = Fixture::new();
    let input = fx.path("in.parquet");
    testkit::generate(&Spec {
        kind: Kind::Gaussian,
        classes: 3,
        rows_per_class: 100,
        dim: 8,
        attack: Attack::None,
        seed: 52,
    })
    .write_parquet(&input, 100)
    .unwrap();
    let out = fx.scan(&input, &["-v", "--log-format", "json"]).success();
    let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert!(!stderr.is_empty());
    for line in stderr.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string() && v["msg"].is_string() && v["ts"].is_string());
    }
    // The error that stops a run is a JSON line too (it was plain text).
    let failed = fx.scan(&fx.path("missing.parquet"), &["--log-format", "json"]).code(2);
    let stderr = String::from_utf8(failed.get_output().stderr.clone()).unwrap();
    let v: serde_json::Value = serde_json::from_str(stderr.trim()).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    assert_eq!(v["level"], "ERROR");
    assert!(v["msg"].as_str().unwrap().contains("missing.parquet"), "{v}");
}

/// Headless Debian chromium, when installed (CI installs it): `None` with a note otherwise.
fn chromium() -> Option<std::path::PathBuf> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH")
                .into_iter()
                .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        });
    if found.is_none() {
        eprintln!("note: no chromium on PATH; skipping the browser check of report.html");
    }
    found
}

#[test]
fn report_html_renders_in_a_real_browser_with_hostile_strings_as_text() {
    let (Some(browser), Some(input)) = (chromium(), Fixture::format("pyarrow_hostile_strings.parquet")) else {
        return;
    };
    let fx = Fixture::new();
    fx.scan(&input, &[]).success();
    let page = format!("file://{}", fx.out().join("report.html").display());
    let headless = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"];
    let profile = format!("--user-data-dir={}", fx.path("chromium-profile").display());
    // The DOM after the browser parsed the page: hostile values must be text nodes, never
    // elements (a <script> or <img> element here would mean markup got through).
    let dom = std::process::Command::new(&browser)
        .args(headless)
        .arg(&profile)
        .arg("--dump-dom")
        .arg(&page)
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains("datavet report"),
        "the page loaded: {}",
        &dom[..dom.len().min(300)]
    );
    assert!(!dom.contains("<script"), "no script element in the rendered DOM");
    assert!(!dom.contains("<img"), "no img element in the rendered DOM");
    assert!(
        dom.contains("&lt;script&gt;alert('x')&lt;/script&gt;"),
        "the value is shown as text"
    );
    assert!(dom.contains("<svg"), "plots are inline SVG");
    let shot = fx.path("report.png");
    std::process::Command::new(&browser)
        .args(headless)
        .arg(&profile)
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1200,1600")
        .arg(&page)
        .output()
        .expect("run chromium");
    let png = std::fs::read(&shot).expect("a screenshot was written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "a real rendering: {} bytes",
        png.len()
    );
}

#[test]
fn diff_of_two_nightly_scans_lists_new_released_and_gone_quarantines() {
    use arrow_array::RecordBatch;
    let fx = Fixture::new();
    let data = flips(54);
    let batch = data.to_batch();
    // Yesterday: the first 800 rows; tonight: rows 100.. (100 gone, 200 new).
    let write = |name: &str, b: RecordBatch| {
        let path = fx.path(name);
        write_batch(&path, &b);
        path
    };
    let (old_in, new_in) = (
        write("old.parquet", batch.slice(0, 800)),
        write("new.parquet", batch.slice(100, 900)),
    );
    let (old_out, new_out) = (fx.path("old_out"), fx.path("new_out"));
    scan_both([(&old_in, &old_out), (&new_in, &new_out)]);
    let out = datavet().arg("diff").arg(&old_out).arg(&new_out).assert().success();
    let line = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(
        line.starts_with("datavet diff: ") && line.contains("200 records added, 100 removed"),
        "{line}"
    );
    let d: serde_json::Value = serde_json::from_slice(&std::fs::read(new_out.join("diff.json")).unwrap()).unwrap();
    let ids = |v: &serde_json::Value| -> Vec<i64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r["key"].as_str().unwrap().parse().unwrap())
            .collect()
    };
    // Every newly quarantined record is quarantined tonight; every gone one is outside rows 100..1000.
    let tonight = read_quarantined_ids(&new_out);
    assert!(ids(&d["newly_quarantined"]).iter().all(|i| tonight.contains(i)));
    assert!(ids(&d["gone"]).iter().all(|&i| i < 100_100));
    assert!(
        d["newly_quarantined_new_records"].as_u64().unwrap() > 0,
        "flips among the new rows are new quarantines"
    );
    assert_eq!(d["per_class"].as_array().unwrap().len(), 5);
    // Same distribution, overlapping rows: no class drifts past the notice level (class 0 lost
    // half its clean rows, so its flipped share and its mean moved a little). Class 4 had only
    // flipped records yesterday, too few to analyse, so it has no earlier geometry.
    let drift = d["drift"].as_array().unwrap();
    assert_eq!(drift.len(), 4);
    assert!(drift.iter().all(|c| c["shift"].as_f64().unwrap() < 0.25), "{drift:?}");
    assert!(!d["per_source"].as_array().unwrap().is_empty());
    // Gate: any new quarantine fails the nightly job.
    datavet()
        .arg("diff")
        .arg(&old_out)
        .arg(&new_out)
        .args(["--fail-if-new", "0"])
        .assert()
        .code(3);
}

fn read_quarantined_ids(out: &Path) -> Vec<i64> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(out.join("quarantine.parquet")).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let mut ids = Vec::new();
    for b in reader {
        let b = b.unwrap();
        let c = b.column_by_name("id").unwrap();
        ids.extend(
            c.as_any()
                .downcast_ref::<arrow_array::Int64Array>()
                .unwrap()
                .values()
                .iter()
                .copied(),
        );
    }
    ids
}

#[test]
fn diff_measures_the_drift_of_a_class_that_moved() {
    use arrow_array::builder::{FixedSizeListBuilder, Float32Builder};
    use arrow_array::{ArrayRef, RecordBatch};
    let fx = Fixture::new();
    let data = flips(55);
    let batch = data.to_batch();
    // Tonight class 0's vectors are shifted by about its own radius along the first axis.
    let mut emb = FixedSizeListBuilder::new(Float32Builder::new(), 16);
    for (i, row) in data.x.chunks_exact(16).enumerate() {
        let shift = if data.labels[i] == 0 { 4.0 } else { 0.0 };
        emb.values().append_value(row[0] + shift);
        emb.values().append_slice(&row[1..]);
        emb.append(true);
    }
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    columns[2] = std::sync::Arc::new(emb.finish());
    let moved = RecordBatch::try_new(batch.schema(), columns).unwrap();
    let (before_in, now_in) = (fx.path("before.parquet"), fx.path("now.parquet"));
    write_batch(&before_in, &batch);
    write_batch(&now_in, &moved);
    let (before, now) = (fx.path("before"), fx.path("now"));
    scan_both([(&before_in, &before), (&now_in, &now)]);
    datavet()
        .arg("diff")
        .arg(&before)
        .arg(&now)
        .assert()
        .success()
        .stdout(contains("drift over 0.25: 0 "));
    let d: serde_json::Value = serde_json::from_slice(&std::fs::read(now.join("diff.json")).unwrap()).unwrap();
    let top = &d["drift"][0];
    assert_eq!(top["class"], "0", "the moved class drifts most: {}", d["drift"]);
    assert!(top["shift"].as_f64().unwrap() > 0.3);
    assert!(d["drift"][1]["shift"].as_f64().unwrap() < 0.1, "the others stay put");
}

/// Scans each (input, out) pair: the two nights a diff compares.
fn scan_both(runs: [(&Path, &Path); 2]) {
    for (input, out) in runs {
        datavet()
            .arg("scan")
            .arg("--input")
            .arg(input)
            .arg("--out")
            .arg(out)
            .assert()
            .success();
    }
}

/// `ack` needs a reason and a reference whose alert it acknowledges.
#[test]
fn ack_wants_a_reason_and_a_reference() {
    let fx = Fixture::new();
    let input = fx.path("flips.parquet");
    flips(52).write_parquet(&input, 250).unwrap();
    fx.scan(&input, &["--no-reference"]).success();
    let ack = |reason: &str| {
        datavet()
            .args(["ack", fx.out().to_str().unwrap(), "--reason", reason, "--by", "alice"])
            .assert()
    };
    ack(" ").code(2).stderr(contains("--reason is empty"));
    ack("checked").code(2).stderr(contains("no reference saved here"));
    assert!(!fx.out().join("audit.jsonl").exists());
}
