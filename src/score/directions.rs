//! Where a class's records point, by cosine: a group against the rest of its class, and the
//! short records of a class that point elsewhere than it (a trigger's, on a ReLU layer).

use crate::stats::dot;

/// Where a group's records point, against the rest of their class: mean cosines between
/// records (zero vectors, which have no direction, left out).
#[derive(Debug, Clone, Copy)]
pub(super) struct GroupDirections {
    /// The group's mean cosine with the rest's records over the rest's mean cosine among
    /// themselves: about 1 when the group points the class's way, near 0 when elsewhere.
    pub likeness_to_the_rest: f64,
    /// The group's mean cosine among its own records (1: all one direction).
    pub within_group: f64,
}

/// Mean cosine among a group's records above which they are one direction, a clump of alike
/// records rather than a population: clean clumps pointing elsewhere than their class were
/// records of one direction (mean cosine among them 0.98-1.00); a trigger's, 0.59-0.90.
pub(super) const ONE_DIRECTION: f64 = 0.95;

impl GroupDirections {
    /// `None` with fewer than 2 records on either side.
    pub fn of(x: &[f32], dim: usize, in_group: &[bool]) -> Option<Self> {
        let lengths: Vec<f64> = x.chunks_exact(dim).map(length).collect();
        let (group, rest) = UnitSum::of_group_and_rest(x, dim, &lengths, in_group);
        Self::of_sums(&group, &rest)
    }

    /// From the group's and the rest's unit vectors, summed.
    fn of_sums(group: &UnitSum, rest: &UnitSum) -> Option<Self> {
        if group.rows < 2 || rest.rows < 2 {
            return None;
        }
        // Mean cosine over distinct pairs: the squared sum of unit vectors counts each pair
        // twice and each vector with itself once.
        let among = |sum: &[f64], n: f64| (dot(sum, sum) - n) / (n * (n - 1.0));
        let (g, r) = (group.rows as f64, rest.rows as f64);
        let rest_among = among(&rest.sum, r);
        (rest_among > 0.0).then(|| Self {
            likeness_to_the_rest: dot(&group.sum, &rest.sum) / (g * r) / rest_among,
            within_group: among(&group.sum, g),
        })
    }

    /// Whether the group points elsewhere than its class (likeness under `likeness_bar`) while
    /// its records spread (not [`ONE_DIRECTION`]).
    pub fn points_elsewhere_and_spreads(&self, likeness_bar: f64) -> bool {
        self.likeness_to_the_rest < likeness_bar && self.within_group < ONE_DIRECTION
    }
}

/// The sum of some records' unit vectors, and how many were summed (zero vectors skipped).
struct UnitSum {
    sum: Vec<f64>,
    rows: usize,
}

impl UnitSum {
    /// Over the records (row-major `x`, `dim` values each, of `lengths`) in the group and over
    /// the rest, in one pass.
    fn of_group_and_rest(x: &[f32], dim: usize, lengths: &[f64], in_group: &[bool]) -> (Self, Self) {
        let empty = || UnitSum {
            sum: vec![0.0f64; dim],
            rows: 0,
        };
        let (mut group, mut rest) = (empty(), empty());
        for ((vector, &norm), &member) in x.chunks_exact(dim).zip(lengths).zip(in_group) {
            if norm > 0.0 {
                let side = if member { &mut group } else { &mut rest };
                side.sum
                    .iter_mut()
                    .zip(vector)
                    .for_each(|(s, &v)| *s += v as f64 / norm);
                side.rows += 1;
            }
        }
        (group, rest)
    }
}

fn length(vector: &[f32]) -> f64 {
    vector.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt()
}

/// A class's records that point elsewhere than it, found through its short records (see
/// [`short_records_pointing_elsewhere`]).
#[derive(Debug, Clone)]
pub(super) struct PointingElsewhere {
    /// Class-local index of each record found, with its cosine with the direction of the
    /// class's records that are not short.
    pub members: Vec<(usize, f64)>,
    /// How many records are short (under [`SHORT_LENGTH`] of the median length).
    pub short_records: usize,
    /// The short records' directions against the rest of the class.
    pub short: GroupDirections,
    /// The cosine with the class's direction under which a record was taken.
    pub cosine_bar: f64,
}

impl PointingElsewhere {
    /// Why the class is judged attacked, for its verdict.
    pub fn why(&self) -> String {
        format!(
            "its {} records shorter than {:.0}% of its median length point elsewhere than the rest of it \
             (likeness {:.2} to the rest, mean cosine {:.2} among them): a trigger's inputs mapped to few \
             units of their own; {} records point elsewhere (cosine with the direction of its longer \
             records under {:.2})",
            self.short_records,
            SHORT_LENGTH * 100.0,
            self.short.likeness_to_the_rest,
            self.short.within_group,
            self.members.len(),
            self.cosine_bar
        )
    }

    /// How far the evidence clears its bar, as the other tail verdicts give it: ln of the bar
    /// over the likeness, at least 0.1.
    pub fn margin(&self) -> f64 {
        (SHORT_MAX_LIKENESS / self.short.likeness_to_the_rest.max(0.01))
            .ln()
            .max(0.1)
    }
}

/// The records of a class (row-major `x`, `dim` values each; a sparse class) that point
/// elsewhere than it, when its short records do: those under [`SHORT_LENGTH`] of the class's
/// median length, at least [`MIN_SHORT_RECORDS`] and [`MIN_SHORT_SHARE`] of the class,
/// pointing elsewhere and spread ([`GroupDirections`]: likeness to the rest under
/// [`SHORT_MAX_LIKENESS`], not one direction). Then every record whose cosine with the rest's
/// mean direction is under the midpoint of the short records' mean cosine and the rest's.
/// `None` when the short records are too few, point the class's way or are one direction (or
/// the rest has no mean direction).
///
/// A network can map a trigger's inputs to short activations, few units on (the trigger's), so
/// that no cluster, spectral or density statistic of the class stands out: the class's lengths
/// are a continuum, the poison at its short end, and the short records of every class sit
/// near each other's. Their direction tells them apart. A ReLU layer's short records of a
/// clean class are its records scaled down (or its few units on); they point the class's way.
/// Generated layers (seeds 2000-2019, used to set the bars: 10 classes x 300, 500, 1 500 and
/// 3 000 records, 64 and 128 units, clean and with 1%, 5%, 15% and faint backdoors; 10 x 3 000
/// with label flips and near-copies; 50 x 200 and 100 x 100 clean): all 1 148 classes without
/// poison that had enough short records to ask stood at likeness 0.35 or more; of 138 backdoor
/// targets that had, 66 stood under 0.3 (down to 0.05). In those 66 classes the records so
/// taken held 77-100% of the poison, with 0-55 clean records.
pub(super) fn short_records_pointing_elsewhere(x: &[f32], dim: usize) -> Option<PointingElsewhere> {
    let lengths: Vec<f64> = x.chunks_exact(dim).map(length).collect();
    let live: Vec<f64> = lengths.iter().copied().filter(|&l| l > 0.0).collect();
    if live.is_empty() {
        return None;
    }
    let short_below = SHORT_LENGTH * crate::stats::median(&live);
    let short: Vec<bool> = lengths.iter().map(|&l| l > 0.0 && l < short_below).collect();
    let short_records = short.iter().filter(|&&s| s).count();
    if short_records < MIN_SHORT_RECORDS.max((MIN_SHORT_SHARE * lengths.len() as f64).ceil() as usize) {
        return None;
    }
    let (short_sum, rest) = UnitSum::of_group_and_rest(x, dim, &lengths, &short);
    let directions = GroupDirections::of_sums(&short_sum, &rest)?;
    if !directions.points_elsewhere_and_spreads(SHORT_MAX_LIKENESS) {
        return None;
    }
    let rest_sum = rest.sum;
    let rest_length = dot(&rest_sum, &rest_sum).sqrt();
    let cosines: Vec<Option<f64>> = x
        .chunks_exact(dim)
        .zip(&lengths)
        .map(|(vector, &l)| {
            let along: f64 = vector.iter().zip(&rest_sum).map(|(&v, s)| v as f64 * s).sum();
            (l > 0.0).then(|| along / (l * rest_length))
        })
        .collect();
    let mean_of = |in_short: bool| {
        let values: Vec<f64> = (0..cosines.len())
            .filter(|&i| short[i] == in_short)
            .filter_map(|i| cosines[i])
            .collect();
        values.iter().sum::<f64>() / values.len().max(1) as f64
    };
    let cosine_bar = (mean_of(true) + mean_of(false)) / 2.0;
    let members = cosines
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.filter(|&c| c < cosine_bar).map(|c| (i, c)))
        .collect();
    Some(PointingElsewhere {
        members,
        short_records,
        short: directions,
        cosine_bar,
    })
}

/// See [`short_records_pointing_elsewhere`]: a record is short under this share of its class's
/// median length (zero vectors aside). Clean classes of generated ReLU layers hold 0-11% such
/// records; a trigger mapped to few units puts about half of its records there.
const SHORT_LENGTH: f64 = 0.2;
/// See [`short_records_pointing_elsewhere`]: fewest short records, and smallest share of the
/// class, whose direction is asked (under them the mean cosines are noise: clean short tails of
/// 5-9 records reached likeness 0.30). The share, which counts from 2 000 records per class, is
/// the bar the study used: a large class holds more short records by chance.
const MIN_SHORT_RECORDS: usize = 10;
const MIN_SHORT_SHARE: f64 = 0.005;
/// See [`short_records_pointing_elsewhere`]: clean classes' short records, 0.35 or more.
const SHORT_MAX_LIKENESS: f64 = 0.3;

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_distr::{Distribution, Uniform};

    const DIM: usize = 8;

    /// Records planted in a test class (see [`sparse_class`]).
    pub(crate) struct Planted {
        pub records: usize,
        pub length: f32,
        /// All on one unit; otherwise on two of the last three units, two patterns.
        pub one_direction: bool,
    }

    /// A sparse class of 300 records on units `own` (lengths 1-2, but with `own_short` every
    /// thirtieth scaled to 0.1), then the `planted` records on the last three of `dim` units.
    pub(crate) fn sparse_class(dim: usize, own: std::ops::Range<usize>, own_short: bool, planted: Planted) -> Vec<f32> {
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(11 + own.start as u64);
        let unit = Uniform::new(0.0f32, 1.0);
        let mut x = Vec::new();
        let mut push = |on: std::ops::Range<usize>, length: f32, rng: &mut rand_xoshiro::Xoshiro256PlusPlus| {
            let v: Vec<f32> = (0..dim)
                .map(|j| if on.contains(&j) { 0.5 + unit.sample(rng) } else { 0.0 })
                .collect();
            let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt();
            x.extend(v.iter().map(|a| a / norm * length));
        };
        for i in 0..300 {
            let length = if own_short && i % 30 == 0 {
                0.1
            } else {
                1.0 + unit.sample(&mut rng)
            };
            push(own.clone(), length, &mut rng);
        }
        let first = dim - 3;
        for i in 0..planted.records {
            let on = match planted.one_direction {
                true => first..first + 1,
                false => first + i % 2..first + 2 + i % 2,
            };
            push(on, planted.length, &mut rng);
        }
        x
    }

    fn class(own_short: bool, records: usize, length: f32, one_direction: bool) -> Vec<f32> {
        let planted = Planted {
            records,
            length,
            one_direction,
        };
        sparse_class(DIM, 0..4, own_short, planted)
    }

    #[test]
    fn short_records_pointing_the_class_s_way_are_no_verdict() {
        assert!(short_records_pointing_elsewhere(&class(true, 0, 0.0, false), DIM).is_none());
        // A few records pointing elsewhere among many short ones of the class's own do not turn them.
        assert!(short_records_pointing_elsewhere(&class(true, 5, 0.1, false), DIM).is_none());
    }

    #[test]
    fn short_records_pointing_elsewhere_find_every_record_that_does() {
        // 40 short planted records beside the class's 10 short ones, and 10 long ones.
        let mut x = class(true, 40, 0.1, false);
        x.extend(class(true, 10, 1.0, false)[300 * DIM..].iter());
        let found = short_records_pointing_elsewhere(&x, DIM).expect("a verdict");
        assert_eq!(found.short_records, 50);
        assert!(found.short.likeness_to_the_rest < SHORT_MAX_LIKENESS, "{found:?}");
        let members: Vec<usize> = found.members.iter().map(|m| m.0).collect();
        assert_eq!(members, (300..350).collect::<Vec<_>>());
        assert!(found.why().contains("50 records shorter than 20%"), "{}", found.why());
    }

    #[test]
    fn short_records_pointing_elsewhere_in_one_direction_or_fewer_than_ten_are_no_verdict() {
        assert!(short_records_pointing_elsewhere(&class(false, 40, 0.1, true), DIM).is_none());
        // The same records spread pass alone, but not fewer than 10.
        assert!(short_records_pointing_elsewhere(&class(false, 10, 0.1, false), DIM).is_some());
        assert!(short_records_pointing_elsewhere(&class(false, 9, 0.1, false), DIM).is_none());
    }
}
