//! The neighbour search's inner loop: squared distances from a tile of queries to a panel of
//! candidates, kept in registers and tested against each query's current k-th distance before
//! anything is written to memory.
//!
//! Why not a matrix product and then a scan of its output (what 0.2.1 did, with faer's GEMM): at
//! the search's 32 dimensions every dot product is 32 multiply-adds, so writing the product out
//! and reading it back cost as much as computing it (perf at 1M x 32: GEMM ~45% of the search,
//! the scan of its output ~35%). Here the product never leaves the registers: almost every
//! candidate is farther than the query's k-th neighbour, and that is decided by one packed
//! compare per register.
//!
//! Layouts (both packed once, then reused across many tiles):
//! - [`Panels`]: candidates in panels of `width`, each panel `dim` rows of `width` values
//!   (candidate-minor), so one dimension of a whole panel is one or two vector loads. The last
//!   panel is padded with candidates of infinite norm, which no bound ever admits.
//! - [`QueryTiles`]: queries in tiles of `rows`, each tile `dim` rows of `rows` values, so a
//!   dimension of the tile is `rows` broadcasts. Padding queries have a bound of -inf.
//!
//! The bf16 kernel (AVX512_BF16) stores two consecutive dimensions, rounded to bf16, in each f32
//! slot (the bits, not a number) and sums products in f32 with `vdpbf16ps`: twice the
//! multiply-adds per instruction (measured on the 2-core EPYC: 111 against 56 GMAC/s per core
//! for this tile). Its distances are approximate, so it only serves the list search, which
//! centres queries and candidates on the list's centre (small norms, little cancellation in
//! |q|^2 + |c|^2 - 2 q.c) and re-ranks the neighbours it finds by exact distance.

use super::Tops;

/// Candidates packed in panels (see the module doc).
pub(super) struct Panels {
    width: usize,
    dim: usize,
    values: Vec<f32>,
    norms: Vec<f32>,
    ids: Vec<u32>,
}

impl Panels {
    /// The points `ids` of `x` (`dim` columns) less `centre` (zeros: as they are), packed for
    /// `kernel`.
    pub(super) fn new(x: &[f32], dim: usize, ids: &[u32], centre: &[f32], kernel: Kernel) -> Panels {
        let width = kernel.shape().1;
        let padded = ids.len().div_ceil(width) * width;
        let (values, norms) = pack_centred(x, dim, ids, centre, width, kernel);
        Panels {
            width,
            dim: kernel.steps(dim),
            values,
            norms: pad(norms.into_iter(), padded, f32::INFINITY),
            ids: pad(ids.iter().copied(), padded, u32::MAX),
        }
    }
}

/// Queries packed in tiles (see the module doc), with their squared norms, the id each must not
/// be offered (itself) and the row of the top-k each one's neighbours go to.
pub(super) struct QueryTiles {
    rows: usize,
    dim: usize,
    values: Vec<f32>,
    norms: Vec<f32>,
    own: Vec<u32>,
    slots: Vec<usize>,
}

impl QueryTiles {
    /// The points `ids` of `x` (`dim` columns) less `centre` (zeros: as they are), packed for
    /// `kernel`; query `q` fills row `q` of the top-k.
    pub(super) fn new(x: &[f32], dim: usize, ids: &[u32], centre: &[f32], kernel: Kernel) -> QueryTiles {
        let rows = kernel.shape().0;
        let (values, norms) = pack_centred(x, dim, ids, centre, rows, kernel);
        QueryTiles {
            rows,
            dim: kernel.steps(dim),
            values,
            norms,
            own: ids.to_vec(),
            slots: (0..ids.len()).collect(),
        }
    }

    /// Query `q` fills row `slots[q]` of the top-k instead.
    pub(super) fn into_slots(self, slots: Vec<usize>) -> QueryTiles {
        assert_eq!(slots.len(), self.own.len());
        QueryTiles { slots, ..self }
    }

    /// The queries are the points `ids` (each skips itself as a candidate), though packed from
    /// other rows (a gathered copy).
    pub(super) fn identified_as(self, ids: Vec<u32>) -> QueryTiles {
        assert_eq!(ids.len(), self.own.len());
        QueryTiles { own: ids, ..self }
    }

    /// Candidates are other things than the queries (list centres): none is skipped as "self".
    /// (`u32::MAX` is the id of padding candidates only, which no bound admits.)
    pub(super) fn skipping_none(self) -> QueryTiles {
        let own = vec![u32::MAX; self.own.len()];
        QueryTiles { own, ..self }
    }
}

/// Rows `ids` of `x` less `centre` in groups of `group`, each group stored dimension-major
/// (`steps` rows of `group` values, a short last group padded with zeros), in `kernel`'s storage
/// (f32, or bf16 pairs); and their squared norms (of the f32 differences).
fn pack_centred(
    x: &[f32],
    dim: usize,
    ids: &[u32],
    centre: &[f32],
    group: usize,
    kernel: Kernel,
) -> (Vec<f32>, Vec<f32>) {
    let steps = kernel.steps(dim);
    let mut values = vec![0f32; ids.len().div_ceil(group) * group * steps];
    let mut norms = Vec::with_capacity(ids.len());
    let mut centred = vec![0f32; dim];
    for (block, members) in values.chunks_exact_mut(group * steps).zip(ids.chunks(group)) {
        for (l, &i) in members.iter().enumerate() {
            let row = &x[i as usize * dim..(i as usize + 1) * dim];
            centred
                .iter_mut()
                .zip(row.iter().zip(centre))
                .for_each(|(c, (v, m))| *c = v - m);
            norms.push(centred.iter().map(|v| v * v).sum());
            if kernel.exact() {
                centred.iter().enumerate().for_each(|(d, &v)| block[d * group + l] = v);
            } else {
                for (p, pair) in centred.chunks(2).enumerate() {
                    let high = pair.get(1).map_or(0, |&v| bf16_bits(v));
                    block[p * group + l] = f32::from_bits(high << 16 | bf16_bits(pair[0]));
                }
            }
        }
    }
    (values, norms)
}

/// The bf16 nearest to `v` (round to nearest, ties to even), as the low 16 bits.
fn bf16_bits(v: f32) -> u32 {
    let bits = v.to_bits();
    bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16
}

fn pad<T: Copy>(values: impl Iterator<Item = T>, len: usize, filler: T) -> Vec<T> {
    let mut out: Vec<T> = values.collect();
    out.resize(len, filler);
    out
}

/// Which kernel runs: the widest vector unit the CPU has, detected at run time. [`Kernel::scan`]
/// checks that the CPU supports the kernel it is asked to run (a cached feature lookup), so no
/// safe caller can reach an instruction the CPU lacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kernel {
    /// 32 zmm registers: 8 queries x 32 candidates (16 accumulators).
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// As `Avx512`, two dimensions per multiply-add in bf16 (approximate; see the module doc).
    #[cfg(target_arch = "x86_64")]
    Avx512Bf16,
    /// 16 ymm registers: 6 queries x 16 candidates (12 accumulators).
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// Plain arrays of 8, whatever the compiler makes of them for the baseline target.
    Portable,
}

impl Kernel {
    /// The fastest exact kernel this CPU runs.
    pub(super) fn detect() -> Kernel {
        Kernel::available()
            .into_iter()
            .find(|k| k.exact())
            .expect("the portable kernel")
    }

    /// The fastest kernel this CPU runs, exact or not: for a search that re-ranks.
    pub(super) fn detect_approximate() -> Kernel {
        Kernel::available()[0]
    }

    /// Whether its distances are exact in f32 (all but the bf16 kernel).
    pub(super) fn exact(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        if self == Kernel::Avx512Bf16 {
            return false;
        }
        true
    }

    /// Values stored per point: one per dimension, or one per pair of dimensions.
    pub(super) fn steps(self, dim: usize) -> usize {
        if self.exact() { dim } else { dim.div_ceil(2) }
    }

    /// Every kernel this CPU runs, fastest first.
    pub(super) fn available() -> Vec<Kernel> {
        let all = [
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Bf16,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2,
            Kernel::Portable,
        ];
        all.into_iter().filter(|k| k.supported()).collect()
    }

    /// Whether the CPU has every feature the kernel is compiled with (`avx512f` implies `avx2`,
    /// `fma` and `f16c` to the compiler, but the CPU is asked about each).
    fn supported(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => {
                std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx2")
                    && std::is_x86_feature_detected!("fma")
                    && std::is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Bf16 => Kernel::Avx512.supported() && std::is_x86_feature_detected!("avx512bf16"),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma"),
            Kernel::Portable => true,
        }
    }

    /// (queries per tile, candidates per panel).
    pub(super) fn shape(self) -> (usize, usize) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 | Kernel::Avx512Bf16 => (8, 2 * x86::Avx512::<false>::LANES),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => (6, 2 * x86::Avx2::LANES),
            Kernel::Portable => (4, 2 * Portable::LANES),
        }
    }

    /// Offers every candidate of `panels` to the top-k of every query of `queries` (in its slot,
    /// skipping its own id). Both must have been packed for this kernel.
    pub(super) fn scan(self, queries: &QueryTiles, panels: &Panels, tops: &mut Tops) {
        assert_eq!((queries.rows, panels.width), self.shape(), "packed for another kernel");
        assert_eq!(queries.dim, panels.dim);
        assert!(self.supported(), "{self:?} kernel on a CPU without its features");
        match self {
            // SAFETY: the CPU has these kernels' features (asserted just above).
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => unsafe { x86::scan_avx512(queries, panels, tops) },
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Bf16 => unsafe { x86::scan_avx512_bf16(queries, panels, tops) },
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { x86::scan_avx2(queries, panels, tops) },
            // SAFETY: the portable lanes need no CPU feature.
            Kernel::Portable => unsafe { scan_tiles::<Portable, 4, 2>(queries, panels, tops) },
        }
    }
}

/// The few vector operations the kernel needs, for one instruction set.
///
/// # Safety
/// The methods may only run on a CPU with the instruction set's features; they are inlined into
/// a function compiled with those features (`x86::scan_*`), which is where the speed comes from.
trait Lanes {
    type V: Copy;
    const LANES: usize;
    unsafe fn zero() -> Self::V;
    unsafe fn splat(value: f32) -> Self::V;
    /// The first `LANES` values of `values`.
    unsafe fn load(values: &[f32]) -> Self::V;
    unsafe fn store(v: Self::V, out: &mut [f32]);
    /// `a * b + c` (the bf16 lanes: `c` plus the products of both bf16 halves of each lane).
    unsafe fn multiply_add(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// Bit `l` set where `norm[l] - 2 dot[l] < bound[l]`.
    unsafe fn below(norm: Self::V, dot: Self::V, bound: Self::V) -> u32;
}

/// Baseline lanes: arrays of 8 (SSE2 pairs on x86-64, NEON on arm, if the compiler sees it).
struct Portable;

impl Lanes for Portable {
    type V = [f32; 8];
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn zero() -> [f32; 8] {
        [0.0; 8]
    }
    #[inline(always)]
    unsafe fn splat(value: f32) -> [f32; 8] {
        [value; 8]
    }
    #[inline(always)]
    unsafe fn load(values: &[f32]) -> [f32; 8] {
        values[..8].try_into().expect("8 values")
    }
    #[inline(always)]
    unsafe fn store(v: [f32; 8], out: &mut [f32]) {
        out[..8].copy_from_slice(&v);
    }
    #[inline(always)]
    unsafe fn multiply_add(a: [f32; 8], b: [f32; 8], c: [f32; 8]) -> [f32; 8] {
        // Not `mul_add`: without FMA in the target that is a libm call per lane.
        std::array::from_fn(|l| a[l] * b[l] + c[l])
    }
    #[inline(always)]
    unsafe fn below(norm: [f32; 8], dot: [f32; 8], bound: [f32; 8]) -> u32 {
        (0..8).fold(0, |mask, l| mask | (((norm[l] - 2.0 * dot[l] < bound[l]) as u32) << l))
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Lanes, Panels, QueryTiles, Tops, scan_tiles};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    pub(super) fn scan_avx512(queries: &QueryTiles, panels: &Panels, tops: &mut Tops) {
        // SAFETY: this function only runs where the CPU has AVX-512F, AVX2, FMA and F16C (the
        // caller's contract).
        unsafe { scan_tiles::<Avx512<false>, 8, 2>(queries, panels, tops) }
    }

    #[target_feature(enable = "avx512f,avx512bf16,avx2,fma,f16c")]
    pub(super) fn scan_avx512_bf16(queries: &QueryTiles, panels: &Panels, tops: &mut Tops) {
        // SAFETY: this function only runs where the CPU has AVX-512F, AVX512_BF16, AVX2, FMA and
        // F16C (the caller's contract).
        unsafe { scan_tiles::<Avx512<true>, 8, 2>(queries, panels, tops) }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn scan_avx2(queries: &QueryTiles, panels: &Panels, tops: &mut Tops) {
        // SAFETY: this function only runs where the CPU has AVX2 and FMA (the caller's contract).
        unsafe { scan_tiles::<Avx2, 6, 2>(queries, panels, tops) }
    }

    /// AVX-512 lanes; with `BF16_PAIRS`, each f32 slot holds two bf16 (see the module doc).
    pub(super) struct Avx512<const BF16_PAIRS: bool>;

    // SAFETY (every method): callers run only where AVX-512F (and what it implies: AVX2, FMA,
    // F16C) is present, and AVX512_BF16 for `BF16_PAIRS`; loads and stores go through slices of
    // at least 16 values (checked).
    impl<const BF16_PAIRS: bool> Lanes for Avx512<BF16_PAIRS> {
        type V = __m512;
        const LANES: usize = 16;
        #[inline(always)]
        unsafe fn zero() -> __m512 {
            unsafe { _mm512_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn splat(value: f32) -> __m512 {
            unsafe { _mm512_set1_ps(value) }
        }
        #[inline(always)]
        unsafe fn load(values: &[f32]) -> __m512 {
            unsafe { _mm512_loadu_ps(values[..16].as_ptr()) }
        }
        #[inline(always)]
        unsafe fn store(v: __m512, out: &mut [f32]) {
            unsafe { _mm512_storeu_ps(out[..16].as_mut_ptr(), v) }
        }
        #[inline(always)]
        unsafe fn multiply_add(a: __m512, b: __m512, c: __m512) -> __m512 {
            if BF16_PAIRS {
                // SAFETY: the bits are reinterpreted, not converted: 16 f32 slots of two bf16 each.
                let pairs = |v: __m512| unsafe { std::mem::transmute::<__m512, __m512bh>(v) };
                unsafe { _mm512_dpbf16_ps(c, pairs(a), pairs(b)) }
            } else {
                unsafe { _mm512_fmadd_ps(a, b, c) }
            }
        }
        #[inline(always)]
        unsafe fn below(norm: __m512, dot: __m512, bound: __m512) -> u32 {
            // norm - 2 dot: 2 dot is exact, so the fused form rounds as the scalar test does.
            unsafe {
                let partial = _mm512_fmadd_ps(dot, _mm512_set1_ps(-2.0), norm);
                _mm512_cmp_ps_mask::<_CMP_LT_OQ>(partial, bound) as u32
            }
        }
    }

    pub(super) struct Avx2;

    // SAFETY (every method): callers run only where AVX2 and FMA are present; loads and stores
    // go through slices of at least 8 values (checked).
    impl Lanes for Avx2 {
        type V = __m256;
        const LANES: usize = 8;
        #[inline(always)]
        unsafe fn zero() -> __m256 {
            unsafe { _mm256_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn splat(value: f32) -> __m256 {
            unsafe { _mm256_set1_ps(value) }
        }
        #[inline(always)]
        unsafe fn load(values: &[f32]) -> __m256 {
            unsafe { _mm256_loadu_ps(values[..8].as_ptr()) }
        }
        #[inline(always)]
        unsafe fn store(v: __m256, out: &mut [f32]) {
            unsafe { _mm256_storeu_ps(out[..8].as_mut_ptr(), v) }
        }
        #[inline(always)]
        unsafe fn multiply_add(a: __m256, b: __m256, c: __m256) -> __m256 {
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn below(norm: __m256, dot: __m256, bound: __m256) -> u32 {
            unsafe {
                let partial = _mm256_fmadd_ps(dot, _mm256_set1_ps(-2.0), norm);
                _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_LT_OQ>(partial, bound)) as u32
            }
        }
    }
}

/// The kernel: `R` queries x `P` vectors of candidates, accumulated in registers.
///
/// # Safety
/// Only where the CPU has `S`'s features (see [`Lanes`]).
#[inline(always)]
unsafe fn scan_tiles<S: Lanes, const R: usize, const P: usize>(queries: &QueryTiles, panels: &Panels, tops: &mut Tops) {
    const { assert!(P * S::LANES <= 32, "a panel's mask is a u32") };
    let (dim, lanes) = (queries.dim, S::LANES);
    let width = P * lanes;
    debug_assert_eq!((queries.rows, panels.width), (R, width));
    let m = queries.own.len();
    let mut lane_values = [0f32; 32];
    for (t, tile) in queries.values.chunks_exact(R * dim).enumerate() {
        let rows = R.min(m - t * R);
        let mut norm = [0f32; R];
        let mut bound = [f32::NEG_INFINITY; R];
        for r in 0..rows {
            norm[r] = queries.norms[t * R + r];
            bound[r] = tops.worst(queries.slots[t * R + r]) - norm[r];
        }
        for (p, panel) in panels.values.chunks_exact(width * dim).enumerate() {
            // SAFETY (the intrinsics): the caller's contract.
            let mut dots = [[unsafe { S::zero() }; P]; R];
            for (c, q) in panel.chunks_exact(width).zip(tile.chunks_exact(R)) {
                let c: [S::V; P] = std::array::from_fn(|j| unsafe { S::load(&c[j * lanes..]) });
                for r in 0..R {
                    let q = unsafe { S::splat(q[r]) };
                    for j in 0..P {
                        dots[r][j] = unsafe { S::multiply_add(q, c[j], dots[r][j]) };
                    }
                }
            }
            let norms = &panels.norms[p * width..(p + 1) * width];
            let cn: [S::V; P] = std::array::from_fn(|j| unsafe { S::load(&norms[j * lanes..]) });
            for r in 0..rows {
                // Distance^2 less the query's norm, below the bound: one packed compare per
                // register; only the set bits are visited (rare once the top-k has filled).
                let limit = unsafe { S::splat(bound[r]) };
                let mut mask = 0u32;
                for j in 0..P {
                    mask |= unsafe { S::below(cn[j], dots[r][j], limit) } << (j * lanes);
                }
                if mask == 0 {
                    continue;
                }
                for j in 0..P {
                    unsafe { S::store(dots[r][j], &mut lane_values[j * lanes..]) };
                }
                while mask != 0 {
                    let l = mask.trailing_zeros() as usize;
                    mask &= mask - 1;
                    // The bound tightens as neighbours are offered: test again.
                    let partial = norms[l] - 2.0 * lane_values[l];
                    let id = panels.ids[p * width + l];
                    if partial < bound[r] && id != queries.own[t * R + r] {
                        let query = queries.slots[t * R + r];
                        tops.offer(query, (partial + norm[r]).max(0.0), id);
                        bound[r] = tops.worst(query) - norm[r];
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel the CPU can run finds the same neighbours as a scalar loop, on sizes that
    /// leave partial tiles and panels (and an odd dimension: the bf16 kernel's last pair is
    /// half padding). The exact kernels agree to f32 rounding; the bf16 kernel, on values
    /// centred as the list search centres them, to a small share of the squared norms.
    #[test]
    fn every_kernel_agrees_with_a_scalar_search() {
        let (m, n, dim, k) = (23, 77, 5, 4);
        let value = |i: usize| ((i * 7919 % 1000) as f32) / 100.0 - 5.0;
        let x: Vec<f32> = (0..(m + n) * dim).map(value).collect();
        let ids: Vec<u32> = (0..(m + n) as u32).collect();
        let centre: Vec<f32> = (0..dim).map(|d| 0.3 * d as f32 - 0.5).collect();
        let norm = |i: usize| -> f32 { (0..dim).map(|d| (x[i * dim + d] - centre[d]).powi(2)).sum() };
        for kernel in Kernel::available() {
            let tiles = QueryTiles::new(&x, dim, &ids[..m], &centre, kernel);
            let panels = Panels::new(&x, dim, &ids, &centre, kernel);
            let mut tops = Tops::new(m, k);
            kernel.scan(&tiles, &panels, &mut tops);
            for q in 0..m {
                let mut truth: Vec<(f32, u32)> = (0..m + n)
                    .filter(|&j| j != q)
                    .map(|j| {
                        let d2 = (0..dim).map(|d| (x[q * dim + d] - x[j * dim + d]).powi(2)).sum();
                        (d2, j as u32)
                    })
                    .collect();
                truth.sort_by(|a, b| a.0.total_cmp(&b.0));
                for j in 0..k {
                    let got = tops.d2[q * k + j];
                    let tolerance = if kernel.exact() {
                        1e-3 * truth[j].0.max(1.0)
                    } else {
                        // bf16 keeps 8 significant bits: the products err by about 2^-8 of
                        // the norms, and the k-th may then be a near tie's other member.
                        1e-2 * (norm(q) + norm(truth[j].1 as usize))
                    };
                    assert!(
                        (got - truth[j].0).abs() < tolerance,
                        "{kernel:?} query {q}: {got} vs {}",
                        truth[j].0
                    );
                    assert_ne!(
                        tops.index[q * k + j],
                        q as u32,
                        "{kernel:?}: a query is not its own neighbour"
                    );
                }
            }
        }
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(bf16_bits(1.0), 0x3f80);
        assert_eq!(f32::from_bits(bf16_bits(-2.5) << 16), -2.5);
        // 1 + 2^-8 lies halfway between two bf16 values: ties go to the even one (1.0).
        assert_eq!(bf16_bits(1.0 + 1.0 / 256.0), 0x3f80);
        assert_eq!(bf16_bits(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(bf16_bits(0.0), 0);
    }
}
