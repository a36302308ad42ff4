//! The input's own predicted probabilities (`--probs-col`), score = 1 - p(given label).
//!
//! They are usually in-sample (the model trained on the very record and memorised flipped labels
//! and triggers), so they only rank; confident learning uses the surrogate's out-of-fold
//! probabilities instead. The evaluation measures both (README, "Detection quality").

use super::{ClassScores, ClassView, DetectError, Detector, Stat};

pub struct ModelProbs;

impl Detector for ModelProbs {
    fn name(&self) -> &'static str {
        "model_probs"
    }

    fn score_class(&self, view: &ClassView<'_>) -> Result<ClassScores, DetectError> {
        let Some(probs) = view.probs else {
            return Err(DetectError::Failed {
                detector: self.name(),
                message: "the input has no probabilities column".into(),
            });
        };
        let k = probs.len() / view.n().max(1);
        let scores: Vec<f32> = probs.chunks_exact(k).map(|p| 1.0 - p[view.class]).collect();
        let agree = probs
            .chunks_exact(k)
            .filter(|p| p.iter().all(|&v| v <= p[view.class]))
            .count();
        Ok(ClassScores {
            stats: vec![Stat {
                name: "model_accuracy".into(),
                value: agree as f64 / view.n().max(1) as f64,
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
