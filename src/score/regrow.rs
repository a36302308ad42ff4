//! From record flags to the population they belong to: regrowth in a class judged attacked, and
//! the separated minority a class that cannot be compared must hold (`detect::untangle`).

use rayon::prelude::*;

use super::records::RecordEvidence;
use super::{ClassEvidence, ClassGeometry, is_sparse_class};
use crate::detect::mixture::{CLEAN_SEPARATION, Tail, fit_two_gaussians, fit_two_students};
use crate::detect::untangle::{
    MIN_MEMBERS, MIN_SEPARATION, beyond_the_rest, discriminant, population_along_centroids, separated_population,
};
use crate::detect::{ClassBasis, ClassScores, Grouping};
use crate::stats::dot;

impl ClassGeometry<'_> {
    fn coordinates(&self) -> (Vec<f64>, usize) {
        ClassBasis::project(self.basis.clone(), self.x, self.dim).coordinates(self.dim)
    }

    /// The class's records on its basis, and on one direction more where the basis leaves one:
    /// from the rest of the class to `group` (1 = member), outside the basis. A poison cluster
    /// smaller than the class's sampling noise owns no principal direction (with 300 records in
    /// 512 dims the noise eigenvalues swell 5-fold), so only its residual norm shows on the
    /// basis, where the cluster's own spread hides it; its members' shared shift still stands
    /// out along the mean difference. Each member is placed on the direction found without it: in hundreds of
    /// dimensions a member's own noise would otherwise lean the direction its way and make any
    /// group, even a class's ordinary tail, look separated.
    fn project_toward(&self, group: &[u8]) -> (ClassBasis, Option<Vec<f64>>) {
        let basis = ClassBasis::project(self.basis.clone(), self.x, self.dim);
        let (dim, mean) = (self.dim, &self.basis.mean);
        let members = group.iter().filter(|&&g| g == 1).count();
        if members < 2 || members == group.len() {
            return (basis, None);
        }
        let centred_dot = |row: &[f32], v: &[f64]| {
            row.iter()
                .zip(mean)
                .zip(v)
                .map(|((&x, m), a)| (x as f64 - m) * a)
                .sum::<f64>()
        };
        // The sides' mean offsets from the class mean, with their part on the basis taken out.
        let mut sums = [vec![0.0f64; dim], vec![0.0f64; dim]];
        for (row, &g) in self.x.chunks_exact(dim).zip(group) {
            sums[g as usize]
                .iter_mut()
                .zip(row)
                .zip(mean)
                .for_each(|((s, &v), m)| *s += v as f64 - m);
        }
        let outside_basis = |sum: &[f64], count: usize| {
            let mut v: Vec<f64> = sum.iter().map(|s| s / count as f64).collect();
            for component in self.basis.components.chunks_exact(dim) {
                let along: f64 = v.iter().zip(component).map(|(a, &c)| a * c as f64).sum();
                v.iter_mut().zip(component).for_each(|(a, &c)| *a -= along * c as f64);
            }
            v
        };
        let group_mean = outside_basis(&sums[1], members);
        let rest_mean = outside_basis(&sums[0], group.len() - members);
        let direction: Vec<f64> = group_mean.iter().zip(&rest_mean).map(|(g, r)| g - r).collect();
        let (length2, group_length2) = (dot(&direction, &direction), dot(&group_mean, &group_mean));
        let direction_on_group = dot(&direction, &group_mean);
        // Where the basis spans (nearly) every dimension, what is left is rounding.
        let offset = dot(&sums[1], &sums[1]).sqrt() / members as f64;
        if !(length2.sqrt() > 1e-9 * offset && length2.is_finite()) {
            return (basis, None);
        }
        let leave_out = 1.0 / (members - 1) as f64;
        let projected: Vec<f64> = self
            .x
            .par_chunks_exact(dim)
            .zip(group)
            .zip(&basis.residual)
            .map(|((row, &g), &residual)| {
                // Both directions lie outside the basis, so the record's own offset stands in
                // for its residual r there.
                let (on_direction, on_group) = (centred_dot(row, &direction), centred_dot(row, &group_mean));
                if g == 0 {
                    return on_direction / length2.sqrt();
                }
                // Without this member the direction is d + (group mean - r) / (m - 1).
                let residual2 = (residual as f64).powi(2);
                let on_without = on_direction + (on_group - residual2) * leave_out;
                let without2 = length2
                    + 2.0 * (direction_on_group - on_direction) * leave_out
                    + (group_length2 - 2.0 * on_group + residual2) * leave_out * leave_out;
                on_without / without2.max(f64::MIN_POSITIVE).sqrt()
            })
            .collect();
        (basis, Some(projected))
    }
}

/// Where a class signal could not be compared across classes: whether the class holds a
/// separated minority (measured on a binary tabular set: a clean minority class of heavy-tailed
/// features split at silhouette 0.53-0.75 and passed its clean bounds, and judging it attacked
/// quarantined 20-40% of it). If so, only that minority is flagged, and the reason is returned.
/// Two ways to find one: the records `record` would flag, regrown by untangle's discriminant
/// and confirmed as a second mode on it; failing that, a small group beyond the class's own tails
/// along one of its top principal directions (Student-t components), which heavy tails hide from
/// the first way (a planted 1% cluster in generated transactions: the regrowth took in the
/// tails, 600-850 records at D 1.2-1.8; along the top direction the group stands at D 13-18).
pub(super) fn separated_minority(e: &ClassEvidence<'_>, record: &mut RecordEvidence) -> Option<String> {
    let geometry = e.geometry?;
    let (features, width) = geometry.coordinates();
    let flagged: Vec<u8> = record.flag.iter().map(|&f| f as u8).collect();
    // The reassignment cuts any distribution cleanly in two (a heavy tail from its core too);
    // a population is a second mode: a two-Gaussian fit on the discriminant, which does not
    // follow the cut, must find two components clearly apart.
    let regrown = separated_population(&flagged, || (features.clone(), width)).and_then(|population| {
        let modes = fit_two_gaussians(&population.discriminant)?;
        (modes.separation() > CLEAN_SEPARATION).then(|| (population.members, modes.separation()))
    });
    let (members, separation, how) = match regrown {
        Some((members, separation)) => (members, separation, "on their discriminant"),
        None => {
            let (members, separation) = group_beyond_the_tails(&features, width)?;
            (
                members,
                separation,
                "beyond the class's tails along a principal direction",
            )
        }
    };
    let size = members.iter().filter(|&&m| m == 1).count();
    mark_population(record, &members, true);
    Some(format!(
        "its records hold a separated group of {size} (a mode of its own {how}: Ashman's D {separation:.1})"
    ))
}

/// Principal directions searched for a group beyond a class's tails.
const GROUP_DIRECTIONS: usize = 3;

/// The most separated small group beyond either tail of one of the class's top principal
/// directions (columns of `features`, `width` per record, principal coordinates first), by a
/// two-component Student-t fit, when one passes [`crate::detect::mixture::Split::minor_is_a_group`]: the members (1) and Ashman's D.
fn group_beyond_the_tails(features: &[f64], width: usize) -> Option<(Vec<u8>, f64)> {
    let n = features.len() / width.max(1);
    (0..GROUP_DIRECTIONS.min(width))
        .flat_map(|column| {
            let t: Vec<f64> = features.chunks_exact(width).map(|row| row[column]).collect();
            [Tail::Upper, Tail::Lower].map(|side| {
                let split = fit_two_students(&t, side)?;
                split.minor_is_a_group(n).then(|| {
                    let members = t.iter().map(|&v| (split.minor_posterior(v) > 0.5) as u8).collect();
                    (members, split.separation())
                })
            })
        })
        .flatten()
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// In a class judged attacked by comparison, the flagged records are often only the poison
/// cluster's core: SPECTRE's tail and a split's small side miss its edge members. As the density
/// detector does for its dense core (`detect::untangle`), the flags are regrown to the separated
/// population they belong to, when there is one; flagged records stay flagged. Measured on the
/// Gaussian grid's unseen seeds (1000-1004): 15% cluster recall 0.835 -> 0.973 at 64 dims and
/// 0.947 -> 0.964 at 256, precision and false quarantine unchanged or better.
///
/// The regrowth's reassignment keeps a tight core when the poison is spread (records from
/// several source classes): then every record that stands beyond the rest of the class along the
/// flagged group's own direction, and sits closer to the group than to the rest, joins it
/// (`untangle::beyond_the_rest`). That direction includes the part of the group's shift outside
/// the class basis ([`ClassGeometry::project_toward`]), which a cluster too small to own a
/// principal direction has nowhere else. Tuning seeds 1-5: 5% clusters at 2048 dims x 300 per
/// class, recall 0.91 -> 0.97; at 512 dims x 3000 per class, seed 1, 124 -> 149 of 150 at 3 clean
/// records.
///
/// Sparse (ReLU) classes are regrown along the line between the flags' centroid and the rest's
/// first (`untangle::population_along_centroids`): Fisher's discriminant, fitted on a few dozen
/// seeds in a class this heavy-tailed, drifted to clean records. Generated ReLU layers, 3 000
/// records per class, tuning seeds 1-8: faint 5% backdoors at 128 units, recall 0.81 -> 0.93 at
/// 121 -> 90 clean records quarantined per run; 5% at 64 units 0.966 -> 1.0 (90 -> 76); 1% at 64
/// units 0.750 -> 0.746 (145 -> 26). At 300-500 per class up to 5 clean records fewer per run,
/// recall within 1%. Where no population stands out on that line the Fisher path still runs.
///
/// When the class holds a whole group ([`whole_group`]: a population found as such, a
/// separated group), Fisher's path starts from it alone, and the other flags (SPECTRE's record
/// tail) go: in a heavy-tailed class of thousands that tail is hundreds of clean records, and a
/// regrowth seeded with them keeps them all. Generated ReLU layers, 128 units x 3 000 per class,
/// 1% backdoors, tuning seeds 1-8: in the 3 runs where SPECTRE and the group both judged the
/// class and the centroid line found no mode, 211-369 clean records quarantined -> 23-61, one
/// poisoned record of 90 lost. At 300-500 per class (700 tuning runs) 6 runs changed: 13-73
/// clean records fewer in 4, 3 more flipped records found (6 clean fewer) in a label-flip run,
/// and in one faint-trigger run 5 of its 25 poisoned records lost (with 100 clean fewer). Dense
/// classes held no such group in the Gaussian grids (160 tuning runs unchanged). A group that may
/// be only part of its population ([`Grouping::may_be_part`], a shared shift's) is never such a
/// seed on its own: the flags stay as they were (SPECTRE's tail, other splits) and seed the
/// regrowth; beside a whole group it joins the union that does.
pub(super) fn grow_flagged(e: &ClassEvidence<'_>, record: &mut RecordEvidence) {
    let Some(geometry) = e.geometry else { return };
    let flagged: Vec<u8> = record.flag.iter().map(|&f| f as u8).collect();
    let members = flagged.iter().filter(|&&f| f == 1).count();
    if members < MIN_MEMBERS || flagged.len() - members < MIN_MEMBERS {
        return;
    }
    let sparse = is_sparse_class(e);
    if sparse && let Some(population) = population_along_centroids(geometry.x, geometry.dim, &flagged) {
        mark_population(record, &population, false);
        log::debug!(
            "class {}: regrowth along the centroids from {members} flagged to {}",
            e.class,
            record.flag.iter().filter(|&&f| f).count()
        );
        return;
    }
    let flagged = match whole_group(e) {
        Some(group) => {
            mark_population(record, &group, true);
            group
        }
        None => flagged,
    };
    let (basis, toward) = geometry.project_toward(&flagged);
    let (coordinates, width) = basis.coordinates(geometry.dim);
    if let Some(population) = separated_population(&flagged, || (coordinates.clone(), width)) {
        mark_population(record, &population.members, false);
    }
    let flagged_count = |record: &RecordEvidence| record.flag.iter().filter(|&&f| f).count();
    log::debug!(
        "class {}: regrowth from {} seeds, {} after the separated population",
        e.class,
        flagged.iter().filter(|&&f| f == 1).count(),
        flagged_count(record)
    );
    let Some(toward) = toward else { return };
    let features: Vec<f64> = coordinates
        .chunks_exact(width)
        .zip(&toward)
        .flat_map(|(row, &t)| row.iter().copied().chain(std::iter::once(t)))
        .collect();
    let Some(fit) = discriminant(&features, width + 1, &flagged).filter(|f| f.separation() >= MIN_SEPARATION) else {
        return;
    };
    let group: Vec<u8> = record.flag.iter().map(|&f| f as u8).collect();
    mark_population(record, &beyond_the_rest(&fit.projected, &group), false);
    log::debug!("class {}: {} flagged beyond the rest", e.class, flagged_count(record));
}

/// The union (1 = member) of the class's whole suspect groups ([`Grouping::suspect_is_whole`])
/// from detectors whose class signal is over the bound it is judged by (a lean group's lower
/// bound included): populations found as such (a separated group), not tails; `None` when there
/// is none. Unlike [`whole_groups_only`] it asks no detector to attack the class: it seeds a
/// regrowth, it does not judge. (So a lean group, not regrown when it alone judged its class,
/// does seed the regrowth where another detector attacks the class. Measured in 0.2.40 against
/// seeding only from signals over their clean bound, generated ReLU layers, tuning seeds: 3 of
/// 1 080 runs changed: of 960 at 300-500 per class two 5% runs, 8 clean records fewer in one
/// and 35 more in the other; of 120 at 3 000 per class (1%, faint, label flips) one label-flip
/// run, 93 records fewer. Kept.)
pub(super) fn whole_group(e: &ClassEvidence<'_>) -> Option<Vec<u8>> {
    let groups = whole_suspect_groups(e.scores.iter().filter(|s| s.signal.is_some_and(|sig| sig.over_bound())));
    // A group that may be part of its population seeds alone never; beside a whole one, it
    // stays in the union (its records are why its detector judged the class).
    if groups.iter().all(|(g, _)| g.may_be_part) {
        return None;
    }
    union_of(&groups)
}

/// The suspect groups of `scores` that are whole populations ([`Grouping::suspect_is_whole`]),
/// with their suspect cluster's label.
fn whole_suspect_groups<'s>(scores: impl Iterator<Item = &'s ClassScores>) -> Vec<(&'s Grouping, u8)> {
    scores
        .filter_map(|s| s.grouping.as_ref())
        .filter(|g| g.suspect_is_whole)
        .filter_map(|g| g.suspect.map(|s| (g, s)))
        .collect()
}

/// Every record in any of `groups` (1 = member); `None` without a group.
fn union_of(groups: &[(&Grouping, u8)]) -> Option<Vec<u8>> {
    let n = groups.first()?.0.cluster.len();
    Some(
        (0..n)
            .map(|i| groups.iter().any(|(g, s)| g.cluster[i] == *s) as u8)
            .collect(),
    )
}

/// Where every detector attacking the class found a whole population (its suspect group, see
/// [`Grouping::suspect_is_whole`]), the union of those groups (1 = member): the group is then the
/// finding, and the class's other tails are its natural shape. SPECTRE's record tail (z > 2) and
/// its regrowth flag in every attacked class; in label-flip runs, where activation clustering's
/// small cluster is mostly the flipped records, they added 600-1000 clean records per class
/// (ReLU 64 dims x 3000, tuning seeds: false quarantine 2.4% -> 0.3%, recall unchanged).
pub(super) fn whole_groups_only(e: &ClassEvidence<'_>, attacking: &[usize]) -> Option<Vec<u8>> {
    let groups = whole_suspect_groups(attacking.iter().map(|&d| &e.scores[d]));
    if groups.len() < attacking.len() {
        return None;
    }
    union_of(&groups)
}

/// Flags the records of `members` (1 = member) as the class's separated group; with `only`, every
/// other record's flag is cleared.
///
/// A record this newly flags says so first: what was said of it before (a detector's suspect
/// group whose flags `only` cleared, say) is not why it is quarantined.
pub(super) fn mark_population(record: &mut RecordEvidence, members: &[u8], only: bool) {
    for (i, &member) in members.iter().enumerate() {
        if member == 1 {
            record.flag_member(i, "in the separated group");
        } else if only {
            record.flag[i] = false;
        }
    }
}
