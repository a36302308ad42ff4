//! SPECTRE-style robust spectral score (Hayase, Kong, Somani, Oh, ICML 2021, arXiv:2104.11315).
//!
//! In the class's top-k PCA space: estimate mean and covariance robustly (concentration steps of
//! the minimum covariance determinant, Rousseeuw & Van Driessen 1999, then one reweighting), whiten
//! every record with them, and score it with the quantum entropy (QUE) score
//! tau_i = w_i^T M w_i, M = exp(alpha (S - I) / (||S|| - 1)) / tr(...), S the second moment of the
//! whitened class. Whitening with a covariance the poison did not shape makes even a 1% cluster
//! stand out along its direction, where plain spectral signatures need a large separation.
//!
//! Two departures from the paper, both for sparse, heavy-tailed ReLU activations: the robust
//! covariance is shrunk 10% towards the classical one before whitening (units that fire for a
//! few records would otherwise blow up), and the top whitened directions are searched for a
//! two-mode split (`mixture`), whose minor mode is the suspect group in an attacked class.
//!
//! The class signal is ln ||S||, with ||S|| the top eigenvalue of the whitened second moment: about 1 for a
//! clean class, 1 + eps * Delta^2 with a poison share eps at whitened distance Delta.

use serde::{Deserialize, Serialize};

use super::linalg::eigh_desc;
use super::mixture::{CLEAN_SEPARATION, Split, fit_two_gaussians};
use super::{ClassScores, ClassSignal, ClassView, DetectError, Detector, Grouping, ParamError, Stat};
use crate::stats::dot;

/// Top whitened directions searched for a two-group split.
const SPLIT_DIRECTIONS: usize = 3;
/// Rows per class the mixture is fitted on (every record then gets its posterior).
const SPLIT_FIT_ROWS: usize = 5_000;
/// A minor group must hold at least this share of its class (and 3 rows) to count: fewer is a
/// handful of outliers, not a cluster.
const MIN_GROUP_SHARE: f64 = 0.005;
/// ...and at most this share: beyond it the "minor" group is half the class.
const MAX_GROUP_SHARE: f64 = 0.4;

/// Records per whitened dimension below which the class signal abstains: the robust covariance of
/// a few records per dimension is too noisy for the bound (measured on clean Gaussian classes in
/// 11 coordinates: 50-63 records reached ln 0.93-0.99 against bounds of 0.84-0.91, so the two
/// smallest classes of a long-tailed set were judged attacked; from 81 records on, every class
/// stayed 0.08-0.50 under its bound). Its records are still scored.
const MIN_RECORDS_PER_DIM: usize = 10;

/// Weight of the classical covariance in the one we whiten with.
const SHRINKAGE: f64 = 0.1;

/// Rows per class the robust mean/covariance is fitted on.
const ROBUST_FIT_ROWS: usize = 20_000;

/// `[detect.spectre]` in a pipeline file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct SpectreParams {
    /// Run this detector (default true; `--no-spectre` turns it off).
    pub enabled: bool,
    /// QUE's alpha: 0 weighs all whitened directions alike, larger values focus on the top one. Paper: 4.
    pub alpha: f64,
    /// Share of each class the robust estimate may ignore, in [0.05, 0.5). Default 0.25.
    pub trim: f64,
    /// Maximum concentration steps. Default 20.
    pub iterations: usize,
}

impl Default for SpectreParams {
    fn default() -> Self {
        SpectreParams {
            enabled: true,
            alpha: 4.0,
            trim: 0.25,
            iterations: 20,
        }
    }
}

impl SpectreParams {
    pub fn check(self) -> Result<Spectre, ParamError> {
        if !(self.alpha >= 0.0 && self.alpha <= 50.0) {
            return Err(ParamError::new("alpha", "must be in [0, 50]", self.alpha));
        }
        if !(self.trim >= 0.05 && self.trim < 0.5) {
            return Err(ParamError::new("trim", "must be in [0.05, 0.5)", self.trim));
        }
        if self.iterations == 0 {
            return Err(ParamError::new("iterations", "must be at least 1", self.iterations));
        }
        Ok(Spectre { params: self })
    }
}

/// The checked detector; made only by [`SpectreParams::check`].
#[derive(Clone, Debug)]
pub struct Spectre {
    params: SpectreParams,
}

/// The fit a later scan scores new records under: the robust location and the (shrunk)
/// covariance of the class in its basis coordinates, and the two-group split found along a
/// whitened direction.
#[derive(Serialize, Deserialize)]
struct SpectreFit {
    mean: Vec<f64>,
    cov: Vec<f64>,
    split: Option<SplitFit>,
}

#[derive(Serialize, Deserialize)]
struct SplitFit {
    /// Unit direction in whitened coordinates.
    direction: Vec<f64>,
    split: Split,
}

/// The class whitened by a fit, with its second moment's eigen-decomposition.
struct Whitened {
    /// `n * k` whitened records.
    w: Vec<f64>,
    /// Eigenvalues (descending) and eigenvectors (rows) of the whitened second moment.
    s: Vec<f64>,
    u: Vec<f64>,
}

impl Detector for Spectre {
    fn name(&self) -> &'static str {
        "spectre"
    }

    fn score_class(&self, view: &ClassView<'_>) -> Result<ClassScores, DetectError> {
        let (z, k) = view.coordinates();
        let n = view.n();
        // The robust fit runs on an even sample of at most ROBUST_FIT_ROWS rows (FAST-MCD does the
        // same for large n): the estimate is as good, and every record is still scored.
        let fit_rows = super::sample_rows(n, ROBUST_FIT_ROWS);
        let fit: Vec<f64> = fit_rows
            .iter()
            .flat_map(|&i| z[i * k..(i + 1) * k].iter().copied())
            .collect();
        let (mean, robust) = robust_location_scatter(&fit, k, self.params.trim, self.params.iterations);
        // Shrink towards the classical covariance: sparse activations have directions (units that
        // fire for a few records) where the robust core has ~0 variance, and whitening by it would
        // blow ordinary records up. The poison's own share of the classical covariance is scaled
        // down by the same factor, so it still stands out.
        let classical = mean_cov(&z, k, &(0..n).collect::<Vec<_>>()).1;
        let cov: Vec<f64> = robust
            .iter()
            .zip(&classical)
            .map(|(r, c)| (1.0 - SHRINKAGE) * r + SHRINKAGE * c)
            .collect();
        let whitened = whiten(&z, k, &mean, &cov);
        let split = most_separated_split(&whitened.w, k, &whitened.u, &fit_rows).map(|(dir, split)| SplitFit {
            direction: whitened.u[dir * k..(dir + 1) * k].to_vec(),
            split,
        });
        Ok(self.score_with(whitened, k, SpectreFit { mean, cov, split }))
    }

    fn rescore(&self, view: &ClassView<'_>, fit: Option<&serde_json::Value>) -> Result<ClassScores, DetectError> {
        let fit: SpectreFit = super::parse_fit(self.name(), fit)?;
        let (z, k) = view.coordinates();
        let split_k = fit.split.as_ref().map_or(k, |s| s.direction.len());
        if fit.mean.len() != k || fit.cov.len() != k * k || split_k != k {
            return Err(DetectError::Failed {
                detector: self.name(),
                message: "the reference's robust fit does not match the class basis".into(),
            });
        }
        let whitened = whiten(&z, k, &fit.mean, &fit.cov);
        Ok(self.score_with(whitened, k, fit))
    }
}

/// Whitens every record by (mean, cov) and decomposes the second moment about that mean: a
/// poison cluster shifts it along its direction.
fn whiten(z: &[f64], k: usize, mean: &[f64], cov: &[f64]) -> Whitened {
    let n = z.len() / k;
    let whitener = inverse_sqrt(cov, k);
    let mut w = vec![0f64; n * k];
    let mut centred = vec![0f64; k];
    for (row, out) in z.chunks_exact(k).zip(w.chunks_exact_mut(k)) {
        centre_into(row, mean, &mut centred);
        mat_vec_into(&whitener, &centred, out);
    }
    let mut second = vec![0f64; k * k];
    for row in w.chunks_exact(k) {
        for i in 0..k {
            for j in 0..k {
                second[i * k + j] += row[i] * row[j];
            }
        }
    }
    second.iter_mut().for_each(|s| *s /= n.max(1) as f64);
    let (s, u) = eigh_desc(&second, k);
    Whitened { w, s, u }
}

impl Spectre {
    /// QUE scores, the suspect group and the class signal of a whitened class; the same on a
    /// fresh fit and on a stored one.
    fn score_with(&self, whitened: Whitened, k: usize, fit: SpectreFit) -> ClassScores {
        let Whitened { w, s, u } = whitened;
        let n = w.len() / k;
        let top = s[0];
        let weights: Vec<f64> = if top > 1.0 + 1e-6 {
            s.iter()
                .map(|&sj| (self.params.alpha * (sj - 1.0) / (top - 1.0)).exp())
                .collect()
        } else {
            vec![1.0; k]
        };
        let trace: f64 = weights.iter().sum();
        let scores = w
            .chunks_exact(k)
            .map(|row| {
                let tau: f64 = (0..k)
                    .map(|j| weights[j] * dot(&u[j * k..(j + 1) * k], row).powi(2))
                    .sum();
                (tau / trace * k as f64) as f32
            })
            .collect();
        let grouping = fit.split.as_ref().map(|SplitFit { direction, split }| {
            let cluster = w
                .chunks_exact(k)
                .map(|row| (split.minor_posterior(dot(row, direction)) > 0.5) as u8)
                .collect();
            // The minor group is suspect only when it is a separate mode, not a tail.
            Grouping {
                cluster,
                suspect: (split.separation() > CLEAN_SEPARATION).then_some(1),
                closer_to_class: None,
                suspect_is_whole: false,
                ..Grouping::default()
            }
        });
        let (separation, minor_weight) = fit
            .split
            .as_ref()
            .map_or((0.0, 0.0), |s| (s.split.separation(), s.split.weights[1]));
        // Largest eigenvalue of a k-dim sample second moment of n clean Gaussian points, approx:
        // the Marchenko-Pastur edge (1 + sqrt(k/n))^2, plus slack for the robust fit's own noise.
        let clean_bound = (1.0 + (k as f64 / n as f64).sqrt()).powi(2) * 1.15;
        ClassScores {
            scores,
            stats: vec![
                Stat {
                    name: "whitened_top_eigenvalue".into(),
                    value: top,
                },
                Stat {
                    name: "whitened_second_eigenvalue".into(),
                    value: s.get(1).copied().unwrap_or(0.0),
                },
                Stat {
                    name: "split_separation".into(),
                    value: separation,
                },
                Stat {
                    name: "split_minor_weight".into(),
                    value: minor_weight,
                },
                Stat {
                    name: "whitened_top_eigenvalue_clean_bound".into(),
                    value: clean_bound,
                },
            ],
            // On a log scale: classes differ in tail weight multiplicatively, and a log makes the
            // median/MAD comparison across classes stable.
            signal: (n >= MIN_RECORDS_PER_DIM * k)
                .then(|| ClassSignal::new(top.max(1e-12).ln(), clean_bound.ln(), 0.05)),
            grouping,
            record_level: None,
            flagged: Vec::new(),
            fit: super::store_fit(&fit),
        }
    }
}

/// Over the top whitened directions (rows of `u`), the two-group split with the largest Ashman's
/// D whose minor group has a plausible size: (direction index, split).
fn most_separated_split(w: &[f64], k: usize, u: &[f64], rows: &[usize]) -> Option<(usize, Split)> {
    let rows: Vec<usize> = super::sample_rows(rows.len(), SPLIT_FIT_ROWS)
        .into_iter()
        .map(|i| rows[i])
        .collect();
    (0..SPLIT_DIRECTIONS.min(k))
        .filter_map(|dir| {
            let direction = &u[dir * k..(dir + 1) * k];
            let t: Vec<f64> = rows.iter().map(|&i| dot(&w[i * k..(i + 1) * k], direction)).collect();
            let split = fit_two_gaussians(&t)?;
            let minor = split.weights[1];
            let plausible = (MIN_GROUP_SHARE..=MAX_GROUP_SHARE).contains(&minor) && minor * t.len() as f64 >= 3.0;
            plausible.then_some((dir, split))
        })
        .max_by(|a, b| a.1.separation().total_cmp(&b.1.separation()))
}

/// Mean and covariance (`k * k`) of the rows of `z` listed in `rows`.
fn mean_cov(z: &[f64], k: usize, rows: &[usize]) -> (Vec<f64>, Vec<f64>) {
    let m = rows.len().max(1) as f64;
    let mut mean = vec![0f64; k];
    for &r in rows {
        mean.iter_mut().zip(&z[r * k..(r + 1) * k]).for_each(|(a, b)| *a += b);
    }
    mean.iter_mut().for_each(|a| *a /= m);
    let mut cov = vec![0f64; k * k];
    for &r in rows {
        let row = &z[r * k..(r + 1) * k];
        for i in 0..k {
            let di = row[i] - mean[i];
            for j in 0..k {
                cov[i * k + j] += di * (row[j] - mean[j]);
            }
        }
    }
    cov.iter_mut().for_each(|c| *c /= (m - 1.0).max(1.0));
    (mean, cov)
}

/// Squared Mahalanobis distance of every row under (mean, precision).
fn mahalanobis(z: &[f64], k: usize, mean: &[f64], precision: &[f64]) -> Vec<f64> {
    let (mut d, mut pd) = (vec![0f64; k], vec![0f64; k]);
    z.chunks_exact(k)
        .map(|row| {
            centre_into(row, mean, &mut d);
            mat_vec_into(precision, &d, &mut pd);
            d.iter().zip(&pd).map(|(a, b)| a * b).sum()
        })
        .collect()
}

fn centre_into(row: &[f64], mean: &[f64], out: &mut [f64]) {
    out.iter_mut()
        .zip(row.iter().zip(mean))
        .for_each(|(o, (a, b))| *o = a - b);
}

/// `out = m v` for a square row-major `m`; no allocation (this runs once per record per step).
fn mat_vec_into(m: &[f64], v: &[f64], out: &mut [f64]) {
    let k = v.len();
    for (i, o) in out.iter_mut().enumerate() {
        *o = m[i * k..(i + 1) * k].iter().zip(v).map(|(a, b)| a * b).sum();
    }
}

/// `sym^p` for a symmetric positive semi-definite matrix, eigenvalues floored for stability.
fn matrix_power(sym: &[f64], k: usize, p: f64) -> Vec<f64> {
    let (vals, vecs) = eigh_desc(sym, k);
    let floor = vals[0].max(f64::MIN_POSITIVE) * 1e-9;
    let mut out = vec![0f64; k * k];
    for (c, &lam) in vals.iter().enumerate() {
        let f = lam.max(floor).powf(p);
        let v = &vecs[c * k..(c + 1) * k];
        for i in 0..k {
            for j in 0..k {
                out[i * k + j] += f * v[i] * v[j];
            }
        }
    }
    out
}

fn inverse_sqrt(sym: &[f64], k: usize) -> Vec<f64> {
    matrix_power(sym, k, -0.5)
}

/// Concentration steps (C-steps) of FAST-MCD from `keep`: refit on the `h` rows closest under the
/// current fit until the subset stops changing.
fn concentrate(z: &[f64], k: usize, h: usize, mut keep: Vec<usize>, iterations: usize) -> (Vec<f64>, Vec<f64>) {
    let n = z.len() / k;
    let (mut mean, mut cov) = mean_cov(z, k, &keep);
    for _ in 0..iterations {
        let d2 = mahalanobis(z, k, &mean, &matrix_power(&cov, k, -1.0));
        let mut idx: Vec<usize> = (0..n).collect();
        idx.select_nth_unstable_by(h - 1, |&a, &b| d2[a].total_cmp(&d2[b]));
        let mut next = idx[..h].to_vec();
        next.sort_unstable();
        if next == keep {
            break;
        }
        keep = next;
        (mean, cov) = mean_cov(z, k, &keep);
    }
    (mean, cov)
}

/// The `h` rows nearest the coordinate-wise median, each coordinate scaled by its MAD.
fn closest_to_median(z: &[f64], k: usize, h: usize) -> Vec<usize> {
    let n = z.len() / k;
    let (mut centre, mut scale) = (vec![0f64; k], vec![1f64; k]);
    for j in 0..k {
        let col: Vec<f64> = (0..n).map(|i| z[i * k + j]).collect();
        centre[j] = crate::stats::median(&col);
        scale[j] = crate::stats::mad_sigma(&col, centre[j]).max(1e-12);
    }
    let dist: Vec<f64> = z
        .chunks_exact(k)
        .map(|row| (0..k).map(|j| ((row[j] - centre[j]) / scale[j]).powi(2)).sum())
        .collect();
    let mut idx: Vec<usize> = (0..n).collect();
    idx.select_nth_unstable_by(h - 1, |&a, &b| dist[a].total_cmp(&dist[b]));
    let mut keep = idx[..h].to_vec();
    keep.sort_unstable();
    keep
}

fn log_det(sym: &[f64], k: usize) -> f64 {
    eigh_desc(sym, k).0.iter().map(|v| v.max(1e-300).ln()).sum()
}

/// Chi-square quantile by the Wilson-Hilferty approximation (good to ~1% for k >= 3).
fn chi2_quantile(k: usize, z: f64) -> f64 {
    let k = k as f64;
    let a = 2.0 / (9.0 * k);
    k * (1.0 - a + z * a.sqrt()).powi(3).max(0.0)
}

/// Reweighted MCD-style estimate: concentration steps on the `(1 - trim) n` closest rows, a
/// consistency rescale, then one reweighting on rows inside the 97.5% chi-square contour.
fn robust_location_scatter(z: &[f64], k: usize, trim: f64, iterations: usize) -> (Vec<f64>, Vec<f64>) {
    let n = z.len() / k;
    let h = (((1.0 - trim) * n as f64).ceil() as usize).clamp(k + 1, n);
    // Two starts, as deterministic MCD does (Hubert, Rousseeuw, Verdonck 2012): all rows, and the
    // rows closest to the coordinate-wise median in MAD units, which a poison minority cannot
    // drag; the start whose concentration ends with the smaller determinant wins.
    let starts = [(0..n).collect::<Vec<usize>>(), closest_to_median(z, k, h)];
    let (mut mean, mut cov) = starts
        .iter()
        .map(|start| concentrate(z, k, h, start.clone(), iterations))
        .min_by(|a, b| log_det(&a.1, k).total_cmp(&log_det(&b.1, k)))
        .expect("two starts");
    let rescale = |cov: &mut Vec<f64>, mean: &[f64]| {
        let d2 = mahalanobis(z, k, mean, &matrix_power(cov, k, -1.0));
        let factor = crate::stats::median(&d2) / chi2_quantile(k, 0.0);
        if factor.is_finite() && factor > 0.0 {
            cov.iter_mut().for_each(|c| *c *= factor);
        }
        d2.into_iter().map(|d| d / factor).collect::<Vec<f64>>()
    };
    let d2 = rescale(&mut cov, &mean);
    let cutoff = chi2_quantile(k, 1.96);
    let inside: Vec<usize> = (0..n).filter(|&i| d2[i] <= cutoff).collect();
    if inside.len() > k + 1 {
        (mean, cov) = mean_cov(z, k, &inside);
        rescale(&mut cov, &mean);
    }
    (mean, cov)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_must_leave_a_majority() {
        assert_eq!(
            SpectreParams {
                trim: 0.5,
                ..Default::default()
            }
            .check()
            .unwrap_err()
            .key,
            "trim"
        );
    }

    #[test]
    fn chi2_quantiles_are_close() {
        assert!((chi2_quantile(10, 0.0) - 9.342).abs() < 0.05);
        assert!((chi2_quantile(10, 1.96) - 20.48).abs() < 0.4);
    }

    #[test]
    fn the_class_signal_abstains_below_ten_records_per_dimension() {
        let spectre = SpectreParams::default().check().unwrap();
        let k = 4;
        let signal_of = |n: usize| {
            let z: Vec<f64> = (0..n * k).map(|i| ((i * 7919) % 97) as f64 / 97.0 - 0.5).collect();
            let (mean, cov) = mean_cov(&z, k, &(0..n).collect::<Vec<_>>());
            let whitened = whiten(&z, k, &mean, &cov);
            let scores = spectre.score_with(whitened, k, SpectreFit { mean, cov, split: None });
            assert_eq!(scores.scores.len(), n, "every record is scored");
            scores.signal
        };
        assert!(signal_of(39).is_none());
        assert!(signal_of(40).is_some());
    }

    #[test]
    fn robust_estimate_ignores_a_far_cluster() {
        // 95 points spread on a 2-d grid around 0, 5 points at (50, 50).
        let mut z = Vec::new();
        for i in 0..95 {
            z.extend([(i % 10) as f64 - 4.5, (i / 10) as f64 - 4.5]);
        }
        for _ in 0..5 {
            z.extend([50.0, 50.0]);
        }
        let (mean, _) = robust_location_scatter(&z, 2, 0.25, 20);
        assert!(mean[0].abs() < 1.0 && mean[1].abs() < 1.0, "{mean:?}");
    }
}
