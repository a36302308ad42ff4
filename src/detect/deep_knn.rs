//! Deep k-NN (Peri et al. 2020): the share of a record's k nearest neighbours (all classes, in the
//! reduced activation space) whose label differs from its own. Label-flipped and feature-collision
//! records sit among another class's records. A ranking signal; the mean kNN distance (an outlier
//! score) is reported beside it.

use super::{ClassScores, ClassView, DetectError, Detector, Stat};

pub struct DeepKnn;

impl Detector for DeepKnn {
    fn name(&self) -> &'static str {
        "deep_knn"
    }

    fn score_class(&self, view: &ClassView<'_>) -> Result<ClassScores, DetectError> {
        let state = view.influence(self.name())?;
        let scores = state.knn_disagreement[view.positions()].to_vec();
        let n = view.n().max(1) as f64;
        let mean = |v: &[f32]| v.iter().map(|&x| x as f64).sum::<f64>() / n;
        Ok(ClassScores {
            stats: vec![
                Stat {
                    name: "mean_disagreement".into(),
                    value: mean(&scores),
                },
                Stat {
                    name: "mean_knn_distance".into(),
                    value: mean(&state.knn_distance[view.positions()]),
                },
            ],
            scores,
            signal: None,
            grouping: None,
            record_level: None,
            flagged: Vec::new(),
            fit: None,
        })
    }
}
