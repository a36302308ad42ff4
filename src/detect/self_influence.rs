//! Self-influence (TracIn, Pruthi et al. NeurIPS 2020, last layer at the final checkpoint): for a
//! softmax head, |grad loss(z)|^2 = |p - y|^2 (|x|^2 + 1). Records the model had to bend for (hard,
//! mislabelled, or atypical) score high. A ranking signal: it flags nothing on its own.

use super::{ClassScores, ClassView, DetectError, Detector, Stat};
use crate::stats::median;

pub struct SelfInfluence;

impl Detector for SelfInfluence {
    fn name(&self) -> &'static str {
        "self_influence"
    }

    fn score_class(&self, view: &ClassView<'_>) -> Result<ClassScores, DetectError> {
        let state = view.influence(self.name())?;
        let scores = state.self_influence[view.positions()].to_vec();
        let values: Vec<f64> = scores.iter().map(|&v| v as f64).collect();
        Ok(ClassScores {
            stats: vec![Stat {
                name: "median_self_influence".into(),
                value: median(&values),
            }],
            scores,
            signal: None,
            grouping: None,
            record_level: None,
            flagged: Vec::new(),
            fit: None,
        })
    }
}
