//! Loss trajectories (`--loss-col`), after Anti-Backdoor Learning (Li et al., NeurIPS 2021):
//! backdoored records are learned unusually fast, so their early training loss is unusually low
//! within their class. Score: -ln(early loss), where early loss is the mean of the first third of
//! the epochs given (the single value when one is given).
//!
//! Class signal: a two-Gaussian split of the scores whose minor component is the low-loss one;
//! its Ashman's D (see `mixture`) says whether fast-learned records form their own group.

use super::mixture::fit_two_gaussians;
use super::{ClassScores, ClassSignal, ClassView, DetectError, Detector, Grouping, Stat};

/// Ashman's D of a clean class's low-loss tail stays below this (two modes start near 2).
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
        let scores: Vec<f32> = losses
            .chunks_exact(epochs)
            .map(|l| {
                let mean = l[..early].iter().map(|&v| v as f64).sum::<f64>() / early as f64;
                -(mean.max(0.0) + 1e-6).ln() as f32
            })
            .collect();
        let values: Vec<f64> = scores.iter().map(|&v| v as f64).collect();
        let split = fit_two_gaussians(&values);
        // Only a minor component on the fast-learned (high-score) side is a candidate poison group.
        let fast_minor = split.as_ref().filter(|s| s.means[1] > s.means[0]);
        let separation = fast_minor.map_or(0.0, |s| s.separation());
        let grouping = fast_minor.map(|s| Grouping {
            cluster: values.iter().map(|&v| (s.minor_posterior(v) > 0.5) as u8).collect(),
            suspect: Some(1),
            closer_to_class: None,
        });
        Ok(ClassScores {
            stats: vec![
                Stat {
                    name: "fast_group_separation",
                    value: separation,
                },
                Stat {
                    name: "fast_group_share",
                    value: fast_minor.map_or(0.0, |s| s.weights[1]),
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
