//! A group of the class held apart from the rest of it by the neighbour graph, whose nearest
//! outsiders are other classes' records (`influence::separated`): a poisoned population that
//! looks like the classes it was taken from. Class signal: the largest such group's size, over a
//! clean bound of [`MIN_GROUP`] - 1 records; the group is the suspect cluster.
//!
//! [`MIN_GROUP`]: crate::influence::separated::MIN_GROUP

use super::{ClassScores, ClassSignal, ClassView, DetectError, Detector, Grouping, Stat};
use crate::influence::separated::MIN_GROUP;

/// The detector's name; the decision flags only its group where it alone marks a class.
pub const NAME: &str = "separated_group";

pub struct SeparatedGroup;

impl Detector for SeparatedGroup {
    fn name(&self) -> &'static str {
        NAME
    }

    fn score_class(&self, view: &ClassView<'_>) -> Result<ClassScores, DetectError> {
        let state = view.influence(self.name())?;
        // States written before 0.2.14 hold no groups.
        let size = |p: usize| state.separated_group_size.get(p).copied().unwrap_or(0);
        let share = |p: usize| state.separated_outsider_disagreement.get(p).copied().unwrap_or(0.0);
        let members: Vec<u8> = view.positions().map(|p| (size(p) > 0) as u8).collect();
        let largest = view.positions().map(size).max().unwrap_or(0);
        let in_groups = members.iter().filter(|&&m| m == 1).count();
        Ok(ClassScores {
            scores: view.positions().map(share).collect(),
            stats: vec![
                Stat {
                    name: "largest_separated_group".into(),
                    value: largest as f64,
                },
                Stat {
                    name: "records_in_separated_groups".into(),
                    value: in_groups as f64,
                },
            ],
            // Classes without a group all sit at 0: one record of spread (the MAD floor) keeps a
            // group of MIN_GROUP an outlier by MIN_GROUP MADs, whatever the other classes do.
            signal: Some(ClassSignal::new(largest as f64, (MIN_GROUP - 1) as f64, 1.0)),
            grouping: (in_groups > 0).then(|| Grouping::whole(members)),
            record_level: None,
            flagged: Vec::new(),
            fit: None,
        })
    }
}
