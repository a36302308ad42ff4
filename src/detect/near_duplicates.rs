//! Injected near-copies: groups of records whose activations lie far closer together than records
//! normally do (nearest-neighbour distance below `near-duplicate-ratio` of the dataset's median,
//! or a few records far closer to each other than to anything else; linked transitively, see
//! `influence::neighbourhood`). An attacker who repeats one poisoned input many times, with small
//! perturbations, makes such a group; groups of `near-duplicate-min-group` or more are flagged.
//! Score: how much closer than typical the nearest neighbour is, -ln(distance / median).

use super::{ClassScores, ClassView, DetectError, Detector, Flag, Stat};
use crate::influence::InfluenceParams;

pub struct NearDuplicates {
    ratio: f64,
    min_group: u32,
}

impl NearDuplicates {
    pub fn new(params: &InfluenceParams) -> NearDuplicates {
        NearDuplicates {
            ratio: params.near_duplicate_ratio,
            min_group: params.near_duplicate_min_group as u32,
        }
    }
}

impl Detector for NearDuplicates {
    fn name(&self) -> &'static str {
        "near_duplicates"
    }

    fn score_class(&self, view: &ClassView<'_>) -> Result<ClassScores, DetectError> {
        let state = view.influence(self.name())?;
        let mut scores = Vec::with_capacity(view.n());
        let mut flagged = Vec::new();
        for (i, p) in view.positions().enumerate() {
            let ratio = state.nearest_ratio[p].max(1e-6);
            scores.push(-ratio.ln());
            let size = state.duplicate_group_size[p];
            if size >= self.min_group {
                let labels = state.duplicate_group_labels[p];
                let conflict = if labels > 1 {
                    format!(", copies carry {labels} different labels")
                } else {
                    String::new()
                };
                flagged.push(Flag {
                    index: i,
                    strength: (1.0 - ratio as f64 / self.ratio.max(1e-9)).clamp(0.0, 1.0) * 0.5 + 0.5,
                    why: format!(
                        "near_duplicates: one of {size} near-copies (nearest at {ratio:.3} of the typical distance{conflict})"
                    ),
                });
            }
        }
        Ok(ClassScores {
            stats: vec![Stat {
                name: "near_copies".into(),
                value: flagged.len() as f64,
            }],
            scores,
            signal: None,
            grouping: None,
            record_level: None,
            flagged,
            fit: None,
        })
    }
}
