//! Step 2's raw material: per record of a class, the evidence that it stands out (SPECTRE's tail
//! in sigmas, a real split's suspect group, other scores' robust z) and why.

use super::{ClassEvidence, DecisionParams, logistic};
use crate::stats::{mad_sigma, median};

/// One class's records: evidence, flag and reasons, in the order of its scores.
#[derive(Clone)]
pub(super) struct RecordEvidence {
    /// In [0, 1]; 0.5 at the flagging threshold.
    pub(super) evidence: Vec<f64>,
    pub(super) flag: Vec<bool>,
    pub(super) why: Vec<String>,
}

impl RecordEvidence {
    /// Flags record `i` as a member of the group its class is attacked by: its evidence at least
    /// 0.75 and, unless it was flagged already, `why` first among its reasons.
    pub(super) fn flag_member(&mut self, i: usize, why: &str) {
        if !self.flag[i] {
            self.why[i] = match self.why[i].as_str() {
                "" => why.to_string(),
                before => format!("{why}; {before}"),
            };
        }
        self.flag[i] = true;
        self.evidence[i] = self.evidence[i].max(0.75);
    }
}

pub(super) fn record_evidence(
    e: &ClassEvidence<'_>,
    names: &[&str],
    class_names: &[String],
    params: &DecisionParams,
) -> RecordEvidence {
    let n = e.rows.len();
    let mut ev = RecordEvidence {
        evidence: vec![0.0; n],
        flag: vec![false; n],
        why: vec![String::new(); n],
    };
    let mut parts: Vec<Vec<String>> = vec![Vec::new(); n];
    for (d, s) in e.scores.iter().enumerate() {
        // A detector's suspect group is acted on only when its split is a real one (signal over
        // the bound it is judged by); otherwise its small side is just a tail of the class.
        let real_split = s.grouping.as_ref().zip(s.signal).filter(|(_, sig)| sig.over_bound());
        if let Some((g, suspect, sig)) = real_split.and_then(|(g, sig)| g.suspect.map(|sp| (g, sp, sig))) {
            let share = g.cluster.iter().filter(|&&c| c == suspect).count() as f64 / n as f64;
            let closer = g
                .closer_to_class
                .map(|c| format!(", closer to class `{}`", class_names.get(c).map_or("?", String::as_str)))
                .unwrap_or_default();
            for i in (0..n).filter(|&i| g.cluster[i] == suspect) {
                ev.flag[i] = true;
                ev.evidence[i] = ev.evidence[i].max(0.75);
                let note = g.notes.get(i).filter(|note| !note.is_empty());
                parts[i].push(format!(
                    "{} suspect group ({:.1}% of class, class signal {:.2}{closer}){}",
                    names[d],
                    share * 100.0,
                    sig.value,
                    note.map(|note| format!(": {note}")).unwrap_or_default()
                ));
            }
        }
        if names[d] == "spectre" {
            // tau is a weighted sum of squares: its root is half-normal-like for clean records, so
            // its scale follows from the median, which a poison minority barely moves.
            let root: Vec<f64> = s.scores.iter().map(|&t| (t.max(0.0) as f64).sqrt()).collect();
            let sigma = (median(&root) / 0.6745).max(1e-12);
            for i in 0..n {
                let z = root[i] / sigma;
                ev.evidence[i] = ev.evidence[i].max(logistic((z - params.record_threshold) * 2.0));
                if z > params.record_threshold {
                    ev.flag[i] = true;
                    parts[i].push(format!("spectre score {z:.1} sigma"));
                }
            }
        } else {
            // Other scores add robust-z evidence (for ranking) but do not flag on their own.
            let v: Vec<f64> = s.scores.iter().map(|&x| x as f64).collect();
            let m = median(&v);
            let sd = mad_sigma(&v, m).max(1e-12);
            for i in 0..n {
                let z = (v[i] - m) / sd;
                ev.evidence[i] = ev.evidence[i].max(logistic((z - params.record_threshold - 1.0) * 2.0) * 0.98);
            }
        }
    }
    for (i, p) in parts.into_iter().enumerate() {
        ev.why[i] = p.join("; ");
    }
    ev
}
