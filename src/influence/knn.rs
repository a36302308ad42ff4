//! k nearest neighbours of every record, approximately, with an inverted-file index (IVF: Jégou,
//! Douze, Schmid 2011): cluster the points into ~sqrt(n) lists, then compare each point only
//! with the members of the `probes` lists whose centres are nearest to it, tile by tile in
//! registers (`tiles`).
//!
//! Probes are chosen per point, not per list (0.2.1 searched the same lists for every member of
//! a list): measured on 1M x 32 search coordinates, 8 probes per point found 94% of the true
//! neighbours, 16 per list 84-85% with twice the candidates, since a point near its cell's edge
//! needs the lists on its own side. The points' nearest centres come from the same kernel.
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

use tiles::{Kernel, Panels, QueryTiles};

/// Points per parallel task when finding nearest centres.
const QUERY_BLOCK: usize = 4096;
/// Queries per parallel task in exact search (a few hundred sampled records).
const EXACT_QUERY_BLOCK: usize = 256;
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
        let ids: Vec<u32> = (0..(x.len() / dim) as u32).collect();
        nearest_centres(x, dim, &ids, &self.centroids, 1, Kernel::detect())
    }
}

/// The `count` (at most the number of centres) nearest of `centroids` to each of the rows `ids`
/// of `x`, nearest first (`ids.len() * count`), by an exact `kernel`. The first is the row's list.
fn nearest_centres(x: &[f32], dim: usize, ids: &[u32], centroids: &[f32], count: usize, kernel: Kernel) -> Vec<u32> {
    let lists = centroids.len() / dim;
    assert!((1..=lists).contains(&count));
    debug_assert!(kernel.exact(), "lists are assigned by exact distances");
    let centre_ids: Vec<u32> = (0..lists as u32).collect();
    let origin = vec![0f32; dim];
    let panels = Panels::new(centroids, dim, &centre_ids, &origin, kernel);
    ids.par_chunks(QUERY_BLOCK)
        .flat_map_iter(|ids| {
            let tiles = QueryTiles::new(x, dim, ids, &origin, kernel).skipping_none();
            let mut tops = Tops::new(ids.len(), count);
            kernel.scan(&tiles, &panels, &mut tops);
            // A row whose squared norm overflows (an extreme outlier) has a NaN bound and admits
            // no centre: give it list 0 rather than an id that indexes nothing.
            for row in tops.index.chunks_exact_mut(count) {
                let first = row.iter().copied().find(|&l| l != u32::MAX).unwrap_or(0);
                row.iter_mut().filter(|l| **l == u32::MAX).for_each(|l| *l = first);
            }
            tops.index
        })
        .collect()
}

/// k-means (Lloyd, a few rounds on a sample) for the list centroids.
fn train_centroids(x: &[f32], dim: usize, lists: usize, seed: u64, kernel: Kernel) -> Vec<f32> {
    let n = x.len() / dim;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut rows: Vec<usize> = (0..n).collect();
    rows.shuffle(&mut rng);
    let sample: Vec<f32> = rows[..n.min(lists * 40)]
        .iter()
        .flat_map(|&r| x[r * dim..(r + 1) * dim].iter().copied())
        .collect();
    let sample_ids: Vec<u32> = (0..(sample.len() / dim) as u32).collect();
    let mut centroids: Vec<f32> = sample[..lists * dim].to_vec();
    for _ in 0..6 {
        let labels = nearest_centres(&sample, dim, &sample_ids, &centroids, 1, kernel);
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
    centroids
}

/// The members of every list, less the list's centre, packed for the search kernel (`panels[l]`,
/// in point order).
struct Lists {
    panels: Vec<Panels>,
    centroids: Vec<f32>,
}

impl Lists {
    /// Groups the points by their list (`labels[i]` for point `i`).
    fn new(x: &[f32], dim: usize, centroids: &[f32], labels: &[u32], kernel: Kernel) -> Lists {
        let n = x.len() / dim;
        let list_count = centroids.len() / dim;
        let mut start = vec![0usize; list_count + 1];
        labels.iter().for_each(|&l| start[l as usize + 1] += 1);
        for l in 0..list_count {
            start[l + 1] += start[l];
        }
        let mut next = start.clone();
        let mut order = vec![0u32; n];
        for (i, &l) in labels.iter().enumerate() {
            order[next[l as usize]] = i as u32;
            next[l as usize] += 1;
        }
        let panels = (0..list_count)
            .into_par_iter()
            .map(|l| {
                let centre = &centroids[l * dim..(l + 1) * dim];
                Panels::new(x, dim, &order[start[l]..start[l + 1]], centre, kernel)
            })
            .collect();
        Lists {
            panels,
            centroids: centroids.to_vec(),
        }
    }

    /// The `k` neighbours of the points `ids` of `x` (all members of list `own`), each among the
    /// members of its own probe lists (`probe_lists`, `probes` per point). Each list is scanned
    /// once, by the points that probe it, lists nearest to `own` first, with points and members
    /// less that list's centre; so a point's neighbours depend only on its own list and probes,
    /// not on which other points are searched with it (a full and an incremental scan agree, on
    /// the same kernel: FMA and the portable kernel round differently). An approximate kernel's
    /// candidates are re-ranked by exact distance.
    #[allow(clippy::too_many_arguments)]
    fn search(
        &self,
        x: &[f32],
        dim: usize,
        own: usize,
        ids: &[u32],
        probe_lists: &[u32],
        probes: usize,
        k: usize,
        kernel: Kernel,
    ) -> Tops {
        let mut by_list: Vec<(u32, usize)> = probe_lists
            .chunks_exact(probes)
            .enumerate()
            .flat_map(|(q, lists)| lists.iter().map(move |&l| (l, q)))
            .collect();
        by_list.sort_unstable();
        by_list.dedup();
        // Nearest lists first, so the top-k fill with near points early and the bound admits
        // few of the rest.
        let centre = |l: usize| &self.centroids[l * dim..(l + 1) * dim];
        let gap = |l: u32| -> f32 {
            centre(own)
                .iter()
                .zip(centre(l as usize))
                .map(|(a, b)| (a - b) * (a - b))
                .sum()
        };
        let mut groups: Vec<&[(u32, usize)]> = by_list.chunk_by(|a, b| a.0 == b.0).collect();
        groups.sort_by(|a, b| gap(a[0].0).total_cmp(&gap(b[0].0)).then(a[0].0.cmp(&b[0].0)));
        // An approximate kernel keeps k for the re-ranking, not more: measured at 1M x 32,
        // keeping 10 found 0.9365 of the true neighbours (f32: 0.939), keeping 12 or 20 found
        // 0.939, but the wider top-k's insertions cost most of what bf16 saves (kNN 5.9 s with
        // 10, 6.3-6.9 s with 12, 7.3 s with 20; the f32 kernel 6.6-7.1 s, back to back).
        let mut tops = Tops::new(ids.len(), k);
        // The points' rows, gathered once: they lie scattered over `x`, and packing each probe's
        // tiles straight from there fetched every row from memory once per probe (16% of the
        // search's time at 1M).
        let rows: Vec<f32> = ids
            .iter()
            .flat_map(|&i| x[i as usize * dim..(i as usize + 1) * dim].iter().copied())
            .collect();
        for group in groups {
            let list = group[0].0 as usize;
            let queries: Vec<usize> = group.iter().map(|&(_, q)| q).collect();
            let in_rows: Vec<u32> = queries.iter().map(|&q| q as u32).collect();
            let tiles = QueryTiles::new(&rows, dim, &in_rows, centre(list), kernel)
                .identified_as(queries.iter().map(|&q| ids[q]).collect())
                .into_slots(queries);
            kernel.scan(&tiles, &self.panels[list], &mut tops);
        }
        if kernel.exact() {
            tops
        } else {
            rerank(x, dim, ids, &tops)
        }
    }
}

/// Each query's candidates in `approx` by exact distance (f32 differences), nearest first (the
/// approximate order may swap near ties); query `q` is `ids[q]`.
fn rerank(x: &[f32], dim: usize, ids: &[u32], approx: &Tops) -> Tops {
    let mut out = Tops::new(ids.len(), approx.k);
    for (q, &i) in ids.iter().enumerate() {
        let point = &x[i as usize * dim..(i as usize + 1) * dim];
        for &c in approx.index[q * approx.k..(q + 1) * approx.k]
            .iter()
            .filter(|&&c| c != u32::MAX)
        {
            let other = &x[c as usize * dim..(c as usize + 1) * dim];
            let d2 = point.iter().zip(other).map(|(a, b)| (a - b) * (a - b)).sum();
            out.offer(q, d2, c);
        }
    }
    out
}

/// The neighbours of query `r` of `tops` (point `i`) as a result row: ids and distances.
/// Probed lists holding fewer than k other points (rare) leave a slot empty: it points at the
/// query itself at infinite distance, so callers can skip it by distance.
fn store_row(tops: &Tops, r: usize, i: u32, index: &mut [u32], distance: &mut [f32]) {
    let k = tops.k;
    for j in 0..k {
        let (idx, d2) = match tops.index[r * k + j] {
            u32::MAX => (i, f32::INFINITY),
            found => (found, tops.d2[r * k + j]),
        };
        index[j] = idx;
        distance[j] = d2.sqrt();
    }
}

/// The neighbours of the points `queries` (row `q` of the result for `queries[q]`), whose
/// `probes` nearest lists are `nearest[q * probes..]`, searched by their list in `index`:
/// points of one list share most of their probe lists, so their tiles fill.
#[allow(clippy::too_many_arguments)]
fn search_by_list(
    x: &[f32],
    dim: usize,
    lists: &Lists,
    index: &IvfIndex,
    queries: &[u32],
    nearest: &[u32],
    probes: usize,
    k: usize,
    kernel: Kernel,
) -> Neighbours {
    let mut by_list: Vec<Vec<usize>> = vec![Vec::new(); lists.panels.len()];
    for (q, &i) in queries.iter().enumerate() {
        by_list[index.assignment[i as usize] as usize].push(q);
    }
    let per_list: Vec<(Tops, Vec<u32>, Vec<usize>)> = by_list
        .into_par_iter()
        .enumerate()
        .filter(|(_, qs)| !qs.is_empty())
        .map(|(own, qs)| {
            let ids: Vec<u32> = qs.iter().map(|&q| queries[q]).collect();
            let probe_lists: Vec<u32> = qs
                .iter()
                .flat_map(|&q| nearest[q * probes..(q + 1) * probes].iter().copied())
                .collect();
            let tops = lists.search(x, dim, own, &ids, &probe_lists, probes, k, kernel);
            (tops, ids, qs)
        })
        .collect();
    // Where each query's row is: (which list's result, row in it).
    let mut found_at = vec![(0u32, 0u32); queries.len()];
    for (l, (_, _, qs)) in per_list.iter().enumerate() {
        qs.iter()
            .enumerate()
            .for_each(|(r, &q)| found_at[q] = (l as u32, r as u32));
    }
    let mut out = Neighbours {
        k,
        index: vec![0; queries.len() * k],
        distance: vec![0.0; queries.len() * k],
    };
    out.index
        .par_chunks_mut(k)
        .zip(out.distance.par_chunks_mut(k))
        .zip(found_at.par_iter())
        .for_each(|((index, distance), &(l, r))| {
            let (tops, ids, _) = &per_list[l as usize];
            store_row(tops, r as usize, ids[r as usize], index, distance);
        });
    out
}

/// The kernel that searches `list_count` lists: the fastest, unless there is one list (a small
/// input, searched exactly), where centring on the only centre does not make the values small
/// next to the neighbours' distances, which the bf16 kernel's precision needs.
fn list_search_kernel(list_count: usize) -> Kernel {
    if list_count == 1 {
        Kernel::detect()
    } else {
        Kernel::detect_approximate()
    }
}

/// Approximate `k` nearest neighbours of every row of `x` (`n * dim`), Euclidean, excluding the
/// point itself, and the index that found them. Each point searches its `probes` nearest lists;
/// exact when `n` is small.
pub fn approximate(x: &[f32], dim: usize, k: usize, probes: usize, seed: u64) -> (Neighbours, IvfIndex) {
    approximate_with(x, dim, k, probes, seed, list_search_kernel)
}

/// [`approximate`], with the lists searched by `kernel_for(list_count)`.
fn approximate_with(
    x: &[f32],
    dim: usize,
    k: usize,
    probes: usize,
    seed: u64,
    kernel_for: impl Fn(usize) -> Kernel,
) -> (Neighbours, IvfIndex) {
    let n = x.len() / dim;
    let k = k.min(n.saturating_sub(1)).max(1);
    let list_count = if n < EXACT_BELOW {
        1
    } else {
        ((n as f64).sqrt().round() as usize).clamp(1, 4096)
    };
    let probes = probes.clamp(1, list_count);
    let kernel = Kernel::detect();
    let centroids = train_centroids(x, dim, list_count, seed, kernel);
    let all: Vec<u32> = (0..n as u32).collect();
    let nearest = nearest_centres(x, dim, &all, &centroids, probes, kernel);
    let index = IvfIndex {
        assignment: nearest.iter().step_by(probes).copied().collect(),
        centroids,
    };
    let search_kernel = kernel_for(list_count);
    let lists = Lists::new(x, dim, &index.centroids, &index.assignment, search_kernel);
    let neighbours = search_by_list(x, dim, &lists, &index, &all, &nearest, probes, k, search_kernel);
    (neighbours, index)
}

/// Approximate `k` nearest neighbours of the points `queries` among all rows of `x`, with an
/// index whose `assignment` covers every row of `x`: an incremental scan's search for its new
/// records. Row `q` of the result belongs to `queries[q]`; a point gets the same neighbours as
/// in [`approximate`] with the same index.
pub fn search(x: &[f32], dim: usize, k: usize, probes: usize, index: &IvfIndex, queries: &[usize]) -> Neighbours {
    let n = x.len() / dim;
    let k = k.min(n.saturating_sub(1)).max(1);
    let probes = probes.clamp(1, index.centroids.len() / dim);
    let queries: Vec<u32> = queries.iter().map(|&q| q as u32).collect();
    let nearest = nearest_centres(x, dim, &queries, &index.centroids, probes, Kernel::detect());
    let search_kernel = list_search_kernel(index.centroids.len() / dim);
    let lists = Lists::new(x, dim, &index.centroids, &index.assignment, search_kernel);
    search_by_list(x, dim, &lists, index, &queries, &nearest, probes, k, search_kernel)
}

/// Exact `k` nearest neighbours of the rows `queries` of `x` (brute force), for measuring recall.
pub fn exact(x: &[f32], dim: usize, k: usize, queries: &[usize]) -> Neighbours {
    let n = x.len() / dim;
    let ids: Vec<u32> = (0..n as u32).collect();
    exact_among(x, dim, k.min(n.saturating_sub(1)), queries, &ids)
}

/// Exact `k` nearest neighbours of the rows `queries` of `x` among the rows `candidates` (brute
/// force, at least one). A query with fewer than `k` candidates gets `u32::MAX` at infinite
/// distance in the rest of its row.
pub fn exact_among(x: &[f32], dim: usize, k: usize, queries: &[usize], candidates: &[u32]) -> Neighbours {
    let k = k.min(candidates.len()).max(1);
    let kernel = Kernel::detect();
    let origin = vec![0f32; dim];
    // Candidates are packed a slice at a time, so measuring recall at 1M rows does not hold a
    // second copy of the vectors.
    const CANDIDATES_PER_PASS: usize = 8192;
    let tops: Vec<Tops> = queries
        .par_chunks(EXACT_QUERY_BLOCK)
        .map(|block| {
            let qids: Vec<u32> = block.iter().map(|&i| i as u32).collect();
            let tiles = QueryTiles::new(x, dim, &qids, &origin, kernel);
            // Slices of candidates in parallel too (the few hundred sampled queries are one
            // block), merged in candidate order: the top-k of one pass over them all.
            let parts: Vec<Tops> = candidates
                .par_chunks(CANDIDATES_PER_PASS)
                .map(|slice| {
                    let mut tops = Tops::new(block.len(), k);
                    kernel.scan(&tiles, &Panels::new(x, dim, slice, &origin, kernel), &mut tops);
                    tops
                })
                .collect();
            let mut tops = Tops::new(block.len(), k);
            for part in &parts {
                for j in (0..block.len() * k).filter(|&j| part.index[j] != u32::MAX) {
                    tops.offer(j / k, part.d2[j], part.index[j]);
                }
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
    fn a_point_whose_squared_norm_overflows_does_not_break_the_index() {
        // 1e20^2 overflows f32: that point's bound is NaN and it admits no list centre.
        let (n, dim) = (5000, 4);
        let mut x = points(n, dim);
        x[17 * dim..18 * dim].fill(1e20);
        let (found, index) = approximate(&x, dim, 5, 4, 1);
        assert!(
            index
                .assignment
                .iter()
                .all(|&l| (l as usize) < index.centroids.len() / dim)
        );
        let queries: Vec<usize> = (0..n).step_by(50).filter(|&q| q != 17).collect();
        let truth = exact(&x, dim, 5, &queries);
        assert!(recall(&found, &truth, &queries) > 0.8);
    }

    /// The bf16 list search re-ranks its candidates: it finds as many true neighbours as the
    /// exact kernels (to a point of recall) and reports their exact distances.
    #[test]
    fn every_list_search_kernel_finds_the_same_neighbours() {
        let (n, dim, k) = (20_000, 8, 10);
        let x = points(n, dim);
        let queries: Vec<usize> = (0..n).step_by(53).collect();
        let truth = exact(&x, dim, k, &queries);
        let recall_of = |kernel: Kernel| {
            let (found, _) = approximate_with(&x, dim, k, 8, 1, |_| kernel);
            for &i in &queries {
                let (idx, d) = found.of(i);
                for (&j, &dist) in idx.iter().zip(d) {
                    let want: f32 = (0..dim)
                        .map(|c| (x[i * dim + c] - x[j as usize * dim + c]).powi(2))
                        .sum::<f32>()
                        .sqrt();
                    assert!(
                        (dist - want).abs() <= 1e-3 * want.max(1.0),
                        "{kernel:?}: {dist} vs {want}"
                    );
                }
            }
            recall(&found, &truth, &queries)
        };
        let exact_recall = recall_of(Kernel::detect());
        for kernel in Kernel::available() {
            let r = recall_of(kernel);
            assert!(
                r >= exact_recall - 0.01,
                "{kernel:?}: recall {r} against {exact_recall}"
            );
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
