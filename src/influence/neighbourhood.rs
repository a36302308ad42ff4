//! What the neighbour search says about each record: deep k-NN label disagreement (Peri et al.
//! 2020), the mean distance to its neighbours, and near-copy groups.
//!
//! A record is linked to a neighbour when either (a) their distance is far below the dataset's
//! typical nearest-neighbour distance, or (b) its nearest few neighbours sit together and the next
//! one is `CLIFF` times further away (a "cliff" in its sorted neighbour distances). (a) alone
//! shrinks with the dataset: the typical distance falls as records pile up, while an attacker's
//! jitter does not, so at 3000 records per class it missed most injected copies on sparse layers.
//! (b) is scale-free. Links are joined transitively; a group is kept when it is `SEPARATION`
//! times tighter than its nearest outsider (natural clumps in a continuum are not) and either
//! compact on the typical scale or held together by a cliff (a saturated unit spreading a class
//! along a ray links a long chain, which is neither).
//!
//! The groups are built by a union-find that an incremental scan seeds with the reference's groups
//! and then links only its new records into ([`Groups::link_close`]), so a group that gains
//! copies from tonight's data is found whole.

use std::collections::HashMap;

use rayon::prelude::*;

use super::InfluenceParams;
use super::knn::Neighbours;
use crate::stats::median;

/// Per-record label disagreement and mean distance over the found neighbours (rows of `nb`,
/// whose records have labels `own`).
pub fn disagreement_and_distance(nb: &Neighbours, own: &[u32], labels: &[u32]) -> (Vec<f32>, Vec<f32>) {
    (0..own.len())
        .into_par_iter()
        .map(|i| {
            let (idx, dist) = nb.of(i);
            let (mut valid, mut other, mut sum) = (0usize, 0usize, 0f32);
            for (&j, &d) in idx.iter().zip(dist).filter(|(_, d)| d.is_finite()) {
                valid += 1;
                other += (labels[j as usize] != own[i]) as usize;
                sum += d;
            }
            let m = valid.max(1) as f32;
            (other as f32 / m, sum / m)
        })
        .unzip()
}

/// Vector norms of row-major `x`.
pub fn norms(x: &[f32], dim: usize) -> Vec<f64> {
    x.par_chunks_exact(dim)
        .map(|r| r.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>().sqrt())
        .collect()
}

/// The median norm of each class (`offsets[c]..offsets[c + 1]` are class `c`'s records).
pub fn typical_norms(norms: &[f64], offsets: &[usize]) -> Vec<f64> {
    offsets.windows(2).map(|w| median(&norms[w[0]..w[1]])).collect()
}

/// Records whose vector is not (near) zero: norm at least a quarter of their class's median.
/// A ReLU layer maps many unrelated inputs to (almost) all-zero vectors; those coincide because
/// the network discards them, not because someone copied a record, so they never form near-copy
/// groups.
pub fn live(norms: &[f64], labels: &[u32], typical: &[f64]) -> Vec<bool> {
    norms
        .iter()
        .zip(labels)
        .map(|(&v, &c)| is_live(v, typical[c as usize]))
        .collect()
}

/// A record of norm `norm` in a class of median norm `typical` is not a near-zero vector.
pub fn is_live(norm: f64, typical: f64) -> bool {
    norm >= LIVE_NORM * typical
}

/// Records under this share of their class's median norm are near-zero vectors.
const LIVE_NORM: f64 = 0.25;

/// Records that may join near-copy groups: live ones whose vector is not carried by a single
/// coordinate. A ReLU layer can map much of a class onto one active unit (a ray); such vectors
/// differ in one number only, and among thousands of numbers some coincide by chance, which is no
/// sign of copying. Seen on generated 3000-record classes with 87% of records on one unit: 5- to
/// 10-record chance "copy groups" in every such class, 15-280 clean records quarantined a run.
pub fn copyable(x: &[f32], dim: usize, live: &[bool]) -> Vec<bool> {
    if dim < MIN_UNITS {
        return live.to_vec();
    }
    x.par_chunks_exact(dim)
        .zip(live)
        .map(|(row, &live)| {
            let (total, largest) = row.iter().fold((0f64, 0f64), |(t, m), &v| {
                let sq = (v as f64) * (v as f64);
                (t + sq, m.max(sq))
            });
            live && largest < SINGLE_COORDINATE_SHARE * total
        })
        .collect()
}

/// A vector whose largest coordinate holds this share of its squared norm (within 8 degrees of
/// an axis) is carried by that coordinate.
const SINGLE_COORDINATE_SHARE: f64 = 0.98;

/// Below this many dimensions (a few tabular features, not a layer of units) a record carried by
/// one coordinate is nothing unusual, and the rule would leave too few records to copy: with one
/// feature, none.
const MIN_UNITS: usize = 8;

/// A record's next neighbour this many times further than the previous one is a cliff.
const CLIFF: f32 = 4.0;

/// Fewest neighbours before a cliff that make a group (with the record itself: four).
const CLIFF_MIN_NEIGHBOURS: usize = 3;

/// A group is kept only if its radius is at most this fraction of its nearest outsider's distance.
const SEPARATION: f64 = 0.5;

/// Union-find over record positions, for near-copy groups.
pub struct Groups {
    parent: Vec<u32>,
    /// Records whose links do not rest on the typical-distance threshold alone: a cliff in their
    /// own neighbour distances, or membership of a group the reference kept.
    vouched: Vec<bool>,
}

impl Groups {
    pub fn new(n: usize) -> Groups {
        Groups {
            parent: (0..n as u32).collect(),
            vouched: vec![false; n],
        }
    }

    /// Puts `a` and `b` in one group kept by an earlier scan.
    pub fn seed(&mut self, a: u32, b: u32) {
        self.union(a, b);
        self.vouched[a as usize] = true;
        self.vouched[b as usize] = true;
    }

    pub(super) fn root(&mut self, mut i: u32) -> u32 {
        while self.parent[i as usize] != i {
            self.parent[i as usize] = self.parent[self.parent[i as usize] as usize];
            i = self.parent[i as usize];
        }
        i
    }

    pub fn union(&mut self, a: u32, b: u32) {
        let (a, b) = (self.root(a), self.root(b));
        if a != b {
            self.parent[a.max(b) as usize] = a.min(b);
        }
    }

    /// Links each record `of[q]` to the neighbours (row `q` of `nb`, nearest first) closer than
    /// `threshold` or before a cliff, where both are `copyable`.
    pub fn link_close(&mut self, nb: &Neighbours, of: &[usize], copyable: &[bool], threshold: f64) {
        for (q, &i) in of.iter().enumerate() {
            if !copyable[i] {
                continue;
            }
            let (idx, dist) = nb.of(q);
            let before_cliff = before_cliff(dist);
            self.vouched[i] |= before_cliff > 0;
            for j in 0..nb.k {
                let close = j < before_cliff || (dist[j] as f64) <= threshold;
                if close && idx[j] as usize != i && copyable[idx[j] as usize] {
                    self.union(i as u32, idx[j]);
                }
            }
        }
    }

    /// The final groups (see the module's doc for which are kept; the others are dissolved into
    /// single records). `x` (`dim` columns) holds every record; `nb` holds the neighbours of the
    /// records `of`, the only ones whose outsiders are known.
    pub fn finish(
        mut self,
        x: &[f32],
        dim: usize,
        labels: &[u32],
        threshold: f64,
        min_group: usize,
        (nb, of): (&Neighbours, &[usize]),
    ) -> CopyGroups {
        let n = self.parent.len();
        let roots: Vec<u32> = (0..n as u32).map(|i| self.root(i)).collect();
        let mut size = vec![0u32; n];
        roots.iter().for_each(|&r| size[r as usize] += 1);
        let mut centre: HashMap<u32, (Vec<f64>, u32)> = HashMap::new();
        let mut vouched: HashMap<u32, bool> = HashMap::new();
        for i in (0..n).filter(|&i| size[roots[i] as usize] > 1) {
            *vouched.entry(roots[i]).or_default() |= self.vouched[i];
            let e = centre.entry(roots[i]).or_insert_with(|| (vec![0.0; dim], 0));
            e.0.iter_mut()
                .zip(&x[i * dim..(i + 1) * dim])
                .for_each(|(c, &v)| *c += v as f64);
            e.1 += 1;
        }
        let mut radius: HashMap<u32, f64> = HashMap::new();
        for i in (0..n).filter(|&i| size[roots[i] as usize] > 1) {
            let (sum, count) = &centre[&roots[i]];
            let d = x[i * dim..(i + 1) * dim]
                .iter()
                .zip(sum)
                .map(|(&v, s)| (v as f64 - s / *count as f64).powi(2))
                .sum::<f64>()
                .sqrt();
            let r = radius.entry(roots[i]).or_insert(0.0);
            *r = r.max(d);
        }
        let mut outsider: HashMap<u32, f64> = HashMap::new();
        for (q, &i) in of.iter().enumerate().filter(|&(_, &i)| size[roots[i] as usize] > 1) {
            let (idx, dist) = nb.of(q);
            if let Some(j) = (0..nb.k).find(|&j| dist[j].is_finite() && roots[idx[j] as usize] != roots[i]) {
                let nearest = outsider.entry(roots[i]).or_insert(f64::INFINITY);
                *nearest = nearest.min(dist[j] as f64);
            }
        }
        let kept = |group: u32, radius: f64| {
            let separated = radius <= SEPARATION * outsider.get(&group).copied().unwrap_or(f64::INFINITY);
            separated && (radius <= threshold || vouched[&group])
        };
        let root: Vec<u32> = (0..n)
            .map(|i| match radius.get(&roots[i]) {
                Some(&r) if !kept(roots[i], r) => i as u32,
                _ => roots[i],
            })
            .collect();
        size.iter_mut().for_each(|s| *s = 0);
        root.iter().for_each(|&r| size[r as usize] += 1);
        let mut label_sets: HashMap<u32, Vec<u32>> = HashMap::new();
        for i in (0..n).filter(|&i| size[root[i] as usize] > 1) {
            let set = label_sets.entry(root[i]).or_default();
            if !set.contains(&labels[i]) {
                set.push(labels[i]);
            }
        }
        let count = (0..n)
            .filter(|&i| root[i] as usize == i && size[i] as usize >= min_group)
            .count();
        let records = root.iter().filter(|&&r| size[r as usize] as usize >= min_group).count();
        CopyGroups {
            size: root.iter().map(|&r| size[r as usize]).collect(),
            labels: root
                .iter()
                .map(|r| label_sets.get(r).map_or(1, |s| s.len() as u32))
                .collect(),
            root,
            count,
            records,
        }
    }
}

/// How many of a record's nearest neighbours (`dist`, ascending) come before a cliff: the
/// largest `m >= CLIFF_MIN_NEIGHBOURS` with `dist[m] > CLIFF * dist[m - 1]`, or 0.
fn before_cliff(dist: &[f32]) -> usize {
    (CLIFF_MIN_NEIGHBOURS..dist.len())
        .rev()
        .find(|&m| dist[m].is_finite() && dist[m] > CLIFF * dist[m - 1])
        .unwrap_or(0)
}

/// Near-copy groups, per record.
pub struct CopyGroups {
    /// The record's group, named by one member's position (itself when it has no group).
    pub root: Vec<u32>,
    /// Size of the record's group (1 = none).
    pub size: Vec<u32>,
    /// Labels seen within the record's group (more than one: conflicting copies).
    pub labels: Vec<u32>,
    /// Groups of at least the flagging size.
    pub count: usize,
    /// Records in those groups.
    pub records: usize,
}

/// Everything the full neighbour search gives the influence state.
pub struct Neighbourhood {
    pub disagreement: Vec<f32>,
    pub mean_distance: Vec<f32>,
    pub nearest_ratio: Vec<f32>,
    pub groups: CopyGroups,
    pub median_nearest: f64,
    pub threshold: f64,
}

/// Deep k-NN scores and near-copy groups (among the `copyable` records) from the neighbours of
/// every record.
pub fn neighbourhood(
    nb: &Neighbours,
    x: &[f32],
    dim: usize,
    labels: &[u32],
    copyable: &[bool],
    params: &InfluenceParams,
) -> Neighbourhood {
    let n = labels.len();
    let (disagreement, mean_distance) = disagreement_and_distance(nb, labels, labels);
    let nearest: Vec<f64> = (0..n).map(|i| nb.of(i).1[0] as f64).filter(|d| d.is_finite()).collect();
    let median_nearest = median(&nearest);
    let threshold = params.near_duplicate_ratio * median_nearest;
    let nearest_ratio = nearest_ratios(nb, median_nearest);
    let mut groups = Groups::new(n);
    let all: Vec<usize> = (0..n).collect();
    groups.link_close(nb, &all, copyable, threshold);
    Neighbourhood {
        disagreement,
        mean_distance,
        nearest_ratio,
        groups: groups.finish(x, dim, labels, threshold, params.near_duplicate_min_group, (nb, &all)),
        median_nearest,
        threshold,
    }
}

/// Distance to the nearest neighbour (rows of `nb`) divided by the dataset's median of it.
pub fn nearest_ratios(nb: &Neighbours, median_nearest: f64) -> Vec<f32> {
    (0..nb.index.len() / nb.k)
        .map(|i| (nb.of(i).1[0] as f64 / median_nearest.max(f64::MIN_POSITIVE)) as f32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::knn;
    use super::*;

    #[test]
    fn near_copy_groups_are_compact_and_never_near_zero_or_chains() {
        // 2-D points: a grid (spacing 1), a compact group of 6 copies, a chain of 8 points 0.01
        // apart (linked pairwise but long), and 6 zero vectors.
        let mut x: Vec<f32> = Vec::new();
        for i in 0..20 {
            for j in 0..20 {
                x.extend([10.0 + i as f32, 10.0 + j as f32]);
            }
        }
        let copies = x.len() / 2;
        (0..6).for_each(|i| x.extend([40.0 + 0.001 * i as f32, 40.0]));
        let chain = x.len() / 2;
        (0..8).for_each(|i| x.extend([50.0 + 0.04 * i as f32, 50.0]));
        let zeros = x.len() / 2;
        (0..6).for_each(|_| x.extend([0.0, 0.0]));
        let n = x.len() / 2;
        let labels = vec![0u32; n];
        let mut live = vec![true; n];
        (zeros..n).for_each(|i| live[i] = false);
        let (nb, _) = knn::approximate(&x, 2, 5, 4, 1);
        let hood = neighbourhood(&nb, &x, 2, &labels, &live, &InfluenceParams::default());
        let size = &hood.groups.size;
        assert!((copies..copies + 6).all(|i| size[i] == 6));
        assert!((chain..chain + 8).all(|i| size[i] == 1), "a chain is not a copy group");
        assert!((zeros..n).all(|i| size[i] == 1), "zero vectors are not copies");
        assert!((0..copies).all(|i| size[i] == 1));
        assert_eq!(hood.groups.count, 1);
    }

    #[test]
    fn vectors_carried_by_one_coordinate_never_form_copy_groups() {
        // 8 units, 3 of them used: a dense cloud, 6 exact copies of a dense vector, and 6
        // coinciding points on the first axis (one active unit, a little leakage into the second).
        let mut x: Vec<f32> = Vec::new();
        let mut push = |v: [f32; 3]| x.extend(v.into_iter().chain([0.0; 5]));
        for i in 0..10 {
            for j in 0..10 {
                for k in 0..4 {
                    push([5.0 + i as f32, 5.0 + j as f32, 5.0 + k as f32]);
                }
            }
        }
        (0..6).for_each(|i| push([30.0 + 0.001 * i as f32, 30.0, 30.0]));
        (0..6).for_each(|i| push([40.0 + 0.001 * i as f32, 0.5, 0.0]));
        let (n, copies, on_axis) = (412, 400, 406);
        let copyable = copyable(&x, 8, &vec![true; n]);
        assert!((0..on_axis).all(|i| copyable[i]) && (on_axis..n).all(|i| !copyable[i]));
        assert_eq!(
            super::copyable(&[3.0, 0.0], 2, &[true]),
            [true],
            "fewer than 8 units: no rule"
        );
        let (nb, _) = knn::approximate(&x, 8, 5, 4, 1);
        let hood = neighbourhood(&nb, &x, 8, &vec![0u32; n], &copyable, &InfluenceParams::default());
        let size = &hood.groups.size;
        assert!((copies..on_axis).all(|i| size[i] == 6), "{:?}", &size[copies..on_axis]);
        assert!((on_axis..n).all(|i| size[i] == 1), "{:?}", &size[on_axis..n]);
    }

    #[test]
    fn copies_jittered_beyond_the_typical_scale_are_found_by_their_cliff() {
        // A grid of spacing 1 (typical nearest distance 1, so the distance rule links only under
        // 0.05), a run of 30 points 0.2 apart (a ray: dense, but no cliff), and 6 copies jittered
        // by about 0.2, far from everything.
        let mut x: Vec<f32> = Vec::new();
        for i in 0..20 {
            for j in 0..20 {
                x.extend([i as f32, j as f32]);
            }
        }
        let ray = x.len() / 2;
        (0..30).for_each(|i| x.extend([-30.0 + 0.2 * i as f32, -30.0]));
        let copies = x.len() / 2;
        let jitter = [
            (0.0, 0.0),
            (0.2, 0.0),
            (0.0, 0.2),
            (-0.2, 0.0),
            (0.0, -0.2),
            (0.15, 0.15),
        ];
        jitter.iter().for_each(|(a, b)| x.extend([60.0 + a, 60.0 + b]));
        let n = x.len() / 2;
        let labels = vec![0u32; n];
        let live = vec![true; n];
        let (nb, _) = knn::approximate(&x, 2, 8, 4, 1);
        let hood = neighbourhood(&nb, &x, 2, &labels, &live, &InfluenceParams::default());
        assert!(
            hood.threshold < 0.1,
            "the distance rule alone would not link the copies"
        );
        let size = &hood.groups.size;
        assert!((copies..n).all(|i| size[i] == 6), "{:?}", &size[copies..n]);
        assert!((ray..copies).all(|i| size[i] == 1), "a ray is not a copy group");
        assert!((0..ray).all(|i| size[i] == 1));
    }

    #[test]
    fn a_tight_clump_inside_a_continuum_is_not_a_copy_group() {
        // Five records within 0.03 of each other (under the distance rule's 0.05, so it links
        // them) sit in the middle of a cell of a patch of spacing 0.1: their nearest outsiders are
        // 0.054 away, less than twice their radius. A natural clump, dissolved. The same five far
        // from everything are a group.
        let mut x: Vec<f32> = Vec::new();
        for i in 0..20 {
            for j in 0..20 {
                x.extend([i as f32, j as f32]);
            }
        }
        for i in 0..6 {
            for j in 0..6 {
                x.extend([100.0 + 0.1 * i as f32, 100.0 + 0.1 * j as f32]);
            }
        }
        let clump = |x: &mut Vec<f32>, (cx, cy): (f32, f32)| {
            for (a, b) in [(0.0, 0.0), (0.03, 0.0), (-0.03, 0.0), (0.0, 0.03), (0.0, -0.03)] {
                x.extend([cx + a, cy + b]);
            }
        };
        let inside = x.len() / 2;
        clump(&mut x, (100.25, 100.25));
        let isolated = x.len() / 2;
        clump(&mut x, (-50.0, 60.0));
        let n = x.len() / 2;
        let (nb, _) = knn::approximate(&x, 2, 8, 4, 1);
        let hood = neighbourhood(&nb, &x, 2, &vec![0; n], &vec![true; n], &InfluenceParams::default());
        assert!(hood.threshold > 0.03, "the distance rule links the clump");
        let size = &hood.groups.size;
        assert!(
            (inside..isolated).all(|i| size[i] == 1),
            "{:?}",
            &size[inside..isolated]
        );
        assert!((isolated..n).all(|i| size[i] == 5), "{:?}", &size[isolated..n]);
    }
}
