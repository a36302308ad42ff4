//! Growing a suspect group to the whole population it belongs to.
//!
//! A detector's group is often the poison cluster's core only: the density detector marks records
//! more than 3 MADs denser than their class, which the cluster's edge members are not (measured on
//! a 15% Gaussian cluster: 56 of 75 marked, the missed ones at 1-3 MADs). The core still tells the
//! direction that separates the cluster from the class. Following SCAn's untangling (Tang et al.,
//! USENIX Security 2021: two sub-populations of a class sharing one covariance, assigned by
//! alternating a linear discriminant and a reassignment), the group is regrown from that core:
//! Fisher's discriminant between the group and the rest of the class on the class's principal
//! coordinates plus its residual, then every record goes to the side whose Gaussian explains it
//! better, a few rounds. The result is kept only when the two sides are clearly separated and the
//! group stays a minority; otherwise the detector's own group stands. On sparse (ReLU) classes,
//! whose heavy-tailed spread misleads the discriminant, the group is regrown along the line
//! between its centroid and the rest's first ([`population_along_centroids`]).

use super::linalg::eigh_desc;
use super::mixture::{CLEAN_SEPARATION, fit_two_gaussians_from, values_of};
use crate::stats::{mad_sigma, median};

/// Rounds of discriminant + reassignment (the assignment settles in 2-3 on separated groups).
const ROUNDS: usize = 5;
/// Separation (difference of the sides' means on the discriminant, in pooled sds) below which the
/// group is not a population of its own and is left as the detector found it.
pub const MIN_SEPARATION: f64 = 3.0;
/// The grown group may not pass this share of the class (poison is the minority).
const MAX_SHARE: f64 = 0.5;
/// Fewest members a group needs before a discriminant is fitted on it.
pub const MIN_MEMBERS: usize = 5;

/// The records that sit with `group` (1 = member) rather than with the rest of the class, or
/// `group` itself when they do not form a separated minority. `features` gives the class's
/// records, `width` values each (its basis coordinates, [`super::ClassBasis::coordinates`], or
/// any affine map of them: the discriminant does not depend on it); it is called only when the
/// group is large enough to fit a discriminant on, which most classes' groups are not.
pub fn grow_group(group: &[u8], features: impl FnOnce() -> (Vec<f64>, usize)) -> Vec<u8> {
    match separated_population(group, features) {
        // The detector's own members stay: its criterion marked them, the discriminant only adds.
        Some(population) => population.members.iter().zip(group).map(|(&c, &g)| c | g).collect(),
        None => group.to_vec(),
    }
}

/// A minority of a class that is a population of its own: at least [`MIN_SEPARATION`] pooled
/// sds from the rest on their discriminant.
#[derive(Debug)]
pub struct Population {
    /// 1 for each record of the population, in class order.
    pub members: Vec<u8>,
    /// Every record of the class on that discriminant.
    pub discriminant: Vec<f64>,
}

/// The separated minority that `group` (1 = member) belongs to, regrown from it by alternating
/// Fisher's discriminant and reassignment; `None` when the group and the rest are not separated
/// by [`MIN_SEPARATION`] pooled sds, or the population is not a minority. Arguments as in
/// [`grow_group`].
pub fn separated_population(group: &[u8], features: impl FnOnce() -> (Vec<f64>, usize)) -> Option<Population> {
    let n = group.len();
    let members = group.iter().filter(|&&g| g == 1).count();
    if members < MIN_MEMBERS || n - members < MIN_MEMBERS {
        return None;
    }
    let (features, width) = features();
    let mut current = group.to_vec();
    let mut discriminant = Vec::new();
    for _ in 0..ROUNDS {
        let (next, along) = reassign(&features, width, &current)?;
        discriminant = along;
        if next == current {
            break;
        }
        current = next;
    }
    let members = current.iter().filter(|&&g| g == 1).count();
    if members < MIN_MEMBERS || members as f64 > MAX_SHARE * n as f64 {
        return None;
    }
    Some(Population {
        members: current,
        discriminant,
    })
}

/// Fisher's linear discriminant between the members of `group` (1) and the rest of the class.
pub struct Discriminant {
    /// Every record on the discriminant.
    pub projected: Vec<f64>,
    pub rest_mean: f64,
    pub group_mean: f64,
    /// The pooled within-side variance on the discriminant.
    pub variance: f64,
}

impl Discriminant {
    /// The difference of the sides' means in pooled sds (0 when the fit degenerated).
    pub fn separation(&self) -> f64 {
        if self.variance.is_finite() && self.variance > 0.0 {
            (self.group_mean - self.rest_mean) / self.variance.sqrt()
        } else {
            0.0
        }
    }
}

/// Fisher's discriminant between the members of `group` and the rest of the class, on `features`
/// (`width` per record); `None` when a side has fewer than [`MIN_MEMBERS`].
pub fn discriminant(features: &[f64], width: usize, group: &[u8]) -> Option<Discriminant> {
    let n = group.len();
    let members = group.iter().filter(|&&g| g == 1).count();
    if members < MIN_MEMBERS || n - members < MIN_MEMBERS {
        return None;
    }
    let mut means = [vec![0.0; width], vec![0.0; width]];
    for (row, &g) in features.chunks_exact(width).zip(group) {
        means[g as usize].iter_mut().zip(row).for_each(|(m, v)| *m += v);
    }
    let counts = [(n - members) as f64, members as f64];
    for (m, c) in means.iter_mut().zip(counts) {
        m.iter_mut().for_each(|v| *v /= c);
    }
    let mut within = vec![0.0; width * width];
    for (row, &g) in features.chunks_exact(width).zip(group) {
        let m = &means[g as usize];
        for a in 0..width {
            let da = row[a] - m[a];
            for b in 0..=a {
                within[a * width + b] += da * (row[b] - m[b]);
            }
        }
    }
    for a in 0..width {
        for b in 0..=a {
            within[a * width + b] /= (n - 2) as f64;
            within[b * width + a] = within[a * width + b];
        }
    }
    let difference: Vec<f64> = means[1].iter().zip(&means[0]).map(|(a, b)| a - b).collect();
    let direction = solve_symmetric(&within, &difference, width);
    let along = |row: &[f64]| row.iter().zip(&direction).map(|(a, b)| a * b).sum::<f64>();
    Some(Discriminant {
        projected: features.chunks_exact(width).map(along).collect(),
        rest_mean: along(&means[0]),
        group_mean: along(&means[1]),
        // On Fisher's direction the pooled variance is the direction's Mahalanobis length.
        variance: difference.iter().zip(&direction).map(|(a, b)| a * b).sum::<f64>(),
    })
}

/// One round: Fisher's discriminant between the members and the rest, then each record to the
/// side with the higher posterior (shared variance on the discriminant, priors = current sizes);
/// also every record on the discriminant. `None` when a side is too small or the sides are not
/// separated.
fn reassign(features: &[f64], width: usize, group: &[u8]) -> Option<(Vec<u8>, Vec<f64>)> {
    let fit = discriminant(features, width, group)?;
    if fit.separation() < MIN_SEPARATION {
        return None;
    }
    let members = group.iter().filter(|&&g| g == 1).count() as f64;
    let prior = (members / (group.len() as f64 - members)).ln();
    let midpoint = 0.5 * (fit.group_mean + fit.rest_mean);
    let next = fit
        .projected
        .iter()
        .map(|&t| (((t - midpoint) * (fit.group_mean - fit.rest_mean) / fit.variance + prior) > 0.0) as u8)
        .collect();
    Some((next, fit.projected))
}

/// Rounds of [`population_along_centroids`] (it settles in 1-3 on the poison it is for).
const CENTROID_ROUNDS: usize = 3;

/// The population `group` (1 = member) belongs to, found along the line between its centroid and
/// the rest's, for classes whose spread is too heavy-tailed for Fisher's discriminant: the
/// records of `x` (`dim` values each, the class's vectors) projected on that line, two Gaussians
/// fitted from the group's split, and every record whose density under the group's component is
/// at least its density under the rest's joins it; then again from the new members' centroid, a
/// few rounds, while the fit passes (members can tilt the line toward the class's own tail once
/// they took in its records: the last passing round stands). `None` when the first round does
/// not pass: a side smaller than [`MIN_MEMBERS`], components not clearly separated (Ashman's D
/// under [`CLEAN_SEPARATION`]) or a population that is not a minority.
///
/// Fisher's discriminant whitens by the class's spread, and a sparse ReLU class spreads most
/// along the very directions a backdoor's records move along (the trigger drives a few units
/// hard); fitted on a seed of tens of records it leans on the seed's chance offsets in quiet
/// directions instead, and the reassignment drifts to clean records (generated ReLU layers,
/// 128 units x 3 000 records per class, tuning seeds: 17 seeds of a faint 5% backdoor regrew to
/// 54 of its 150 records and 101 clean ones). The centroid line ignores the spread: the seed's
/// mean offset is the trigger's, and the backdoor stands as a narrow mode at its end.
pub fn population_along_centroids(x: &[f32], dim: usize, group: &[u8]) -> Option<Vec<u8>> {
    let mut current = group.to_vec();
    let mut passed = false;
    for _ in 0..CENTROID_ROUNDS {
        let Some(next) = along_centroids(x, dim, &current).and_then(|along| split_off(&along, &current)) else {
            break;
        };
        passed = true;
        if next == current {
            break;
        }
        current = next;
    }
    passed.then_some(current)
}

/// One round of [`population_along_centroids`]: the records of `along` that the group's
/// component explains at least as well as the rest's, when the fit passes.
fn split_off(along: &[f64], group: &[u8]) -> Option<Vec<u8>> {
    let split = fit_two_gaussians_from(along, group)?;
    if split.separation() < CLEAN_SEPARATION || split.weights[1] > MAX_SHARE {
        return None;
    }
    // No priors: in a class judged attacked, recall comes first (as in [`beyond_the_rest`]).
    let next: Vec<u8> = along.iter().map(|&t| split.minor_explains(t) as u8).collect();
    let members = next.iter().filter(|&&g| g == 1).count();
    (members >= MIN_MEMBERS && members as f64 <= MAX_SHARE * group.len() as f64).then_some(next)
}

/// Every record of `x` on the unit line from the rest's centroid toward `group`'s (1 = member);
/// `None` when a side has fewer than [`MIN_MEMBERS`] records or the centroids coincide.
fn along_centroids(x: &[f32], dim: usize, group: &[u8]) -> Option<Vec<f64>> {
    let members = group.iter().filter(|&&g| g == 1).count();
    if members < MIN_MEMBERS || group.len() - members < MIN_MEMBERS {
        return None;
    }
    let mut sums = [vec![0.0f64; dim], vec![0.0f64; dim]];
    for (row, &g) in x.chunks_exact(dim).zip(group) {
        sums[g as usize].iter_mut().zip(row).for_each(|(s, &v)| *s += v as f64);
    }
    let counts = [(group.len() - members) as f64, members as f64];
    let direction: Vec<f64> = sums[1]
        .iter()
        .zip(&sums[0])
        .map(|(g, r)| g / counts[1] - r / counts[0])
        .collect();
    let length = direction.iter().map(|v| v * v).sum::<f64>().sqrt();
    if !(length.is_finite() && length > 0.0) {
        return None;
    }
    Some(
        x.chunks_exact(dim)
            .map(|row| row.iter().zip(&direction).map(|(&v, d)| v as f64 * d).sum::<f64>() / length)
            .collect(),
    )
}

/// Robust z-score beyond the rest of the class past which a record may join the group in
/// [`beyond_the_rest`]: about 1 clean record in 700 of a Gaussian class passes it.
const BEYOND_REST_SIGMAS: f64 = 3.0;

/// The records (1) that stand more than `BEYOND_REST_SIGMAS` beyond the rest of the class on a
/// discriminant `along` which `group` (1 = member) lies high, and that the group's spread explains
/// at least as well as the rest's (each side a Gaussian of its median and MAD). The first test
/// alone would take in the rest's own tail where the group is a few tight clumps (near-copies):
/// the second keeps a record that is merely less ordinary than the rest out of such a group,
/// while a group spread as widely as poison drawn from several classes takes in its stragglers.
/// No priors: in a class judged attacked, recall comes first.
pub fn beyond_the_rest(along: &[f64], group: &[u8]) -> Vec<u8> {
    let (rest, members) = (values_of(along, group, 0), values_of(along, group, 1));
    if rest.is_empty() || members.is_empty() {
        return vec![0; along.len()];
    }
    let gaussian = |values: &[f64]| {
        let centre = median(values);
        (centre, mad_sigma(values, centre).max(1e-12))
    };
    let ((rest_centre, rest_spread), (group_centre, group_spread)) = (gaussian(&rest), gaussian(&members));
    along
        .iter()
        .map(|&t| {
            let (from_rest, from_group) = ((t - rest_centre) / rest_spread, (t - group_centre) / group_spread);
            let group_explains =
                -0.5 * from_group * from_group - group_spread.ln() >= -0.5 * from_rest * from_rest - rest_spread.ln();
            (from_rest > BEYOND_REST_SIGMAS && group_explains) as u8
        })
        .collect()
}

/// `a^-1 b` for a symmetric positive semi-definite `a`, with eigenvalues floored at a small share
/// of the largest (a direction the class has no spread in gets no weight, not an infinite one).
fn solve_symmetric(a: &[f64], b: &[f64], dim: usize) -> Vec<f64> {
    let (values, vectors) = eigh_desc(a, dim);
    let floor = values.first().copied().unwrap_or(0.0).max(0.0) * 1e-6 + f64::MIN_POSITIVE;
    let mut out = vec![0.0; dim];
    for (value, v) in values.iter().zip(vectors.chunks_exact(dim)) {
        let coefficient = v.iter().zip(b).map(|(x, y)| x * y).sum::<f64>() / value.max(floor);
        out.iter_mut().zip(v).for_each(|(o, x)| *o += coefficient * x);
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};

    /// A class of 400 records and a cluster of 60 shifted along one axis; the group given is
    /// only the cluster's 20 most shifted members.
    fn class_with_cluster(shift: f64) -> (Vec<f64>, Vec<bool>, Vec<u8>) {
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(7);
        let (dim, clean, poison) = (8, 400, 60);
        let mut x = Vec::new();
        for i in 0..clean + poison {
            for j in 0..dim {
                let v: f64 = StandardNormal.sample(&mut rng);
                x.push(v + if i >= clean && j == 2 { shift } else { 0.0 });
            }
        }
        let truth: Vec<bool> = (0..clean + poison).map(|i| i >= clean).collect();
        let mut order: Vec<usize> = (clean..clean + poison).collect();
        order.sort_by(|&a, &b| x[b * dim + 2].total_cmp(&x[a * dim + 2]));
        let mut group = vec![0u8; clean + poison];
        order[..20].iter().for_each(|&i| group[i] = 1);
        (x, truth, group)
    }

    /// How many of `grown`'s members (1) are planted (`truth`), and how many are not.
    fn hits(grown: &[u8], truth: &[bool]) -> (usize, usize) {
        let planted = grown.iter().zip(truth).filter(|&(&g, &t)| g == 1 && t).count();
        (planted, grown.iter().filter(|&&g| g == 1).count() - planted)
    }

    #[test]
    fn a_separated_cluster_is_regrown_from_its_core() {
        let (x, truth, group) = class_with_cluster(8.0);
        let (hits, false_hits) = hits(&grow_group(&group, || (x, 8)), &truth);
        assert!(hits >= 58, "found {hits} of 60");
        assert!(false_hits <= 2, "{false_hits} clean records joined");
    }

    #[test]
    fn stragglers_of_a_spread_group_join_it_but_the_rests_tail_does_not_join_a_tight_one() {
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(3);
        let mut normal = || -> f64 { StandardNormal.sample(&mut rng) };
        // The rest: 2000 standard normal values, a tail reaching past 3 sigmas.
        let mut along: Vec<f64> = (0..2000).map(|_| normal()).collect();
        let tail = along.iter().filter(|&&t| t > 3.0).count();
        assert!(tail >= 2, "the test needs a tail past the threshold ({tail})");
        // A spread group at 7 +- 2: its members above 6 were flagged, the stragglers were not.
        let spread: Vec<f64> = (0..60).map(|_| 7.0 + 2.0 * normal()).collect();
        let mut group = vec![0u8; along.len()];
        group.extend(spread.iter().map(|&t| (t > 6.0) as u8));
        along.extend(&spread);
        let joined = beyond_the_rest(&along, &group);
        let stragglers = (2000..along.len()).filter(|&i| group[i] == 0 && along[i] > 4.0);
        assert!(stragglers.clone().count() >= 5, "the test needs stragglers");
        assert!(
            stragglers.clone().all(|i| joined[i] == 1),
            "a straggler beyond 4 sigmas stayed out"
        );
        assert!(
            (0..2000).filter(|&i| joined[i] == 1).count() <= tail,
            "more than the rest's own tail joined"
        );
        // Tight clumps far out (near-copies): the rest's tail is no part of them.
        let mut tight = along[..2000].to_vec();
        tight.extend((0..30).map(|i| 20.0 + (i % 3) as f64 + 0.01 * normal()));
        let mut clumps = vec![0u8; 2000];
        clumps.extend([1u8; 30]);
        let joined = beyond_the_rest(&tight, &clumps);
        assert_eq!(
            (0..2000).filter(|&i| joined[i] == 1).count(),
            0,
            "the rest's tail joined tight clumps"
        );
    }

    /// A ReLU-like class of 2000 records, 16 units: units 0 and 1 log-normal (medians 4 and 3,
    /// 95th percentiles near 15 and 11: the class's heavy tail), units 2 and 3 active around 4
    /// (+- 1.5), the rest half-normal (half their values zero). With `poison`, 100 records more
    /// that drive units 2 and 3 to 9 (+- 1) and keep the class's spread elsewhere. Returns the
    /// vectors and which records are poison.
    pub(crate) fn relu_class(poison: bool) -> (Vec<f32>, Vec<bool>) {
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(11);
        let mut normal = || -> f32 { StandardNormal.sample(&mut rng) };
        let (dim, clean, planted) = (16, 2000, if poison { 100 } else { 0 });
        let mut x = Vec::new();
        for i in 0..clean + planted {
            for j in 0..dim {
                x.push(match j {
                    0 => 4.0 * (0.8 * normal()).exp(),
                    1 => 3.0 * (0.8 * normal()).exp(),
                    2 | 3 if i >= clean => 9.0 + normal(),
                    2 | 3 => (4.0 + 1.5 * normal()).max(0.0),
                    _ => normal().max(0.0),
                });
            }
        }
        (x, (0..clean + planted).map(|i| i >= clean).collect())
    }

    /// The `count` records of `x` (16 units) highest on `unit` among those `among` allows, as a group.
    pub(crate) fn top_on(x: &[f32], unit: usize, count: usize, among: impl Fn(usize) -> bool) -> Vec<u8> {
        let n = x.len() / 16;
        let mut order: Vec<usize> = (0..n).filter(|&i| among(i)).collect();
        order.sort_by(|&a, &b| x[b * 16 + unit].total_cmp(&x[a * 16 + unit]));
        let mut group = vec![0u8; n];
        order[..count].iter().for_each(|&i| group[i] = 1);
        group
    }

    #[test]
    fn a_backdoor_in_a_heavy_tailed_class_is_regrown_along_the_centroids() {
        let (x, truth) = relu_class(true);
        // The seed: the 10 planted records highest on unit 2.
        let group = top_on(&x, 2, 10, |i| truth[i]);
        let grown = population_along_centroids(&x, 16, &group).expect("a separated population");
        let (hits, false_hits) = hits(&grown, &truth);
        assert!(hits >= 95, "found {hits} of 100");
        // No priors (recall first): a few clean records near the poison join, at most 1% of the class.
        assert!(false_hits <= 20, "{false_hits} clean records joined");
    }

    #[test]
    fn a_heavy_tailed_class_s_own_tail_is_no_population_along_the_centroids() {
        let (x, _) = relu_class(false);
        // The seed: the class's 30 records highest on unit 0, its natural tail; or on unit 2.
        for unit in [0, 2] {
            let group = top_on(&x, unit, 30, |_| true);
            let grown = population_along_centroids(&x, 16, &group);
            assert!(
                grown.is_none(),
                "unit {unit}: {:?} records",
                grown.map(|g| g.iter().filter(|&&m| m == 1).count())
            );
        }
    }

    #[test]
    fn a_group_that_is_no_population_of_its_own_stays_as_given() {
        // No shift: the "cluster" is 60 ordinary records, its core just the top of a tail.
        let (x, _, group) = class_with_cluster(0.0);
        assert_eq!(grow_group(&group, || (x, 8)), group);
    }
}
