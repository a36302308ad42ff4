//! Separated groups: records of one class that the k-nearest-neighbour graph holds apart from the
//! rest of their class, with other classes' records as their nearest outsiders.
//!
//! Why: a backdoor's poison is a population of its own inside the target class (Chen et al. 2018,
//! arXiv 1811.03728), and apart from the trigger it looks like the classes it was taken from, so
//! once the group itself is set aside, a poisoned record's nearest records are those classes'
//! (the same reasoning as activation clustering's exclusionary reclassification). On sparse ReLU
//! layers the class statistics (spectral gap, split silhouette, robust eigenvalues) do not tell an
//! attacked class from clean classes with natural lobes; this test does, where the poison is not
//! linked to its class: measured on generated ReLU layers (64 and 128 units, 300-3000 records per
//! class, 1-15% poison, tuning seeds), a poisoned class held a group of 15-408 records, all
//! poison, whose outsiders were other classes' in 98-100% of cases, in 7 of 19 runs (in the rest
//! a few neighbour links tie the poison to its class and nothing is found); no clean class, ReLU
//! or Gaussian, 300-10 000 records per class, held a group of more than 11.
//!
//! A group is a connected component of the graph that links each live record to those of its k
//! nearest neighbours that carry its label; the class's largest component is its body. A group
//! counts when it holds at least [`MIN_GROUP`] records, at most [`MAX_SHARE`] of its class, and
//! the nearest records outside it (exact search, on a sample of its members) carry another label
//! in at least [`MIN_OUTSIDER_DISAGREEMENT`] of cases (an island of the class's own shape, such as
//! a natural lobe split off by a gap, has its own class outside). Since 0.2.16 a second graph
//! with mutual links only adds candidates, under a stricter outsider test (see
//! [`separated_groups`]).

use rayon::prelude::*;

use super::knn::{self, Neighbours};
use super::neighbourhood::Groups;

/// Fewest records in a group (clean classes held groups of up to 11 at 3000 records per class).
pub const MIN_GROUP: usize = 12;
/// Largest share of its class's live records a group may hold: a minority, as poison is.
pub const MAX_SHARE: f64 = 0.25;
/// Smallest share of other-class records among the group's nearest outsiders.
pub const MIN_OUTSIDER_DISAGREEMENT: f64 = 0.5;
/// The same for a group of the mutual-link graph (see [`separated_groups`]).
const MIN_MUTUAL_OUTSIDER_DISAGREEMENT: f64 = 0.7;
/// Smallest other-label share of a mutual-link group's listed outside neighbours for its exact
/// outsider search to run (poison groups 0.60-0.93 on the tuning seeds).
const MIN_LIST_DISAGREEMENT: f64 = 0.4;
/// Members per group whose nearest outsiders are searched (evenly spaced).
const OUTSIDER_SAMPLE: usize = 32;
/// Outsiders per sampled member.
const OUTSIDERS: usize = 10;
/// Candidate groups tested per graph, most promising first: each costs an exact search of its
/// sampled members' nearest outsiders among every record.
const MAX_CANDIDATES: usize = 16;

/// Per record: its separated group's size (0 = in none) and the share of the group's nearest
/// outsiders with another label.
#[derive(Clone, Debug, Default)]
pub struct SeparatedGroups {
    pub size: Vec<u32>,
    pub outsider_disagreement: Vec<f32>,
}

/// Which neighbour links join two live records of one class into a component.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Links {
    /// Either record among the other's k nearest.
    Either,
    /// Each among the other's k nearest. A loose group beside its class's dense body is linked
    /// to it by its own records' neighbour lists (the body's records are their nearest), never by
    /// the body's (whose nearest are each other): mutual links cut such one-way bridges.
    Mutual,
}

/// The separated groups of every class, from the neighbours `nb` of every record (rows of `x`,
/// `dim` columns, the space they were searched in); near-zero records (`live` false) belong to
/// none and are nobody's outsider.
///
/// Candidates come from two graphs. Either-way links make the components the module's doc
/// describes. Mutual links also cut a group tied to its class by one-way links only: on
/// generated ReLU layers of 3000 records per class (tuning seeds 1-5, 64 and 128 units, 40
/// attacked runs of 1-15% poison) a mutual-link group of poison alone passed the outsider test
/// in 20 runs, and no clean dataset (10 runs) held one. Mutual links also fragment clean
/// classes, so those candidates are ranked by the other-label share of their members' own
/// neighbour lists before any exact search (most clean fragments near 0, poison groups
/// 0.60-0.93), and must pass a stricter outsider test: clean fragments in attacked datasets
/// reached 0.52-0.65 at 64 units (poison groups 0.71-0.98), though two at 128 units reached
/// 0.72 and 0.94.
pub fn separated_groups(nb: &Neighbours, x: &[f32], dim: usize, labels: &[u32], live: &[bool]) -> SeparatedGroups {
    let n = labels.len();
    let classes = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
    let mut class_live = vec![0usize; classes];
    for i in (0..n).filter(|&i| live[i]) {
        class_live[labels[i] as usize] += 1;
    }
    let mut out = SeparatedGroups {
        size: vec![0; n],
        outsider_disagreement: vec![0.0; n],
    };
    let either = either_way_links(nb, labels, live);
    for links in [Links::Either, Links::Mutual] {
        let roots = match links {
            Links::Either => components(nb, &either),
            Links::Mutual => components(nb, &mutual_links(nb, &either)),
        };
        let mut candidates = candidates(&roots, labels, live, &class_live);
        let min_disagreement = match links {
            Links::Either => MIN_OUTSIDER_DISAGREEMENT,
            Links::Mutual => {
                // A mutual-link component lies inside an either-way one, so a component whose
                // root is in an accepted group is wholly in it: skip those before truncating.
                let share = list_disagreement(nb, labels, live, &roots);
                candidates
                    .retain(|&(_, root)| share[root as usize] >= MIN_LIST_DISAGREEMENT && out.size[root as usize] == 0);
                candidates.sort_by(|a, b| share[b.1 as usize].total_cmp(&share[a.1 as usize]).then(b.cmp(a)));
                MIN_MUTUAL_OUTSIDER_DISAGREEMENT
            }
        };
        candidates.truncate(MAX_CANDIDATES);
        log::debug!(
            "separated groups, {links:?} links: {} candidates to test",
            candidates.len()
        );
        let members = members_of(&roots, live, &candidates);
        for ((s, root), members) in candidates.into_iter().zip(members) {
            let disagreement = outsider_disagreement(x, dim, labels, live, &roots, root, &members);
            if disagreement >= min_disagreement {
                for &i in &members {
                    out.size[i] = s as u32;
                    out.outsider_disagreement[i] = disagreement as f32;
                }
            }
        }
    }
    out
}

/// Which entries of the neighbour lists (row i's k entries) link two live records of one class.
fn either_way_links(nb: &Neighbours, labels: &[u32], live: &[bool]) -> Vec<bool> {
    (0..labels.len())
        .into_par_iter()
        .flat_map_iter(|i| {
            let (idx, dist) = nb.of(i);
            idx.iter().zip(dist).map(move |(&j, d)| {
                let j = j as usize;
                live[i] && d.is_finite() && j != i && live[j] && labels[j] == labels[i]
            })
        })
        .collect()
}

/// The links of `either` whose records each list the other: a binary search of the other's
/// sorted list, so a large `knn_k` costs k log k per record, not k^2.
fn mutual_links(nb: &Neighbours, either: &[bool]) -> Vec<bool> {
    let mut sorted = nb.index.clone();
    sorted.par_chunks_mut(nb.k).for_each(|row| row.sort_unstable());
    let listed = |j: usize, i: usize| sorted[j * nb.k..(j + 1) * nb.k].binary_search(&(i as u32)).is_ok();
    either
        .par_iter()
        .enumerate()
        .map(|(e, &linked)| linked && listed(nb.index[e] as usize, e / nb.k))
        .collect()
}

/// Each record's component root in the graph of the list entries `linked`.
fn components(nb: &Neighbours, linked: &[bool]) -> Vec<u32> {
    let n = nb.index.len() / nb.k;
    let mut groups = Groups::new(n);
    for (e, _) in linked.iter().enumerate().filter(|(_, l)| **l) {
        groups.union((e / nb.k) as u32, nb.index[e]);
    }
    (0..n as u32).map(|i| groups.root(i)).collect()
}

/// The live members of each candidate `(size, root)`, in record order: one pass over the roots.
fn members_of(roots: &[u32], live: &[bool], candidates: &[(usize, u32)]) -> Vec<Vec<usize>> {
    let mut slot = vec![usize::MAX; roots.len()];
    for (c, &(_, root)) in candidates.iter().enumerate() {
        slot[root as usize] = c;
    }
    let mut members = vec![Vec::new(); candidates.len()];
    for i in (0..roots.len()).filter(|&i| live[i]) {
        if let Some(list) = members.get_mut(slot[roots[i] as usize]) {
            list.push(i);
        }
    }
    members
}

/// Components that may be separated groups, as (size, root), largest first: at least
/// [`MIN_GROUP`] records, not their class's body (its largest component, the first root of that
/// size for determinism), at most [`MAX_SHARE`] of the class's live records.
fn candidates(roots: &[u32], labels: &[u32], live: &[bool], class_live: &[usize]) -> Vec<(usize, u32)> {
    let n = labels.len();
    let mut size = vec![0usize; n];
    for i in (0..n).filter(|&i| live[i]) {
        size[roots[i] as usize] += 1;
    }
    let mut body = vec![(0usize, u32::MAX); class_live.len()];
    for root in (0..n).filter(|&r| size[r] > 0) {
        let best = &mut body[labels[root] as usize];
        if size[root] > best.0 {
            *best = (size[root], root as u32);
        }
    }
    let mut candidates: Vec<(usize, u32)> = (0..n)
        .filter(|&root| {
            let class = labels[root] as usize;
            size[root] >= MIN_GROUP
                && body[class].1 != root as u32
                && size[root] as f64 <= MAX_SHARE * class_live[class] as f64
        })
        .map(|root| (size[root], root as u32))
        .collect();
    candidates.sort_unstable_by(|a, b| b.cmp(a));
    candidates
}

/// Per component root: the share of other-label records among its members' listed neighbours
/// outside it (live ones); 0 for a component whose lists never leave it. Costs one pass over the
/// lists, where the exact outsider search costs one over every record per group.
fn list_disagreement(nb: &Neighbours, labels: &[u32], live: &[bool], roots: &[u32]) -> Vec<f64> {
    let n = labels.len();
    let mut outside = vec![0u32; n];
    let mut other = vec![0u32; n];
    for i in (0..n).filter(|&i| live[i]) {
        let root = roots[i] as usize;
        let (idx, dist) = nb.of(i);
        for (&j, _) in idx.iter().zip(dist).filter(|(_, d)| d.is_finite()) {
            let j = j as usize;
            if live[j] && roots[j] as usize != root {
                outside[root] += 1;
                other[root] += (labels[j] != labels[i]) as u32;
            }
        }
    }
    (0..n).map(|r| other[r] as f64 / outside[r].max(1) as f64).collect()
}

/// Share of other-label records among the nearest live non-members of a sample of `members`
/// (of the group `root`), by exact distance.
fn outsider_disagreement(
    x: &[f32],
    dim: usize,
    labels: &[u32],
    live: &[bool],
    roots: &[u32],
    root: u32,
    members: &[usize],
) -> f64 {
    let class = labels[members[0]];
    let sample: Vec<usize> = crate::detect::sample_rows(members.len(), OUTSIDER_SAMPLE)
        .into_iter()
        .map(|m| members[m])
        .collect();
    let outsiders: Vec<u32> = (0..labels.len() as u32)
        .filter(|&j| live[j as usize] && roots[j as usize] != root)
        .collect();
    if outsiders.is_empty() {
        return 0.0;
    }
    let nearest = knn::exact_among(x, dim, OUTSIDERS, &sample, &outsiders);
    let share = |q: usize| {
        let (idx, dist) = nearest.of(q);
        let found: Vec<u32> = idx
            .iter()
            .zip(dist)
            .filter(|(_, d)| d.is_finite())
            .map(|(&j, _)| labels[j as usize])
            .collect();
        found.iter().filter(|&&l| l != class).count() as f64 / found.len().max(1) as f64
    };
    (0..sample.len()).map(share).sum::<f64>() / sample.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};
    use rand_xoshiro::Xoshiro256PlusPlus;

    /// Three classes of 300 2-D points around (0,0), (10,0), (0,10), plus `extra` records
    /// labelled `extra_label` around `at`.
    fn world(extra: usize, at: (f32, f32), extra_label: u32, seed: u64) -> (Vec<f32>, Vec<u32>) {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut x = Vec::new();
        let mut labels = Vec::new();
        let mut blob = |centre: (f32, f32), spread: f32, count: usize, label: u32, x: &mut Vec<f32>| {
            for _ in 0..count {
                let (a, b): (f32, f32) = (StandardNormal.sample(&mut rng), StandardNormal.sample(&mut rng));
                x.extend([centre.0 + spread * a, centre.1 + spread * b]);
                labels.push(label);
            }
        };
        for (c, centre) in [(0.0, 0.0), (10.0, 0.0), (0.0, 10.0)].into_iter().enumerate() {
            blob(centre, 1.0, 300, c as u32, &mut x);
        }
        blob(at, 0.3, extra, extra_label, &mut x);
        (x, labels)
    }

    fn groups_of(x: &[f32], labels: &[u32]) -> SeparatedGroups {
        let (nb, _) = knn::approximate(x, 2, 10, 4, 1);
        separated_groups(&nb, x, 2, labels, &vec![true; labels.len()])
    }

    #[test]
    fn a_group_of_one_class_inside_another_is_separated() {
        // 30 records labelled 0 sitting in class 1's blob, offset from its centre: poison-like.
        let (x, labels) = world(30, (11.5, 1.5), 0, 1);
        let g = groups_of(&x, &labels);
        let planted: Vec<usize> = (900..930).collect();
        assert!(planted.iter().all(|&i| g.size[i] >= 30), "{:?}", &g.size[900..930]);
        assert!(g.outsider_disagreement[900] >= 0.9);
        assert_eq!(g.size[..900].iter().filter(|&&s| s > 0).count(), 0);
    }

    #[test]
    fn an_island_of_the_class_beside_its_own_body_or_too_small_is_not() {
        // An island of class 0 across a gap from class 0's body: its outsiders are class 0's.
        let (x, labels) = world(30, (-6.0, -6.0), 0, 2);
        assert!(groups_of(&x, &labels).size.iter().all(|&s| s == 0));
        // A group under MIN_GROUP records inside another class.
        let (x, labels) = world(MIN_GROUP - 1, (11.5, 1.5), 0, 3);
        assert!(groups_of(&x, &labels).size.iter().all(|&s| s == 0));
    }

    #[test]
    fn a_group_tied_to_its_class_by_one_way_links_is_separated_by_mutual_ones() {
        // Class 0: a dense body (a 0.02-spaced grid left of the origin) and a loose chain of 24
        // records along y = 0 from x = 0.5, whose first member lists body records among its
        // nearest (the body's own lists hold only the body). Class 1: a band of 12 rows of 25
        // above the chain, the chain's other neighbours.
        let mut x = Vec::new();
        let mut labels = Vec::new();
        for a in 0..14 {
            for b in 0..14 {
                x.extend([-0.3 + 0.02 * a as f32, -0.13 + 0.02 * b as f32]);
                labels.push(0);
            }
        }
        let chain: Vec<usize> = (labels.len()..labels.len() + 24).collect();
        for a in 0..24 {
            x.extend([0.5 + 0.25 * a as f32, 0.0]);
            labels.push(0);
        }
        for row in 0..12 {
            for a in 0..25 {
                x.extend([0.5 + 0.25 * a as f32, 0.6 + 0.25 * row as f32]);
                labels.push(1);
            }
        }
        let (nb, _) = knn::approximate(&x, 2, 10, 4, 1);
        let live = vec![true; labels.len()];
        let either = components(&nb, &either_way_links(&nb, &labels, &live));
        assert_eq!(either[chain[0]], either[0], "one-way links tie the chain to the body");
        let g = separated_groups(&nb, &x, 2, &labels, &live);
        assert!(chain.iter().all(|&i| g.size[i] == 24), "{:?}", &g.size[chain[0]..]);
        assert!(g.outsider_disagreement[chain[5]] >= MIN_MUTUAL_OUTSIDER_DISAGREEMENT as f32);
        assert_eq!(g.size.iter().filter(|&&s| s > 0).count(), 24);
    }

    #[test]
    fn near_zero_records_form_no_group() {
        let (x, labels) = world(30, (11.5, 1.5), 0, 4);
        let (nb, _) = knn::approximate(&x, 2, 10, 4, 1);
        let live: Vec<bool> = (0..labels.len()).map(|i| i < 900).collect();
        let g = separated_groups(&nb, &x, 2, &labels, &live);
        assert!(g.size.iter().all(|&s| s == 0));
    }
}
