//! `report.md`: the summary a reviewer pastes into a ticket: totals, attacked classes, sources,
//! and the most suspicious records. Data strings are plain text (`view::plain_text`) with every
//! Markdown-active character escaped ([`md`]), so an id can never become a link, a heading, an
//! HTML tag or a new table cell.

use std::fmt::Write;

use super::view::{RunView, plain_text};

const MAX_CHARS: usize = 80;
const TOP_N: usize = 20;

/// Escapes a data string for a Markdown table cell or paragraph.
pub fn md(s: &str) -> String {
    let mut out = String::new();
    for c in plain_text(s, MAX_CHARS).chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\\' | '`' | '*' | '_' | '{' | '}' | '[' | ']' | '(' | ')' | '#' | '+' | '-' | '.' | '!' | '|' | '~'
            | '"' | '\'' | '=' | ':' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

pub fn render(view: &RunView) -> String {
    let r = &view.report;
    let t = &r["totals"];
    let mut out = String::new();
    let attacked: Vec<String> = t["attacked_classes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| md(v.as_str().unwrap_or("")))
        .collect();
    let _ = writeln!(out, "# datavet report\n");
    let _ = writeln!(
        out,
        "{} rows in {} classes; **{} quarantined** ({:.2}%); attacked classes: {}; row conservation: {}.\n",
        t["rows"],
        t["classes"],
        t["quarantined"],
        100.0 * t["quarantine_fraction"].as_f64().unwrap_or(0.0),
        if attacked.is_empty() {
            "none".into()
        } else {
            attacked.join(", ")
        },
        if r["conservation"]["ok"].as_bool() == Some(true) {
            "ok"
        } else {
            "FAILED"
        }
    );
    for w in r["warnings"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "- warning: {}", md(w.as_str().unwrap_or("")));
    }
    let _ = writeln!(
        out,
        "\n## Classes with quarantined records\n\n| class | rows | verdict | quarantined |\n|---|---|---|---|"
    );
    for c in r["classes"].as_array().into_iter().flatten() {
        let flagged = c["verdict"]["flagged"].as_u64().unwrap_or(0);
        let attacked = c["verdict"]["attacked"].as_bool() == Some(true);
        if flagged > 0 || attacked {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {flagged} |",
                md(c["label"].as_str().unwrap_or("")),
                c["rows"],
                if attacked {
                    "attacked"
                } else {
                    "clean class, flagged records"
                }
            );
        }
    }
    let sources = view.per_source();
    if !sources.is_empty() {
        let _ = writeln!(out, "\n## Sources\n\n| source | rows | quarantined |\n|---|---|---|");
        for s in sources.iter().take(TOP_N) {
            let _ = writeln!(out, "| {} | {} | {} |", md(&s.source), s.rows, s.quarantined);
        }
    }
    let _ = writeln!(
        out,
        "\n## Most suspicious records\n\n| id | class | suspicion | quarantined | reasons |\n|---|---|---|---|---|"
    );
    for rec in view.top(TOP_N) {
        let _ = writeln!(
            out,
            "| {} | {} | {:.3} | {} | {} |",
            md(&rec.key),
            md(&rec.label),
            rec.suspicion,
            if rec.quarantined { "yes" } else { "no" },
            md(super::view::record_part(&rec.reasons))
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_cannot_become_markup_or_a_new_cell() {
        assert_eq!(md("a|b"), "a\\|b");
        assert_eq!(md("<img onerror=x>"), "&lt;img onerror\\=x&gt;");
        assert_eq!(md("[x](http://e)"), "\\[x\\]\\(http\\://e\\)");
        assert_eq!(md("line\nbreak"), "line\\\\u\\{a\\}break");
    }
}
