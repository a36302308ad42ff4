//! Influence on a trusted set (Koh & Liang, ICML 2017): I(z) = -g_trusted^T H^-1 g_z for the
//! surrogate's softmax head; positive means up-weighting the record raises the loss on verified
//! clean data, i.e. the record is harmful. Runs only with `--trusted`. A ranking signal.

use super::{ClassScores, ClassView, DetectError, Detector, Stat};

pub struct TrustedInfluence;

impl Detector for TrustedInfluence {
    fn name(&self) -> &'static str {
        "trusted_influence"
    }

    fn score_class(&self, view: &ClassView<'_>) -> Result<ClassScores, DetectError> {
        let state = view.influence(self.name())?;
        let Some(values) = &state.trusted_influence else {
            return Err(DetectError::Failed {
                detector: self.name(),
                message: "no trusted set was given".into(),
            });
        };
        let scores = values[view.positions()].to_vec();
        let harmful = scores.iter().filter(|&&v| v > 0.0).count();
        Ok(ClassScores {
            stats: vec![Stat {
                name: "harmful_share".into(),
                value: harmful as f64 / view.n().max(1) as f64,
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
