//! Loss trajectories (`--loss-col`), after Anti-Backdoor Learning (Li et al., NeurIPS 2021):
//! backdoored records are learned at an unusual speed, so their early training loss stands apart
//! within their class. ABL observed image triggers learned unusually *fast* (low loss); on our
//! generated ReLU network the triggered records are learned *slower* than their class (their
//! early loss is high: they start out classified as their source class), so the score is
//! two-sided: |robust z| of ln(early loss) within the class, where early loss is the mean of the
//! first third of the epochs given (the single value when one is given).
//!
//! Class signal: a two-Gaussian split of ln(early loss); Ashman's D (see `mixture`) of the
//! split says whether records learned at another speed form their own group (the minor one).

use super::mixture::fit_two_gaussians;
use super::{ClassScores, ClassSignal, ClassView, DetectError, Detector, Grouping, Stat};
use crate::stats::robust_z;

/// Ashman's D of a clean class's loss tail stays below this (two modes start near 2).
const CLEAN_SEPARATION: f64 = 2.5;

pub struct LossTrajectory;

impl Detector for LossTrajectory {
    fn name(&self) -> &'static str {
        "loss_trajectory"
    }

    fn score_class(&self, view: &ClassView<'_>) -> Result<ClassScores, DetectError> {
        let Some((losses, epochs)) = view.losses else {
            return Err(DetectError::Failed {
                detector: self.name(),
                message: "the input has no loss column".into(),
            });
        };
        let early = epochs.div_ceil(3).max(1);
        let values: Vec<f64> = losses
            .chunks_exact(epochs)
            .map(|l| {
                let mean = l[..early].iter().map(|&v| v as f64).sum::<f64>() / early as f64;
                (mean.max(0.0) + 1e-6).ln()
            })
            .collect();
        let scores: Vec<f32> = robust_z(&values, 1e-6).iter().map(|z| z.abs() as f32).collect();
        let split = fit_two_gaussians(&values);
        let separation = split.as_ref().map_or(0.0, |s| s.separation());
        let grouping = split.as_ref().map(|s| Grouping {
            cluster: values.iter().map(|&v| (s.minor_posterior(v) > 0.5) as u8).collect(),
            suspect: Some(1),
            closer_to_class: None,
        });
        Ok(ClassScores {
            stats: vec![
                Stat {
                    name: "speed_group_separation",
                    value: separation,
                },
                Stat {
                    name: "speed_group_share",
                    value: split.as_ref().map_or(0.0, |s| s.weights[1]),
                },
                Stat {
                    name: "speed_group_learned_faster",
                    value: split.as_ref().map_or(0.0, |s| (s.means[1] < s.means[0]) as u8 as f64),
                },
            ],
            scores,
            signal: Some(ClassSignal {
                value: separation,
                clean_bound: CLEAN_SEPARATION,
                min_spread: 0.5,
            }),
            grouping,
            record_level: None,
            flagged: Vec::new(),
        })
    }
}
