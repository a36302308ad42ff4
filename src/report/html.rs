//! `report.html`: one self-contained page (inline CSS and SVG, no script, no network) for the
//! person who reviews a quarantine: summary, per-class table, per-class 2-D projections, score
//! histograms with their thresholds, per-source table, and the most suspicious records.
//!
//! Every data string is passed through `view::plain_text` and then HTML-escaped ([`esc`]); the
//! page declares a Content-Security-Policy that forbids scripts, as a second line of defence.

use std::fmt::Write;

use super::view::{RecordRow, RunView, plain_text};

/// Longest data value shown in a table cell.
const MAX_CHARS: usize = 120;
/// Records drawn per class scatter plot (evenly sampled beyond that).
const MAX_POINTS: usize = 1500;
/// Records listed in "most suspicious".
const TOP_N: usize = 50;

/// HTML-escapes a data string (after making it plain text).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in plain_text(s, MAX_CHARS).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}\
table{border-collapse:collapse;margin:8px 0 20px}td,th{border:1px solid #ccc;padding:3px 8px;\
text-align:left;vertical-align:top}th{background:#f3f3f3}.num{text-align:right}\
.attacked{background:#fde2e2}.plots{display:flex;flex-wrap:wrap;gap:12px}\
figure{margin:0}figcaption{font-size:12px;color:#555}.legend span{margin-right:14px}\
td.reason{max-width:520px;word-break:break-word}";

/// The whole page.
pub fn render(view: &RunView) -> String {
    let r = &view.report;
    let totals = &r["totals"];
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
         <title>datavet report</title><style>{STYLE}</style></head><body>"
    );
    let _ = write!(
        html,
        "<h1>datavet report</h1><p>{} {}: {} rows in {} classes; <b>{} quarantined</b> ({:.2}%); \
         attacked classes: {}; row conservation: {}.</p>",
        esc(r["tool"]["name"].as_str().unwrap_or("datavet")),
        esc(r["tool"]["version"].as_str().unwrap_or("")),
        totals["rows"],
        totals["classes"],
        totals["quarantined"],
        100.0 * totals["quarantine_fraction"].as_f64().unwrap_or(0.0),
        list_or_none(totals["attacked_classes"].as_array()),
        if r["conservation"]["ok"].as_bool() == Some(true) {
            "checked, every input row is in exactly one output"
        } else {
            "FAILED"
        },
    );
    if let Some(warnings) = r["warnings"].as_array().filter(|w| !w.is_empty()) {
        html.push_str("<h2>Warnings</h2><ul>");
        for w in warnings {
            let _ = write!(html, "<li>{}</li>", esc(w.as_str().unwrap_or("")));
        }
        html.push_str("</ul>");
    }
    class_table(&mut html, view);
    scatter_plots(&mut html, view);
    histograms(&mut html, view);
    source_table(&mut html, view);
    top_records(&mut html, view);
    inputs(&mut html, view);
    html.push_str("</body></html>\n");
    html
}

fn list_or_none(items: Option<&Vec<serde_json::Value>>) -> String {
    let names: Vec<String> = items
        .into_iter()
        .flatten()
        .map(|v| format!("<code>{}</code>", esc(v.as_str().unwrap_or(""))))
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

fn class_table(html: &mut String, view: &RunView) {
    html.push_str(
        "<h2>Classes</h2><table><tr><th>class</th><th class=num>rows</th><th>verdict</th>\
         <th class=num>quarantined</th><th class=num title=\"records whose vector is all zero: \
         no detector working on the vectors can tell them apart\">all-zero</th><th>why</th></tr>",
    );
    for c in view.report["classes"].as_array().into_iter().flatten() {
        let verdict = &c["verdict"];
        let attacked = verdict["attacked"].as_bool() == Some(true);
        let (status, why) = match c["skipped"].as_str() {
            Some(skip) => ("skipped", skip.to_string()),
            None if attacked => ("attacked", verdict["why"].as_str().unwrap_or("").to_string()),
            None => ("clean", verdict["why"].as_str().unwrap_or("").to_string()),
        };
        let _ = write!(
            html,
            "<tr{}><td><code>{}</code></td><td class=num>{}</td><td>{status}</td><td class=num>{}</td>\
             <td class=num>{}</td><td class=reason>{}</td></tr>",
            if attacked { " class=attacked" } else { "" },
            esc(c["label"].as_str().unwrap_or("")),
            c["rows"],
            verdict["flagged"].as_u64().unwrap_or(0),
            // Reports of releases before 0.2.22 have no count.
            c["zero_vectors"].as_u64().map_or("-".to_string(), |z| z.to_string()),
            esc(&why),
        );
    }
    html.push_str("</table>");
}

/// Per class: records on the class's top two principal directions, coloured by activation
/// clustering's cluster, quarantined records in red.
fn scatter_plots(html: &mut String, view: &RunView) {
    html.push_str(
        "<h2>Classes in two dimensions</h2><p class=legend>Each class on its top two principal \
         directions. <span style=\"color:#7f8fa6\">&#9679; cluster 0</span><span style=\"color:#1b9e77\">\
         &#9679; cluster 1</span> (activation clustering) <span style=\"color:#d62728\">&#9679; quarantined</span></p>\
         <div class=plots>",
    );
    let mut by_class: std::collections::BTreeMap<&str, Vec<&RecordRow>> = Default::default();
    for r in view.records.iter().filter(|r| r.projection.is_some()) {
        by_class.entry(r.label.as_str()).or_default().push(r);
    }
    for (label, rows) in by_class {
        let step = rows.len().div_ceil(MAX_POINTS).max(1);
        // Quarantined records are always drawn, and drawn last (on top).
        let mut shown: Vec<&RecordRow> = rows
            .iter()
            .enumerate()
            .filter(|(i, r)| i % step == 0 || r.quarantined)
            .map(|(_, r)| *r)
            .collect();
        shown.sort_by_key(|r| r.quarantined);
        let points: Vec<[f32; 2]> = shown.iter().filter_map(|r| r.projection).collect();
        let (w, h, pad) = (240.0f32, 200.0f32, 8.0f32);
        let (lo, hi) = bounds(&points);
        let _ = write!(
            html,
            "<figure><svg width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\">\
             <rect width=\"{w}\" height=\"{h}\" fill=\"#fafafa\" stroke=\"#ddd\"/>"
        );
        for r in &shown {
            let Some(p) = r.projection else { continue };
            let x = pad + (p[0] - lo[0]) / (hi[0] - lo[0]).max(1e-12) * (w - 2.0 * pad);
            let y = h - pad - (p[1] - lo[1]) / (hi[1] - lo[1]).max(1e-12) * (h - 2.0 * pad);
            let colour = if r.quarantined {
                "#d62728"
            } else if r.cluster == Some(1) {
                "#1b9e77"
            } else {
                "#7f8fa6"
            };
            let _ = write!(
                html,
                "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"1.8\" fill=\"{colour}\"/>"
            );
        }
        let quarantined = rows.iter().filter(|r| r.quarantined).count();
        let _ = write!(
            html,
            "</svg><figcaption>class <code>{}</code>: {} records, {quarantined} quarantined{}</figcaption></figure>",
            esc(label),
            rows.len(),
            if step > 1 {
                format!(" (every {step}th drawn)")
            } else {
                String::new()
            }
        );
    }
    html.push_str("</div>");
}

fn bounds(points: &[[f32; 2]]) -> ([f32; 2], [f32; 2]) {
    let mut lo = [f32::INFINITY; 2];
    let mut hi = [f32::NEG_INFINITY; 2];
    for p in points {
        for a in 0..2 {
            lo[a] = lo[a].min(p[a]);
            hi[a] = hi[a].max(p[a]);
        }
    }
    if points.is_empty() {
        ([0.0; 2], [1.0; 2])
    } else {
        (lo, hi)
    }
}

/// Histogram of one score over all records, quarantined records stacked in red, with a
/// threshold line where the score has one.
fn histogram(html: &mut String, title: &str, values: &[(f64, bool)], threshold: Option<(f64, &str)>) {
    const BINS: usize = 40;
    let finite: Vec<(f64, bool)> = values.iter().copied().filter(|(v, _)| v.is_finite()).collect();
    if finite.is_empty() {
        return;
    }
    let mut lo = finite.iter().map(|v| v.0).fold(f64::INFINITY, f64::min);
    let mut hi = finite.iter().map(|v| v.0).fold(f64::NEG_INFINITY, f64::max);
    if let Some((t, _)) = threshold {
        lo = lo.min(t);
        hi = hi.max(t);
    }
    let width = (hi - lo).max(1e-12);
    let mut counts = vec![[0usize; 2]; BINS];
    for (v, q) in &finite {
        let b = (((v - lo) / width) * BINS as f64).floor().clamp(0.0, (BINS - 1) as f64) as usize;
        counts[b][*q as usize] += 1;
    }
    let top = counts.iter().map(|c| c[0] + c[1]).max().unwrap_or(1).max(1) as f64;
    let (w, h, base) = (300.0, 130.0, 110.0);
    let bar = w / BINS as f64;
    let _ = write!(
        html,
        "<figure><svg width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\">\
         <line x1=\"0\" y1=\"{base}\" x2=\"{w}\" y2=\"{base}\" stroke=\"#999\"/>"
    );
    // Square-root heights, so a handful of quarantined records stays visible next to thousands.
    let scale = |c: usize| (c as f64).sqrt() / top.sqrt() * (base - 5.0);
    for (i, c) in counts.iter().enumerate() {
        let (clean, quarantined) = (scale(c[0] + c[1]), scale(c[1]));
        let x = i as f64 * bar;
        if c[0] + c[1] > 0 {
            let _ = write!(
                html,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{clean:.1}\" fill=\"#9aa5b1\"/>",
                base - clean,
                bar - 0.5
            );
        }
        if c[1] > 0 {
            let _ = write!(
                html,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{quarantined:.1}\" fill=\"#d62728\"/>",
                base - quarantined,
                bar - 0.5
            );
        }
    }
    if let Some((t, label)) = threshold {
        let x = (t - lo) / width * w;
        let _ = write!(
            html,
            "<line x1=\"{x:.1}\" y1=\"0\" x2=\"{x:.1}\" y2=\"{base}\" stroke=\"#000\" stroke-dasharray=\"4 3\"/>\
             <text x=\"{:.1}\" y=\"12\" font-size=\"10\">{label} {t:.3}</text>",
            (x + 3.0).min(w - 120.0)
        );
    }
    let _ = write!(
        html,
        "<text x=\"0\" y=\"{}\" font-size=\"10\">{lo:.3}</text><text x=\"{}\" y=\"{}\" font-size=\"10\" \
         text-anchor=\"end\">{hi:.3}</text></svg><figcaption>{title}</figcaption></figure>",
        h - 5.0,
        w,
        h - 5.0
    );
}

fn histograms(html: &mut String, view: &RunView) {
    html.push_str(
        "<h2>Scores</h2><p>Every record, quarantined ones in red (bar heights are square roots of \
         counts). The dashed line is the quarantine threshold for <code>suspicion</code>; for a \
         detector's raw score, whose threshold depends on the class, it marks the lowest score among \
         the records quarantined with that detector in their reasons.</p><div class=plots>",
    );
    let suspicion: Vec<(f64, bool)> = view.records.iter().map(|r| (r.suspicion, r.quarantined)).collect();
    histogram(html, "suspicion", &suspicion, Some((0.5, "quarantine at")));
    for (d, name) in view.detectors.iter().enumerate() {
        let scored = || view.records.iter().zip(&view.scores[d]);
        let values: Vec<(f64, bool)> = scored()
            .filter_map(|(r, s)| s.map(|s| (s as f64, r.quarantined)))
            .collect();
        let lowest = scored()
            .filter(|(r, _)| r.quarantined && r.reasons.contains(name.as_str()))
            .filter_map(|(_, s)| *s)
            .fold(f32::INFINITY, f32::min);
        let threshold = lowest.is_finite().then_some((lowest as f64, "lowest quarantined"));
        histogram(html, name, &values, threshold);
    }
    html.push_str("</div>");
}

fn source_table(html: &mut String, view: &RunView) {
    let rows = view.per_source();
    let Some(column) = view.report["dataset"]["source_column"].as_str() else {
        html.push_str("<h2>Sources</h2><p>The input has no source column (pass <code>--source-col</code>).</p>");
        return;
    };
    let _ = write!(
        html,
        "<h2>Sources</h2><p>Who supplied the quarantined records (column <code>{}</code>).</p>\
         <table><tr><th>source</th><th class=num>rows</th><th class=num>quarantined</th>\
         <th class=num>share</th><th>flagged by</th></tr>",
        esc(column)
    );
    for s in rows {
        let detectors: Vec<String> = s.detectors.iter().map(|(d, n)| format!("{} ({n})", esc(d))).collect();
        let _ = write!(
            html,
            "<tr><td><code>{}</code></td><td class=num>{}</td><td class=num>{}</td><td class=num>{:.2}%</td><td>{}</td></tr>",
            esc(&s.source),
            s.rows,
            s.quarantined,
            100.0 * s.quarantined as f64 / s.rows.max(1) as f64,
            detectors.join(", ")
        );
    }
    html.push_str("</table>");
}

fn top_records(html: &mut String, view: &RunView) {
    let _ = write!(
        html,
        "<h2>Most suspicious records</h2><table><tr><th>#</th><th>id</th><th>class</th><th>source</th>\
         <th class=num>suspicion</th><th>quarantined</th><th>reasons</th></tr>"
    );
    for (i, r) in view.top(TOP_N).iter().enumerate() {
        let _ = write!(
            html,
            "<tr><td class=num>{}</td><td><code>{}</code></td><td><code>{}</code></td><td><code>{}</code></td>\
             <td class=num>{:.3}</td><td>{}</td><td class=reason>{}</td></tr>",
            i + 1,
            esc(&r.key),
            esc(&r.label),
            esc(r.source.as_deref().unwrap_or("")),
            r.suspicion,
            if r.quarantined { "yes" } else { "no" },
            esc(super::view::record_part(&r.reasons))
        );
    }
    html.push_str("</table>");
}

fn inputs(html: &mut String, view: &RunView) {
    html.push_str(
        "<h2>Input</h2><table><tr><th>file</th><th class=num>rows</th><th class=num>bytes</th>\
         <th>footer SHA-256</th></tr>",
    );
    for f in view.report["dataset"]["files"].as_array().into_iter().flatten() {
        let _ = write!(
            html,
            "<tr><td><code>{}</code></td><td class=num>{}</td><td class=num>{}</td><td><code>{}</code></td></tr>",
            esc(f["path"].as_str().unwrap_or("")),
            f["rows"],
            f["size_bytes"],
            esc(f["footer_sha256"].as_str().unwrap_or(""))
        );
    }
    html.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_shows_invisible_characters() {
        assert_eq!(
            esc("<script>alert('x')</script>&\u{202e}"),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;\\u{202e}"
        );
        assert_eq!(esc("\"onerror=x"), "&quot;onerror=x");
    }
}
