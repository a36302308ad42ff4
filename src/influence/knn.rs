//! k nearest neighbours of every record, approximately, with an inverted-file index (IVF: Jégou,
//! Douze, Schmid 2011): cluster the points into ~sqrt(n) lists, then compare each list's points
//! only with the points of its `probes` nearest lists, tile by tile in registers (`tiles`).
//!
//! Why not HNSW (hnsw_rs, instant-distance): building a graph over 1M points is pointer-chasing
//! work that keeps 2 cores busy for minutes, while IVF turns the search into dense block
//! arithmetic on reduced dimensions, which is the floor here anyway. Its recall is measured
//! against exact search on a sample every run and reported.

mod tiles;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;

use crate::detect::linalg::mul_abt;
use tiles::{Kernel, Panels, QueryTiles};

/// Rows per matrix product when assigning points to lists; queries per task in exact search.
const QUERY_BLOCK: usize = 256;
/// Below this many points the search is exact (one list holding everything).
const EXACT_BELOW: usize = 4096;

/// `k` neighbours of each of `n` points: `index` and `distance` are `n * k`, nearest first.
pub struct Neighbours {
    pub k: usize,
    pub index: Vec<u32>,
    pub distance: Vec<f32>,
}

impl Neighbours {
    pub fn of(&self, i: usize) -> (&[u32], &[f32]) {
        (
            &self.index[i * self.k..(i + 1) * self.k],
            &self.distance[i * self.k..(i + 1) * self.k],
        )
    }
}

/// For each of `m` queries, the `k` smallest (distance^2, index) seen so far, sorted ascending;
/// flat arrays, so a million queries are two allocations.
struct Tops {
    k: usize,
    d2: Vec<f32>,
    index: Vec<u32>,
}

impl Tops {
    fn new(m: usize, k: usize) -> Tops {
        Tops {
            k,
            d2: vec![f32::INFINITY; m * k],
            index: vec![u32::MAX; m * k],
        }
    }
    /// The k-th smallest distance^2 seen so far for `query` (infinite until k are seen).
    #[inline]
    fn worst(&self, query: usize) -> f32 {
        self.d2[query * self.k + self.k - 1]
    }

    #[inline(always)]
    fn offer(&mut self, query: usize, d2: f32, index: u32) {
        let base = query * self.k;
        let (d, ix) = (&mut self.d2[base..base + self.k], &mut self.index[base..base + self.k]);
        let k = d.len();
        if d2 >= d[k - 1] {
            return;
        }
        let mut pos = k - 1;
        while pos > 0 && d[pos - 1] > d2 {
            d[pos] = d[pos - 1];
            ix[pos] = ix[pos - 1];
            pos -= 1;
        }
        d[pos] = d2;
        ix[pos] = index;
    }
}

fn squared_norms(x: &[f32], dim: usize) -> Vec<f32> {
    x.chunks_exact(dim).map(|r| r.iter().map(|v| v * v).sum()).collect()
}

/// Points grouped by list: members of list `l` are `order[start[l]..start[l + 1]]`, packed
/// for the search kernel in `panels[l]`. `norms` are every point's squared norm, by point.
struct Lists {
    start: Vec<usize>,
    order: Vec<u32>,
    norms: Vec<f32>,
    centroids: Vec<f32>,
    panels: Vec<Panels>,
}

/// Nearest centroid of every row (by matrix product).
fn assign(x: &[f32], dim: usize, centroids: &[f32]) -> Vec<u32> {
    let centroid_norms = squared_norms(centroids, dim);
    let l = centroid_norms.len();
    x.par_chunks(QUERY_BLOCK * dim)
        .flat_map_iter(|block| {
            let rows = block.len() / dim;
            let mut dots = vec![0f32; rows * l];
            mul_abt(block, centroids, dim, &mut dots);
            (0..rows)
                .map(|r| {
                    // A plain `<` scan: a million rows times thousands of centroids, where
                    // `min_by(total_cmp)` cost a second. The first of equals wins, as before.
                    let row = &dots[r * l..(r + 1) * l];
                    let (mut best, mut best_at) = (f32::INFINITY, 0u32);
                    for (c, (&dot, &norm)) in row.iter().zip(&centroid_norms).enumerate() {
                        let partial = norm - 2.0 * dot;
                        if partial < best {
                            (best, best_at) = (partial, c as u32);
                        }
                    }
                    best_at
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The index's lists, kept so that a later (incremental) scan searches new points without
/// clustering again: the list centres and the list of every point.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct IvfIndex {
    /// `lists * dim` row-major.
    #[serde(with = "crate::codec::f32s")]
    pub centroids: Vec<f32>,
    /// List of every point, in the points' order.
    #[serde(with = "crate::codec::u32s")]
    pub assignment: Vec<u32>,
}

impl IvfIndex {
    /// Nearest list of every row of `x` (`dim` columns).
    pub fn assign(&self, x: &[f32], dim: usize) -> Vec<u32> {
        assign(x, dim, &self.centroids)
    }
}

/// k-means (Lloyd, a few rounds on a sample) for the list centroids; plain matrix products, since
/// thousands of centroids are far beyond what the clustering detectors' k-means is built for.
fn build_lists(x: &[f32], dim: usize, lists: usize, seed: u64, kernel: Kernel) -> Lists {
    let n = x.len() / dim;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut rows: Vec<usize> = (0..n).collect();
    rows.shuffle(&mut rng);
    let sample: Vec<f32> = rows[..n.min(lists * 40)]
        .iter()
        .flat_map(|&r| x[r * dim..(r + 1) * dim].iter().copied())
        .collect();
    let mut centroids: Vec<f32> = sample[..lists * dim].to_vec();
    for _ in 0..6 {
        let labels = assign(&sample, dim, &centroids);
        let mut sums = vec![0f64; lists * dim];
        let mut counts = vec![0usize; lists];
        for (row, &l) in sample.chunks_exact(dim).zip(&labels) {
            counts[l as usize] += 1;
            sums[l as usize * dim..(l as usize + 1) * dim]
                .iter_mut()
                .zip(row)
                .for_each(|(s, &v)| *s += v as f64);
        }
        for l in (0..lists).filter(|&l| counts[l] > 0) {
            for j in 0..dim {
                centroids[l * dim + j] = (sums[l * dim + j] / counts[l] as f64) as f32;
            }
        }
    }
    let labels = assign(x, dim, &centroids);
    group_lists(x, dim, centroids, &labels, kernel)
}

/// Groups the points by their list (`labels[i]` for point `i`).
fn group_lists(x: &[f32], dim: usize, centroids: Vec<f32>, labels: &[u32], kernel: Kernel) -> Lists {
    let n = x.len() / dim;
    let lists = centroids.len() / dim;
    let mut start = vec![0usize; lists + 1];
    labels.iter().for_each(|&l| start[l as usize + 1] += 1);
    for l in 0..lists {
        start[l + 1] += start[l];
    }
    let mut next = start.clone();
    let mut order = vec![0u32; n];
    for (i, &l) in labels.iter().enumerate() {
        order[next[l as usize]] = i as u32;
        next[l as usize] += 1;
    }
    let norms = squared_norms(x, dim);
    let panels = (0..lists)
        .into_par_iter()
        .map(|l| Panels::new(x, dim, &order[start[l]..start[l + 1]], &norms, kernel))
        .collect();
    Lists {
        start,
        order,
        norms,
        centroids,
        panels,
    }
}

/// Probe lists of each list: its `probes` nearest centroids (itself first).
fn probe_lists(centroids: &[f32], dim: usize, probes: usize) -> Vec<Vec<usize>> {
    let list_count = centroids.len() / dim;
    let centroid_norms = squared_norms(centroids, dim);
    let mut cdots = vec![0f32; list_count * list_count];
    mul_abt(centroids, centroids, dim, &mut cdots);
    (0..list_count)
        .map(|a| {
            let mut by: Vec<usize> = (0..list_count).collect();
            let d = |b: usize| centroid_norms[a] + centroid_norms[b] - 2.0 * cdots[a * list_count + b];
            by.sort_by(|&p, &q| d(p).total_cmp(&d(q)).then(p.cmp(&q)));
            by.truncate(probes.clamp(1, list_count));
            by
        })
        .collect()
}

/// The `k` neighbours of each of `queries` among the members of the lists `probes`.
fn search_lists(lists: &Lists, probes: &[usize], queries: &QueryTiles<'_>, k: usize, kernel: Kernel) -> Tops {
    let mut tops = Tops::new(queries.len(), k);
    for &b in probes {
        kernel.scan(queries, &lists.panels[b], &mut tops, 0);
    }
    tops
}

/// Writes the neighbours of the queries `ids` (in `tops` order) into rows `rows` of `out`.
fn store(out: &mut Neighbours, tops: &Tops, ids: &[u32], rows: impl Iterator<Item = usize>) {
    let k = out.k;
    for ((r, &i), row) in ids.iter().enumerate().zip(rows) {
        for j in 0..k {
            // A list too small to fill k slots (rare) leaves a slot empty: point it at itself
            // at infinite distance, so callers can skip it by distance.
            let (idx, d2) = if tops.index[r * k + j] == u32::MAX {
                (i, f32::INFINITY)
            } else {
                (tops.index[r * k + j], tops.d2[r * k + j])
            };
            out.index[row * k + j] = idx;
            out.distance[row * k + j] = d2.sqrt();
        }
    }
}

/// Approximate `k` nearest neighbours of every row of `x` (`n * dim`), Euclidean, excluding the
/// point itself, and the index that found them. `probes` lists are searched per list; exact when
/// `n` is small.
pub fn approximate(x: &[f32], dim: usize, k: usize, probes: usize, seed: u64) -> (Neighbours, IvfIndex) {
    let n = x.len() / dim;
    let k = k.min(n.saturating_sub(1)).max(1);
    let list_count = if n < EXACT_BELOW {
        1
    } else {
        ((n as f64).sqrt().round() as usize).clamp(1, 4096)
    };
    let kernel = Kernel::detect();
    let lists = build_lists(x, dim, list_count, seed, kernel);
    let probe_lists = probe_lists(&lists.centroids, dim, probes);
    let per_list: Vec<Tops> = (0..list_count)
        .into_par_iter()
        .map(|a| {
            let members = &lists.order[lists.start[a]..lists.start[a + 1]];
            let queries = QueryTiles::new(x, dim, members, &lists.norms, kernel);
            search_lists(&lists, &probe_lists[a], &queries, k, kernel)
        })
        .collect();
    let mut out = Neighbours {
        k,
        index: vec![0; n * k],
        distance: vec![0.0; n * k],
    };
    let mut assignment = vec![0u32; n];
    for (a, tops) in per_list.into_iter().enumerate() {
        let ids = &lists.order[lists.start[a]..lists.start[a + 1]];
        ids.iter().for_each(|&i| assignment[i as usize] = a as u32);
        store(&mut out, &tops, ids, ids.iter().map(|&i| i as usize));
    }
    let index = IvfIndex {
        centroids: lists.centroids,
        assignment,
    };
    (out, index)
}

/// Approximate `k` nearest neighbours of the points `queries` among all rows of `x`, with an
/// index whose `assignment` covers every row of `x`: an incremental scan's search for its new
/// records. Row `q` of the result belongs to `queries[q]`.
pub fn search(x: &[f32], dim: usize, k: usize, probes: usize, index: &IvfIndex, queries: &[usize]) -> Neighbours {
    let n = x.len() / dim;
    let k = k.min(n.saturating_sub(1)).max(1);
    let kernel = Kernel::detect();
    let lists = group_lists(x, dim, index.centroids.clone(), &index.assignment, kernel);
    let probe_lists = probe_lists(&lists.centroids, dim, probes);
    // Queries by list; each list's queries are searched as one block.
    let mut by_list: Vec<Vec<usize>> = vec![Vec::new(); lists.start.len() - 1];
    for (q, &i) in queries.iter().enumerate() {
        by_list[index.assignment[i] as usize].push(q);
    }
    let per_list: Vec<(Tops, Vec<u32>, Vec<usize>)> = by_list
        .into_par_iter()
        .enumerate()
        .filter(|(_, qs)| !qs.is_empty())
        .map(|(a, qs)| {
            let ids: Vec<u32> = qs.iter().map(|&q| queries[q] as u32).collect();
            let tiles = QueryTiles::new(x, dim, &ids, &lists.norms, kernel);
            let tops = search_lists(&lists, &probe_lists[a], &tiles, k, kernel);
            (tops, ids, qs)
        })
        .collect();
    let mut out = Neighbours {
        k,
        index: vec![0; queries.len() * k],
        distance: vec![0.0; queries.len() * k],
    };
    for (tops, ids, qs) in &per_list {
        store(&mut out, tops, ids, qs.iter().copied());
    }
    out
}

/// Exact `k` nearest neighbours of the rows `queries` of `x` (brute force), for measuring recall.
pub fn exact(x: &[f32], dim: usize, k: usize, queries: &[usize]) -> Neighbours {
    let n = x.len() / dim;
    let k = k.min(n.saturating_sub(1)).max(1);
    let kernel = Kernel::detect();
    let norms = squared_norms(x, dim);
    let ids: Vec<u32> = (0..n as u32).collect();
    // Candidates are packed a slice at a time, so measuring recall at 1M rows does not hold a
    // second copy of the vectors.
    const CANDIDATES_PER_PASS: usize = 8192;
    let tops: Vec<Tops> = queries
        .par_chunks(QUERY_BLOCK)
        .map(|block| {
            let qids: Vec<u32> = block.iter().map(|&i| i as u32).collect();
            let tiles = QueryTiles::new(x, dim, &qids, &norms, kernel);
            let mut tops = Tops::new(block.len(), k);
            for candidates in ids.chunks(CANDIDATES_PER_PASS) {
                kernel.scan(&tiles, &Panels::new(x, dim, candidates, &norms, kernel), &mut tops, 0);
            }
            tops
        })
        .collect();
    Neighbours {
        k,
        index: tops.iter().flat_map(|t| t.index.iter().copied()).collect(),
        distance: tops.iter().flat_map(|t| t.d2.iter().map(|d| d.sqrt())).collect(),
    }
}

/// Share of the exact neighbours of `queries` that the approximate search also found.
pub fn recall(approx: &Neighbours, exact: &Neighbours, queries: &[usize]) -> f64 {
    let mut hit = 0usize;
    for (q, &i) in queries.iter().enumerate() {
        let (found, _) = approx.of(i);
        let (truth, _) = exact.of(q);
        hit += truth.iter().filter(|t| found.contains(t)).count();
    }
    hit as f64 / (queries.len() * exact.k).max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points(n: usize, dim: usize) -> Vec<f32> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        use rand_distr::{Distribution, StandardNormal};
        (0..n * dim)
            .map(|i| {
                let v: f32 = StandardNormal.sample(&mut rng);
                // a few clusters so neighbours are meaningful
                v + ((i / dim) % 7) as f32 * 3.0
            })
            .collect()
    }

    #[test]
    fn small_inputs_are_searched_exactly() {
        let x = points(500, 4);
        let (approx, _) = approximate(&x, 4, 5, 4, 1);
        let queries: Vec<usize> = (0..500).collect();
        let exact = exact(&x, 4, 5, &queries);
        assert_eq!(recall(&approx, &exact, &queries), 1.0);
        let (idx, d) = approx.of(10);
        assert!(!idx.contains(&10), "a point is not its own neighbour");
        assert!(d.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn exact_search_matches_brute_force_distances() {
        // 203 points: candidate blocks end mid-chunk and mid-lane (the vectorized test's tails).
        let (n, dim, k) = (203, 5, 7);
        let x = points(n, dim);
        let queries: Vec<usize> = (0..n).collect();
        let found = exact(&x, dim, k, &queries);
        for i in 0..n {
            let mut truth: Vec<f32> = (0..n)
                .filter(|&j| j != i)
                .map(|j| {
                    (0..dim)
                        .map(|d| (x[i * dim + d] - x[j * dim + d]).powi(2))
                        .sum::<f32>()
                        .sqrt()
                })
                .collect();
            truth.sort_by(f32::total_cmp);
            for (got, want) in found.of(i).1.iter().zip(&truth[..k]) {
                assert!((got - want).abs() < 1e-3 * want.max(1.0), "point {i}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn index_search_finds_most_true_neighbours() {
        let x = points(20_000, 8);
        let (approx, index) = approximate(&x, 8, 10, 8, 1);
        let queries: Vec<usize> = (0..20_000).step_by(97).collect();
        let exact = exact(&x, 8, 10, &queries);
        let r = recall(&approx, &exact, &queries);
        assert!(r > 0.8, "recall {r}");
        // Searching only some points with the kept index finds what the full search found.
        let some = search(&x, 8, 10, 8, &index, &queries);
        for (q, &i) in queries.iter().enumerate() {
            assert_eq!(some.of(q).0, approx.of(i).0, "query {i}");
        }
    }
}
