//! k nearest neighbours of every record, approximately, with an inverted-file index (IVF: Jégou,
//! Douze, Schmid 2011): cluster the points into ~sqrt(n) lists, then compare each list's points
//! only with the points of its `probes` nearest lists, as dense matrix products.
//!
//! Why not HNSW (hnsw_rs, instant-distance): building a graph over 1M points is pointer-chasing
//! work that keeps 2 cores busy for minutes, while IVF turns the search into block matrix
//! products on reduced dimensions, which is the arithmetic floor here anyway. Its recall is
//! measured against exact search on a sample every run and reported.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;

use crate::detect::linalg::mul_abt;

/// Queries compared per matrix product (bounds the distance block to QUERY_BLOCK * list size).
const QUERY_BLOCK: usize = 256;
/// Below this many points the search is exact (one list holding everything).
const EXACT_BELOW: usize = 4096;
/// Candidates tested together before any is tested alone (see `offer_rows`); at most 32 (a
/// `u32` mask).
const SCAN_CHUNK: usize = 32;

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

/// Rows of vectors with their global ids and squared norms (queries or candidates).
#[derive(Clone, Copy)]
struct Block<'a> {
    vectors: &'a [f32],
    ids: &'a [u32],
    norms: &'a [f32],
}

impl<'a> Block<'a> {
    fn rows(&self, a: usize, b: usize, dim: usize) -> Block<'a> {
        Block {
            vectors: &self.vectors[a * dim..b * dim],
            ids: &self.ids[a..b],
            norms: &self.norms[a..b],
        }
    }
}

/// Bit `j` set where candidate `j` of a chunk (at most 32) has `cn - 2 dot` (distance^2 less
/// the query's norm) below `bound`. Branch-free, so it compiles to packed compares and mask
/// moves; the caller then visits only the set bits.
#[inline(always)]
fn below_mask(dots: &[f32], norms: &[f32], bound: f32) -> u32 {
    let mut mask = 0u32;
    for (j, (&d, &c)) in dots.iter().zip(norms).enumerate() {
        mask |= ((c - 2.0 * d < bound) as u32) << j;
    }
    mask
}

/// Offers every candidate to the top-k of every query, skipping a query's own id.
/// Query `r` of `queries` is query `first + r` of `tops`.
fn scan_block(
    queries: Block<'_>,
    candidates: Block<'_>,
    dim: usize,
    tops: &mut Tops,
    first: usize,
    dots: &mut Vec<f32>,
) {
    let (q, c) = (queries.ids.len(), candidates.ids.len());
    if c == 0 {
        return;
    }
    dots.resize(q * c, 0.0);
    mul_abt(queries.vectors, candidates.vectors, dim, &mut dots[..q * c]);
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        unsafe { offer_rows_avx2(&dots[..q * c], queries, candidates, tops, first) };
        return;
    }
    offer_rows(&dots[..q * c], queries, candidates, tops, first, below_mask);
}

/// `offer_rows` with the AVX2 chunk test (the binary targets baseline x86-64, which has no AVX).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn offer_rows_avx2(dots: &[f32], queries: Block<'_>, candidates: Block<'_>, tops: &mut Tops, first: usize) {
    offer_rows(dots, queries, candidates, tops, first, |d, c, bound| {
        if d.len() == SCAN_CHUNK {
            // The closure inherits this function's target features: no `unsafe` needed.
            below_mask_avx2(d, c, bound)
        } else {
            below_mask(d, c, bound)
        }
    });
}

/// [`below_mask`] of a whole chunk of 32 with AVX2: four 8-lane compares and mask moves.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn below_mask_avx2(dots: &[f32], norms: &[f32], bound: f32) -> u32 {
    use std::arch::x86_64::*;
    assert!(dots.len() == 32 && norms.len() == 32);
    let bounds = _mm256_set1_ps(bound);
    let minus_two = _mm256_set1_ps(-2.0);
    let mut mask = 0u32;
    for lane in 0..4 {
        // SAFETY: lanes 8 * lane .. 8 * lane + 8 lie inside both 32-long slices (asserted).
        let (d, c) = unsafe {
            (
                _mm256_loadu_ps(dots.as_ptr().add(8 * lane)),
                _mm256_loadu_ps(norms.as_ptr().add(8 * lane)),
            )
        };
        // c - 2 d: 2 d is exact, so the fused form rounds exactly as the scalar test does.
        let partial = _mm256_fmadd_ps(d, minus_two, c);
        let below = _mm256_cmp_ps::<_CMP_LT_OQ>(partial, bounds);
        mask |= (_mm256_movemask_ps(below) as u32) << (8 * lane);
    }
    mask
}

/// Offers the candidates of each query's row of `dots` (`queries x candidates` dot products).
///
/// Almost every candidate is farther than the query's current k-th neighbour, so each chunk of
/// candidates is first tested as a whole by `below` (a bit mask of those nearer than the k-th,
/// branch-free and vectorized), and only its set bits are visited. Measured at 1M x 32: testing
/// candidates one by one took longer than the matrix products.
#[inline(always)]
fn offer_rows(
    dots: &[f32],
    queries: Block<'_>,
    candidates: Block<'_>,
    tops: &mut Tops,
    first: usize,
    below: impl Fn(&[f32], &[f32], f32) -> u32,
) {
    let c = candidates.ids.len();
    for (r, row) in dots.chunks_exact(c).enumerate() {
        let (query, norm) = (first + r, queries.norms[r]);
        let mut bound = tops.worst(query) - norm;
        let mut start = 0;
        for (dots, cns) in row.chunks(SCAN_CHUNK).zip(candidates.norms.chunks(SCAN_CHUNK)) {
            let mut mask = below(dots, cns, bound);
            while mask != 0 {
                let j = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                // The bound tightens as neighbours are offered: test again.
                let partial = cns[j] - 2.0 * dots[j];
                let id = candidates.ids[start + j];
                if partial < bound && id != queries.ids[r] {
                    tops.offer(query, (partial + norm).max(0.0), id);
                    bound = tops.worst(query) - norm;
                }
            }
            start += dots.len();
        }
    }
}

/// Points grouped by list: members of list `l` are `order[start[l]..start[l + 1]]`, their
/// vectors stored contiguously in `vectors` in the same order.
struct Lists {
    start: Vec<usize>,
    order: Vec<u32>,
    vectors: Vec<f32>,
    norms: Vec<f32>,
    centroids: Vec<f32>,
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
fn build_lists(x: &[f32], dim: usize, lists: usize, seed: u64) -> Lists {
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
    group_lists(x, dim, centroids, &labels)
}

/// Groups the points by their list (`labels[i]` for point `i`).
fn group_lists(x: &[f32], dim: usize, centroids: Vec<f32>, labels: &[u32]) -> Lists {
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
    let vectors: Vec<f32> = order
        .iter()
        .flat_map(|&i| x[i as usize * dim..(i as usize + 1) * dim].iter().copied())
        .collect();
    let norms = squared_norms(&vectors, dim);
    Lists {
        start,
        order,
        vectors,
        norms,
        centroids,
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

/// The `k` neighbours of each row of `queries` among the members of the lists `probes`.
fn search_lists(lists: &Lists, probes: &[usize], queries: Block<'_>, dim: usize, k: usize) -> Tops {
    let m = queries.ids.len();
    let mut tops = Tops::new(m, k);
    let mut dots = Vec::new();
    let all = Block {
        vectors: &lists.vectors,
        ids: &lists.order,
        norms: &lists.norms,
    };
    for q0 in (0..m).step_by(QUERY_BLOCK) {
        let q1 = (q0 + QUERY_BLOCK).min(m);
        for &b in probes {
            let candidates = all.rows(lists.start[b], lists.start[b + 1], dim);
            scan_block(queries.rows(q0, q1, dim), candidates, dim, &mut tops, q0, &mut dots);
        }
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
    let lists = build_lists(x, dim, list_count, seed);
    let probe_lists = probe_lists(&lists.centroids, dim, probes);
    let per_list: Vec<Tops> = (0..list_count)
        .into_par_iter()
        .map(|a| {
            let all = Block {
                vectors: &lists.vectors,
                ids: &lists.order,
                norms: &lists.norms,
            };
            let members = all.rows(lists.start[a], lists.start[a + 1], dim);
            search_lists(&lists, &probe_lists[a], members, dim, k)
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
    let lists = group_lists(x, dim, index.centroids.clone(), &index.assignment);
    let probe_lists = probe_lists(&lists.centroids, dim, probes);
    // Queries by list; each list's queries are searched as one block of list-ordered rows.
    let mut slot = vec![usize::MAX; n];
    lists.order.iter().enumerate().for_each(|(s, &i)| slot[i as usize] = s);
    let mut by_list: Vec<Vec<usize>> = vec![Vec::new(); lists.start.len() - 1];
    for (q, &i) in queries.iter().enumerate() {
        by_list[index.assignment[i] as usize].push(q);
    }
    let per_list: Vec<(Tops, Vec<u32>, Vec<usize>)> = by_list
        .into_par_iter()
        .enumerate()
        .filter(|(_, qs)| !qs.is_empty())
        .map(|(a, qs)| {
            // This list's queries, gathered into a block of their own.
            let ids: Vec<u32> = qs.iter().map(|&q| queries[q] as u32).collect();
            let vectors: Vec<f32> = ids
                .iter()
                .flat_map(|&i| {
                    let s = slot[i as usize];
                    lists.vectors[s * dim..(s + 1) * dim].iter().copied()
                })
                .collect();
            let norms: Vec<f32> = ids.iter().map(|&i| lists.norms[slot[i as usize]]).collect();
            let block = Block {
                vectors: &vectors,
                ids: &ids,
                norms: &norms,
            };
            let tops = search_lists(&lists, &probe_lists[a], block, dim, k);
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
    let norms = squared_norms(x, dim);
    let ids: Vec<u32> = (0..n as u32).collect();
    let tops: Vec<Tops> = queries
        .par_chunks(QUERY_BLOCK)
        .map(|block| {
            let q: Vec<f32> = block
                .iter()
                .flat_map(|&i| x[i * dim..(i + 1) * dim].iter().copied())
                .collect();
            let qids: Vec<u32> = block.iter().map(|&i| i as u32).collect();
            let qn: Vec<f32> = block.iter().map(|&i| norms[i]).collect();
            let mut tops = Tops::new(block.len(), k);
            let mut dots = Vec::new();
            let queries = Block {
                vectors: &q,
                ids: &qids,
                norms: &qn,
            };
            let all = Block {
                vectors: x,
                ids: &ids,
                norms: &norms,
            };
            let step = 8192;
            for c0 in (0..n).step_by(step) {
                scan_block(
                    queries,
                    all.rows(c0, (c0 + step).min(n), dim),
                    dim,
                    &mut tops,
                    0,
                    &mut dots,
                );
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
    #[cfg(target_arch = "x86_64")]
    fn vector_chunk_test_agrees_with_the_portable_one() {
        if !(std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")) {
            return;
        }
        let v = points(64, 1);
        for bound in [-30.0f32, -1.0, 0.0, 2.5, 40.0] {
            let (dots, norms) = (&v[..32], &v[32..]);
            // SAFETY: AVX2 and FMA checked above.
            let fast = unsafe { below_mask_avx2(dots, norms, bound) };
            assert_eq!(fast, below_mask(dots, norms, bound), "bound {bound}");
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
