//! Label quality by confident learning (Northcutt, Jiang, Chuang, JAIR 2021) on the surrogate's
//! out-of-fold probabilities: score = 1 - p(given label); records in the off-diagonal of the
//! confident joint are flagged as label issues. This is what catches label flips, which leave
//! no cluster for the clustering detectors to find.
//!
//! Out-of-fold, not the input's own `probs`: a model that trained on a record has memorised its
//! flipped label, so its in-sample probability hides exactly the records we look for.

use super::{ClassScores, ClassView, DetectError, Detector, Flag, Stat};

pub struct ConfidentLearning;

impl Detector for ConfidentLearning {
    fn name(&self) -> &'static str {
        "confident_learning"
    }

    fn score_class(&self, view: &ClassView<'_>) -> Result<ClassScores, DetectError> {
        let state = view.influence(self.name())?;
        let mut scores = Vec::with_capacity(view.n());
        let mut flagged = Vec::new();
        for (i, p) in view.positions().enumerate() {
            let (confidence, suggested_confidence) = state.probabilities_of(p, view.class);
            scores.push(1.0 - confidence);
            if state.label_issue[p] {
                let other = state.suggested[p] as usize;
                flagged.push(Flag {
                    index: i,
                    strength: (1.0 - confidence as f64).clamp(0.0, 1.0),
                    why: format!(
                        "confident_learning: label issue, out-of-fold p(`{}`) = {confidence:.2}, confidently `{}` (p = {:.2})",
                        view.class_names[view.class],
                        view.class_names[other],
                        suggested_confidence
                    ),
                });
            }
        }
        let n = view.n().max(1) as f64;
        let stats = vec![
            Stat {
                name: "label_issues".into(),
                value: flagged.len() as f64,
            },
            Stat {
                name: "mean_self_confidence".into(),
                value: 1.0 - scores.iter().map(|&s| s as f64).sum::<f64>() / n,
            },
        ];
        Ok(ClassScores {
            record_level: Some(scores.clone()),
            scores,
            stats,
            signal: None,
            grouping: None,
            flagged,
            fit: None,
        })
    }
}
