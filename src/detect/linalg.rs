//! Dense linear algebra on class matrices; the only file that imports faer.
//!
//! Statistics are mergeable co-moments (Chan, Golub, LeVeque 1979): each chunk of rows is centred
//! on its own mean, and chunks merge exactly. The same code would build them from row groups on
//! different machines. Storage is f32, accumulation f64.

use faer::linalg::matmul::matmul;
use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::{Accum, Mat, MatMut, MatRef, Par, Side};
use rayon::prelude::*;

/// Rows per chunk: large enough for an efficient matmul, small enough to stay in cache-sized buffers.
const CHUNK_ROWS: usize = 4096;

/// Count, mean and co-moment matrix (sum of centred outer products) of a set of rows.
#[derive(Clone, Debug)]
pub struct Moments {
    pub n: usize,
    pub dim: usize,
    pub mean: Vec<f64>,
    /// `dim * dim`, row-major, symmetric.
    pub comoment: Vec<f64>,
}

impl Moments {
    pub fn empty(dim: usize) -> Moments {
        Moments {
            n: 0,
            dim,
            mean: vec![0.0; dim],
            comoment: vec![0.0; dim * dim],
        }
    }

    /// Moments of row-major `x` (`x.len() / dim` rows), chunk by chunk: as many chunks at a time
    /// as there are threads, merged in row order, so the result does not depend on the thread
    /// count (at 2048 dimensions one chunk is 0.4 s of products).
    pub fn from_rows(x: &[f32], dim: usize) -> Moments {
        let mut total = Moments::empty(dim);
        let wave = rayon::current_num_threads().max(1);
        // Scratch (centred rows, product) per place in the wave, reused by every wave: fresh
        // pages for each chunk cost page faults on every chunk.
        let mut scratch: Vec<(Vec<f32>, Mat<f32>)> = (0..wave).map(|_| (Vec::new(), Mat::new())).collect();
        for rows in x.chunks(CHUNK_ROWS * dim * wave) {
            let parts: Vec<Moments> = rows
                .par_chunks(CHUNK_ROWS * dim)
                .zip(scratch.par_iter_mut())
                .map(|(chunk, (centred, gram))| Moments::of_chunk(chunk, dim, centred, gram))
                .collect();
            parts.iter().for_each(|part| total.merge(part));
        }
        total
    }

    /// Moments of one chunk of rows, centred on its own mean (`centred`, `gram`: scratch space).
    fn of_chunk(chunk: &[f32], dim: usize, centred: &mut Vec<f32>, gram: &mut Mat<f32>) -> Moments {
        let rows = chunk.len() / dim;
        let mean = column_means(chunk, dim);
        centred.resize(rows * dim, 0.0);
        for (out, row) in centred.chunks_exact_mut(dim).zip(chunk.chunks_exact(dim)) {
            for j in 0..dim {
                out[j] = (row[j] as f64 - mean[j]) as f32;
            }
        }
        let c = MatRef::from_row_major_slice(&centred[..rows * dim], rows, dim);
        gram.resize_with(dim, dim, |_, _| 0.0);
        // The product is symmetric: its lower triangle is half the multiply-adds.
        triangular::matmul(
            gram.as_mut(),
            BlockStructure::TriangularLower,
            Accum::Replace,
            c.transpose(),
            BlockStructure::Rectangular,
            c,
            BlockStructure::Rectangular,
            1.0f32,
            Par::Seq,
        );
        let comoment = mirrored_lower(dim, |i, j| gram[(i, j)] as f64);
        clear_avx_state();
        Moments {
            n: rows,
            dim,
            mean,
            comoment,
        }
    }

    /// Adds `other` (Chan et al.'s pairwise update).
    pub fn merge(&mut self, other: &Moments) {
        if other.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = other.clone();
            return;
        }
        let (na, nb) = (self.n as f64, other.n as f64);
        let n = na + nb;
        let delta: Vec<f64> = other.mean.iter().zip(&self.mean).map(|(b, a)| b - a).collect();
        let w = na * nb / n;
        let d = self.dim;
        for i in 0..d {
            for j in 0..d {
                self.comoment[i * d + j] += other.comoment[i * d + j] + delta[i] * delta[j] * w;
            }
        }
        self.mean.iter_mut().zip(&delta).for_each(|(m, dl)| *m += dl * nb / n);
        self.n += other.n;
    }

    /// Sample covariance (divides by n - 1).
    pub fn covariance(&self) -> Vec<f64> {
        let denom = (self.n.max(2) - 1) as f64;
        self.comoment.iter().map(|c| c / denom).collect()
    }
}

/// Mean of each column of row-major `x`.
fn column_means(x: &[f32], dim: usize) -> Vec<f64> {
    let mut mean = vec![0f64; dim];
    for row in x.chunks_exact(dim) {
        mean.iter_mut().zip(row).for_each(|(m, &v)| *m += v as f64);
    }
    let rows = (x.len() / dim.max(1)).max(1) as f64;
    mean.iter_mut().for_each(|m| *m /= rows);
    mean
}

/// The symmetric `n * n` row-major matrix whose lower triangle (j <= i) is `lower(i, j)`: a
/// symmetric product is computed on its lower triangle only, half the multiply-adds.
fn mirrored_lower(n: usize, lower: impl Fn(usize, usize) -> f64) -> Vec<f64> {
    let mut sym = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let v = lower(i, j);
            sym[i * n + j] = v;
            sym[j * n + i] = v;
        }
    }
    sym
}

/// A class's principal components: what [`crate::detect::BasisFit`] keeps.
pub struct Principal {
    pub mean: Vec<f64>,
    /// The covariance's trace.
    pub trace: f64,
    /// The `k` largest eigenvalues of the covariance, descending...
    pub eigenvalues: Vec<f64>,
    /// ...and their eigenvectors, `k * dim` row-major.
    pub components: Vec<f64>,
}

/// The top `k` principal components of row-major `x` from its co-moments (mergeable across row
/// groups): the covariance's leading eigenpairs ([`top_eigh_desc`]) and its trace.
pub fn principal_by_moments(x: &[f32], dim: usize, k: usize) -> Principal {
    let moments = Moments::from_rows(x, dim);
    let covariance = moments.covariance();
    let trace = (0..dim).map(|j| covariance[j * dim + j]).sum();
    let (eigenvalues, components) = top_eigh_desc(&covariance, dim, k);
    Principal {
        mean: moments.mean,
        trace,
        eigenvalues,
        components,
    }
}

/// The top `k` (at most n - 1) principal components of row-major `x` when it has fewer rows
/// than dimensions, from the rows' Gram matrix: the centred rows C (n x dim) give C C^T (n x n)
/// the same nonzero eigenvalues as C^T C, and each eigenvector u of it gives C^T u / sqrt(lambda)
/// of the covariance. The co-moment route costs n dim^2 and an eigensolver on dim x dim; this one
/// n^2 dim and one on n x n (a class of 100 records at 2048 dimensions: 31 s of subspace
/// iteration for 100 such classes before). A streaming scan would keep such a class's rows
/// instead of its co-moments, which would be the larger. `None` when fewer than 3 rows, or where
/// a wanted eigenvalue is (numerically) zero, the rows spanning fewer directions than asked (as
/// copies of a few rows do): then the co-moment route picks the directions.
pub fn principal_by_gram(x: &[f32], dim: usize, k: usize) -> Option<Principal> {
    by_gram(x, dim, k, false)
}

/// Every direction `x`'s centred rows span (at most n - 1), from their Gram matrix as
/// [`principal_by_gram`] finds them, but copies and other rank deficiency only drop the
/// directions they leave without spread instead of giving `None` (still `None` under 3 rows or
/// with no spread at all). For whitening a class with fewer records than dimensions, which
/// needs the span, not a set number of directions.
pub fn span_by_gram(x: &[f32], dim: usize) -> Option<Principal> {
    by_gram(x, dim, (x.len() / dim.max(1)).saturating_sub(1), true)
}

/// [`principal_by_gram`]; `whole_span`: [`span_by_gram`].
fn by_gram(x: &[f32], dim: usize, k: usize, whole_span: bool) -> Option<Principal> {
    if dim == 0 || x.len() / dim < 3 {
        return None;
    }
    let n = x.len() / dim;
    let mean = column_means(x, dim);
    let centred = Mat::<f64>::from_fn(n, dim, |i, j| x[i * dim + j] as f64 - mean[j]);
    let mut gram = Mat::<f64>::zeros(n, n);
    triangular::matmul(
        gram.as_mut(),
        BlockStructure::TriangularLower,
        Accum::Replace,
        centred.as_ref(),
        BlockStructure::Rectangular,
        centred.transpose(),
        BlockStructure::Rectangular,
        1.0,
        Par::Seq,
    );
    let sym = mirrored_lower(n, |i, j| gram[(i, j)]);
    let denom = (n - 1) as f64;
    let trace = (0..n).map(|i| sym[i * n + i]).sum::<f64>() / denom;
    // Centred, the rows span at most n - 1 directions.
    let (mut values, vectors) = top_eigh_desc(&sym, n, k.min(n - 1));
    let largest = values.first().copied().unwrap_or(0.0);
    let spread = |v: f64| v > largest * 1e-12 && v > 0.0;
    if whole_span {
        // Descending: the directions with spread come first.
        values.truncate(values.iter().take_while(|&&v| spread(v)).count());
        if values.is_empty() {
            return None;
        }
    } else if !values.iter().all(|&v| spread(v)) {
        return None;
    }
    // Row j of U^T C, divided by sqrt(lambda_j).
    let weights = Mat::<f64>::from_fn(values.len(), n, |j, i| vectors[j * n + i] / values[j].sqrt());
    let mut directions = Mat::<f64>::zeros(values.len(), dim);
    matmul(
        directions.as_mut(),
        Accum::Replace,
        weights.as_ref(),
        centred.as_ref(),
        1.0,
        Par::Seq,
    );
    let components = (0..values.len() * dim)
        .map(|i| directions[(i / dim, i % dim)])
        .collect();
    clear_avx_state();
    Some(Principal {
        mean,
        trace,
        eigenvalues: values.iter().map(|v| v / denom).collect(),
        components,
    })
}

/// Eigen-decomposition of a symmetric `dim * dim` matrix: (eigenvalues descending, eigenvectors as
/// rows of a `dim * dim` row-major matrix, in the same order).
pub fn eigh_desc(sym: &[f64], dim: usize) -> (Vec<f64>, Vec<f64>) {
    let a = MatRef::from_row_major_slice(sym, dim, dim);
    let result = match a.self_adjoint_eigen(Side::Lower) {
        Ok(evd) => {
            let (u, s) = (evd.U(), evd.S());
            let mut values = Vec::with_capacity(dim);
            let mut vectors = Vec::with_capacity(dim * dim);
            for k in (0..dim).rev() {
                values.push(s[k]);
                vectors.extend((0..dim).map(|i| u[(i, k)]));
            }
            (values, vectors)
        }
        // Only non-finite input fails; the reader rejects NaN/Inf, so this is a degenerate matrix.
        Err(_) => (vec![0.0; dim], identity(dim)),
    };
    clear_avx_state();
    result
}

/// Above this many dimensions, the leading eigenpairs are found by subspace iteration
/// ([`top_eigh_desc`]) instead of a full decomposition: at 2048 dimensions faer's full
/// decomposition takes 0.9 s per class (its tridiagonalization is O(dim^3)), while detectors use
/// ten directions. At or below it the decomposition is full and exact, as it always was.
pub const FULL_EIGEN_MAX_DIM: usize = 512;

/// The `k` largest eigenvalues of a symmetric positive semi-definite `dim * dim` matrix, descending,
/// and their eigenvectors (`k * dim` row-major): by [`eigh_desc`] up to [`FULL_EIGEN_MAX_DIM`]
/// dimensions, else by block subspace iteration with a Rayleigh-Ritz step each round (Saad,
/// "Numerical Methods for Large Eigenvalue Problems", ch. 5) on a block of `2k` (at least
/// `k + 16`) directions, so a leading pair converges at the ratio of its eigenvalue to the
/// block's edge each round. It stops when every wanted pair's residual |A v - lambda v| is under
/// 1e-6 of the largest eigenvalue, or after 50 rounds (about 0.4 s at 2048 dimensions, against
/// 0.9-1.2 s for the full decomposition): then pairs in a flat bulk of nearly equal eigenvalues
/// (isotropic noise) have not settled, but any orthonormal directions of that bulk serve alike,
/// while separated leading pairs have. Measured: trained-layer (ReLU) classes at 1024 dims settle
/// in 11-13 rounds; the generator's Gaussian classes (8 directions over a flat bulk) run to 50.
pub fn top_eigh_desc(sym: &[f64], dim: usize, k: usize) -> (Vec<f64>, Vec<f64>) {
    let k = k.clamp(1, dim.max(1));
    let block = (2 * k).max(k + 16).min(dim);
    if dim <= FULL_EIGEN_MAX_DIM || block >= dim / 2 {
        let (mut values, mut vectors) = eigh_desc(sym, dim);
        values.truncate(k);
        vectors.truncate(k * dim);
        return (values, vectors);
    }
    const MAX_ROUNDS: usize = 50;
    const TOLERANCE: f64 = 1e-6;
    let a = MatRef::from_row_major_slice(sym, dim, dim);
    // A fixed pseudo-random start (the same matrix gives the same result).
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut v = Mat::<f64>::from_fn(dim, block, |_, _| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    });
    v = v.qr().compute_thin_Q();
    let mut w = Mat::<f64>::zeros(dim, block);
    let mut round = 0;
    loop {
        matmul(w.as_mut(), Accum::Replace, a, v.as_ref(), 1.0, Par::Seq);
        let mut h = Mat::<f64>::zeros(block, block);
        matmul(h.as_mut(), Accum::Replace, v.transpose(), w.as_ref(), 1.0, Par::Seq);
        let h_rows: Vec<f64> = (0..block * block)
            .map(|i| 0.5 * (h[(i / block, i % block)] + h[(i % block, i / block)]))
            .collect();
        let (theta, s_rows) = eigh_desc(&h_rows, block);
        // Ritz vectors V S and their images A V S (S's columns are eigh_desc's rows).
        let s = Mat::<f64>::from_fn(block, block, |i, j| s_rows[j * block + i]);
        let ritz = &v * &s;
        let image = &w * &s;
        let largest = theta[0].abs().max(f64::MIN_POSITIVE);
        let settled = (0..k).all(|j| {
            let residual: f64 = (0..dim)
                .map(|i| (image[(i, j)] - theta[j] * ritz[(i, j)]).powi(2))
                .sum();
            residual.sqrt() <= TOLERANCE * largest
        });
        round += 1;
        if settled || round == MAX_ROUNDS {
            let vectors = (0..k)
                .flat_map(|j| (0..dim).map(move |i| (j, i)))
                .map(|(j, i)| ritz[(i, j)])
                .collect();
            clear_avx_state();
            return (theta[..k].to_vec(), vectors);
        }
        v = image.qr().compute_thin_Q();
    }
}

fn identity(dim: usize) -> Vec<f64> {
    let mut m = vec![0.0; dim * dim];
    (0..dim).for_each(|i| m[i * dim + i] = 1.0);
    m
}

/// The float types [`project`] works in.
pub trait Coordinate: faer::traits::ComplexField<Real = Self> + Copy + Default + 'static {
    fn from_f64(v: f64) -> Self;
}

impl Coordinate for f32 {
    fn from_f64(v: f64) -> f32 {
        v as f32
    }
}

impl Coordinate for f64 {
    fn from_f64(v: f64) -> f64 {
        v
    }
}

/// `(x - mean) * components^T`: `n * k` coordinates of each row on `k` components (`k * dim`),
/// in the components' float type.
pub fn project<T: Coordinate>(x: &[f32], dim: usize, mean: &[f64], components: &[T], k: usize) -> Vec<T> {
    let n = x.len() / dim;
    let mut out = vec![T::default(); n * k];
    let basis = MatRef::from_row_major_slice(components, k, dim);
    let mut centred = vec![T::default(); CHUNK_ROWS.min(n.max(1)) * dim];
    for (chunk, out_chunk) in x.chunks(CHUNK_ROWS * dim).zip(out.chunks_mut(CHUNK_ROWS * k)) {
        let rows = chunk.len() / dim;
        for (c, row) in centred.chunks_exact_mut(dim).zip(chunk.chunks_exact(dim)) {
            for j in 0..dim {
                c[j] = T::from_f64(row[j] as f64 - mean[j]);
            }
        }
        let c = MatRef::from_row_major_slice(&centred[..rows * dim], rows, dim);
        let mut dst = Mat::<T>::zeros(rows, k);
        matmul(
            dst.as_mut(),
            Accum::Replace,
            c,
            basis.transpose(),
            T::from_f64(1.0),
            Par::Seq,
        );
        for r in 0..rows {
            for j in 0..k {
                out_chunk[r * k + j] = dst[(r, j)];
            }
        }
    }
    clear_avx_state();
    out
}

/// `out = a * b^T` for row-major `a` (`m * inner`) and `b` (`n * inner`); `out` is `m * n`
/// row-major. The workhorse of the surrogate model.
pub fn mul_abt(a: &[f32], b: &[f32], inner: usize, out: &mut [f32]) {
    let (m, n) = (a.len() / inner, b.len() / inner);
    let a = MatRef::from_row_major_slice(a, m, inner);
    let b = MatRef::from_row_major_slice(b, n, inner);
    let out = MatMut::from_row_major_slice_mut(out, m, n);
    matmul(out, Accum::Replace, a, b.transpose(), 1.0f32, Par::Seq);
    clear_avx_state();
}

/// `out += a^T * b` for row-major `a` (`rows * a_cols`) and `b` (`rows * b_cols`); `out` is
/// `a_cols * b_cols` row-major (a gradient or a Gram matrix summed over row chunks).
pub fn add_atb(a: &[f32], a_cols: usize, b: &[f32], b_cols: usize, out: &mut [f32]) {
    let rows = a.len() / a_cols;
    let a = MatRef::from_row_major_slice(a, rows, a_cols);
    let b = MatRef::from_row_major_slice(b, rows, b_cols);
    let out = MatMut::from_row_major_slice_mut(out, a_cols, b_cols);
    matmul(out, Accum::Add, a.transpose(), b, 1.0f32, Par::Seq);
    clear_avx_state();
}

/// faer's kernels leave the upper halves of the AVX registers dirty; SSE code that runs next on
/// the same thread then pays a transition penalty (measured 7x slower in ../shared/research).
/// `vzeroupper` on this thread clears it.
pub fn clear_avx_state() {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx") {
            // SAFETY: vzeroupper only zeroes the upper halves of ymm registers, which no live
            // value uses across this call; it exists on every CPU with AVX (checked above).
            unsafe { std::arch::asm!("vzeroupper") };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_moments_match_direct_formula() {
        // 40 dims: the product's lower triangle is computed in several blocks, then mirrored.
        for dim in [3, 40] {
            chunked_moments_match_direct_formula_in(dim);
        }
    }

    fn chunked_moments_match_direct_formula_in(dim: usize) {
        let n = CHUNK_ROWS * 2 + 17; // several chunks, the last one partial
        let x: Vec<f32> = (0..n * dim)
            .map(|i| ((i * 7919) % 101) as f32 / 10.0 + 1000.0)
            .collect();
        let m = Moments::from_rows(&x, dim);
        let mean: Vec<f64> = (0..dim)
            .map(|j| (0..n).map(|r| x[r * dim + j] as f64).sum::<f64>() / n as f64)
            .collect();
        for j in 0..dim {
            assert!((m.mean[j] - mean[j]).abs() < 1e-6);
            for k in 0..dim {
                let direct: f64 = (0..n)
                    .map(|r| (x[r * dim + j] as f64 - mean[j]) * (x[r * dim + k] as f64 - mean[k]))
                    .sum();
                assert!(
                    (m.comoment[j * dim + k] - direct).abs() < 1e-3 * direct.abs().max(1.0),
                    "{j},{k}"
                );
            }
        }
    }

    /// Rows with a decaying spread over `dim` coordinates, offset from the origin.
    fn decaying_rows(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..n * dim)
            .map(|i| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let noise = (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
                (5.0 + noise * 10.0 * 0.8f64.powi((i % dim) as i32 / 4)) as f32
            })
            .collect()
    }

    #[test]
    fn principal_components_by_gram_match_the_covariance_route() {
        let (n, dim, k) = (40, 120, 6);
        let x = decaying_rows(n, dim, 3);
        let got = principal_by_gram(&x, dim, k).expect("distinct rows");
        let moments = Moments::from_rows(&x, dim);
        let covariance = moments.covariance();
        let (values, vectors) = eigh_desc(&covariance, dim);
        let trace: f64 = (0..dim).map(|j| covariance[j * dim + j]).sum();
        assert!((got.trace - trace).abs() < 1e-6 * trace, "{} vs {trace}", got.trace);
        assert!(got.mean.iter().zip(&moments.mean).all(|(a, b)| (a - b).abs() < 1e-9));
        assert_eq!((got.eigenvalues.len(), got.components.len()), (k, k * dim));
        for j in 0..k {
            assert!((got.eigenvalues[j] - values[j]).abs() < 1e-5 * values[0], "{j}");
            let v = &got.components[j * dim..(j + 1) * dim];
            let cosine: f64 = v.iter().zip(&vectors[j * dim..(j + 1) * dim]).map(|(a, b)| a * b).sum();
            assert!((cosine.abs() - 1.0).abs() < 1e-6, "{j}: |cos| {cosine}");
        }
    }

    #[test]
    fn the_gram_route_declines_rows_spanning_fewer_directions_than_asked() {
        // Three copies of two rows: rank 1, so a second direction has no spread to pick it.
        let two = decaying_rows(2, 50, 9);
        let x: Vec<f32> = (0..3).flat_map(|_| two.iter().copied()).collect();
        assert!(principal_by_gram(&x, 50, 1).is_some());
        assert!(principal_by_gram(&x, 50, 2).is_none());
        assert!(principal_by_gram(&x[..2 * 50], 50, 1).is_none(), "two rows");
        // The span keeps what spreads: one direction, unit length.
        let span = span_by_gram(&x, 50).expect("one direction spreads");
        assert_eq!(span.eigenvalues.len(), 1);
        let norm: f64 = span.components.iter().map(|v| v * v).sum();
        assert!((norm - 1.0).abs() < 1e-9, "{norm}");
        let same: Vec<f32> = two[..50].repeat(4);
        assert!(span_by_gram(&same, 50).is_none(), "identical rows span nothing");
        // Ten distinct rows and a copy of one: 9 directions, descending.
        let mut rows = decaying_rows(10, 50, 3);
        rows.extend_from_within(..50);
        let span = span_by_gram(&rows, 50).unwrap();
        assert_eq!(span.eigenvalues.len(), 9);
        assert!(span.eigenvalues.windows(2).all(|w| w[0] >= w[1]));
    }

    #[test]
    fn eigh_sorts_descending_with_unit_vectors() {
        let a = [2.0, 1.0, 0.0, 1.0, 2.0, 0.0, 0.0, 0.0, 5.0];
        let (vals, vecs) = eigh_desc(&a, 3);
        assert!((vals[0] - 5.0).abs() < 1e-9 && (vals[1] - 3.0).abs() < 1e-9 && (vals[2] - 1.0).abs() < 1e-9);
        assert!((vecs[2].abs() - 1.0).abs() < 1e-9, "top vector is e3");
    }

    /// A symmetric `dim * dim` matrix with eigenvalues `values` on random orthonormal vectors
    /// (returned as rows).
    fn with_spectrum(values: &[f64], seed: u64) -> (Vec<f64>, Vec<f64>) {
        let dim = values.len();
        let mut state = seed;
        let random = Mat::<f64>::from_fn(dim, dim, |_, _| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        });
        let q = random.qr().compute_thin_Q();
        let scaled = Mat::<f64>::from_fn(dim, dim, |i, j| q[(i, j)] * values[j]);
        let a = &scaled * q.transpose();
        let sym = (0..dim * dim).map(|i| a[(i / dim, i % dim)]).collect();
        let vectors = (0..dim * dim).map(|i| q[(i % dim, i / dim)]).collect();
        (sym, vectors)
    }

    #[test]
    fn leading_eigenpairs_by_subspace_iteration_match_the_full_decomposition() {
        let dim = FULL_EIGEN_MAX_DIM + 88;
        // A decaying spectrum, as trained layers have: converges well within the round limit.
        let values: Vec<f64> = (0..dim).map(|i| 100.0 * 0.9f64.powi(i as i32) + 0.01).collect();
        let (sym, truth) = with_spectrum(&values, 7);
        let (got, vectors) = top_eigh_desc(&sym, dim, 10);
        assert_eq!((got.len(), vectors.len()), (10, 10 * dim));
        for j in 0..10 {
            assert!(
                (got[j] - values[j]).abs() < 1e-8 * values[0],
                "{j}: {} vs {}",
                got[j],
                values[j]
            );
            let v = &vectors[j * dim..(j + 1) * dim];
            let t = &truth[j * dim..(j + 1) * dim];
            let cosine: f64 = v.iter().zip(t).map(|(a, b)| a * b).sum();
            assert!((cosine.abs() - 1.0).abs() < 1e-8, "{j}: |cos| {cosine}");
        }
    }

    #[test]
    fn directions_in_a_flat_bulk_stay_orthonormal_with_bulk_eigenvalues() {
        // Three separated directions over 700 nearly equal ones (the generator's Gaussian
        // classes): the round limit stops before the bulk settles, and the bulk's directions are
        // arbitrary anyway; the separated ones must be exact and every vector a unit, orthogonal.
        let dim = 703;
        let values: Vec<f64> = (0..dim)
            .map(|i| {
                if i < 3 {
                    30.0 - 3.0 * i as f64
                } else {
                    0.2 - 1e-5 * i as f64
                }
            })
            .collect();
        let (sym, truth) = with_spectrum(&values, 11);
        let (got, vectors) = top_eigh_desc(&sym, dim, 10);
        for j in 0..3 {
            assert!((got[j] - values[j]).abs() < 1e-9 * values[0]);
            let cosine: f64 = (0..dim).map(|i| vectors[j * dim + i] * truth[j * dim + i]).sum();
            assert!((cosine.abs() - 1.0).abs() < 1e-9, "{j}: |cos| {cosine}");
        }
        for j in 3..10 {
            assert!(
                got[j] <= 0.2 + 1e-9 && got[j] >= values[dim - 1] - 1e-9,
                "{j}: {}",
                got[j]
            );
        }
        for a in 0..10 {
            for b in 0..10 {
                let dot: f64 = (0..dim).map(|i| vectors[a * dim + i] * vectors[b * dim + i]).sum();
                assert!((dot - (a == b) as u8 as f64).abs() < 1e-9, "{a}.{b} = {dot}");
            }
        }
    }
}
