//! A two-component 1-D Gaussian mixture fitted by EM, used to ask whether records along one
//! direction form two groups (a poison cluster) or one heavy-tailed group.
//!
//! Ashman's D = sqrt(2) |mu1 - mu2| / sqrt(s1^2 + s2^2) measures the split: D > 2 means two
//! clearly separated modes (Ashman, Bird, Zepf 1994). A unimodal heavy tail is fitted by two
//! components with nearly the same mean, so its D stays small; that is what tells a backdoor
//! cluster from the long tails of ReLU activations.

use crate::stats::{mad_sigma, median, quantile};

/// Ashman's D above which two components are clearly separated modes (Ashman et al. 1994).
pub const CLEAN_SEPARATION: f64 = 2.0;

/// The fitted mixture; component 1 is the minor one (weight <= 0.5).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Split {
    pub means: [f64; 2],
    pub sds: [f64; 2],
    pub weights: [f64; 2],
    pub log_likelihood: f64,
}

impl Split {
    /// Ashman's D between the two components.
    pub fn separation(&self) -> f64 {
        std::f64::consts::SQRT_2 * (self.means[0] - self.means[1]).abs()
            / (self.sds[0].powi(2) + self.sds[1].powi(2))
                .sqrt()
                .max(f64::MIN_POSITIVE)
    }

    /// Posterior probability that `t` belongs to the minor component.
    pub fn minor_posterior(&self, t: f64) -> f64 {
        let (a, b) = (
            self.weights[0] * density(t, self.means[0], self.sds[0]),
            self.weights[1] * density(t, self.means[1], self.sds[1]),
        );
        if a + b > 0.0 {
            b / (a + b)
        } else {
            ((t - self.means[1]).abs() < (t - self.means[0]).abs()) as u8 as f64
        }
    }
}

fn density(t: f64, mean: f64, sd: f64) -> f64 {
    let z = (t - mean) / sd;
    (-0.5 * z * z).exp() / (sd * (2.0 * std::f64::consts::PI).sqrt())
}

/// Fits the mixture to `t` from three starts (a tail on either side, or two halves) and keeps the
/// most likely fit. `None` for fewer than 10 values or no spread.
pub fn fit_two_gaussians(t: &[f64]) -> Option<Split> {
    if t.len() < 10 {
        return None;
    }
    let m = median(t);
    let s = mad_sigma(t, m).max(1e-9 * (1.0 + m.abs()));
    let floor = s * 1e-3;
    let starts = [
        ([m, quantile(t, 0.98)], [0.95, 0.05]),
        ([m, quantile(t, 0.02)], [0.95, 0.05]),
        ([quantile(t, 0.25), quantile(t, 0.75)], [0.5, 0.5]),
    ];
    starts
        .iter()
        .map(|&(means, weights)| em(t, means, [s, s], weights, floor))
        .max_by(|a, b| a.log_likelihood.total_cmp(&b.log_likelihood))
        .map(|mut split| {
            if split.weights[0] < split.weights[1] {
                split.means.swap(0, 1);
                split.sds.swap(0, 1);
                split.weights.swap(0, 1);
            }
            split
        })
}

fn em(t: &[f64], mut means: [f64; 2], mut sds: [f64; 2], mut weights: [f64; 2], floor: f64) -> Split {
    let n = t.len() as f64;
    let mut log_likelihood = f64::NEG_INFINITY;
    for _ in 0..100 {
        let (mut sum_r, mut sum_rt, mut sum_rtt) = ([0f64; 2], [0f64; 2], [0f64; 2]);
        let mut ll = 0.0;
        for &x in t {
            let p = [
                weights[0] * density(x, means[0], sds[0]),
                weights[1] * density(x, means[1], sds[1]),
            ];
            let total = (p[0] + p[1]).max(1e-300);
            ll += total.ln();
            for c in 0..2 {
                let r = p[c] / total;
                sum_r[c] += r;
                sum_rt[c] += r * x;
                sum_rtt[c] += r * x * x;
            }
        }
        for c in 0..2 {
            let w = sum_r[c].max(1e-12);
            weights[c] = w / n;
            means[c] = sum_rt[c] / w;
            sds[c] = (sum_rtt[c] / w - means[c] * means[c]).max(0.0).sqrt().max(floor);
        }
        let done = (ll - log_likelihood).abs() < 1e-8 * n;
        log_likelihood = ll;
        if done {
            break;
        }
    }
    Split {
        means,
        sds,
        weights,
        log_likelihood,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-normal values (sum of uniforms), enough for these checks.
    fn normals(n: usize, seed: u64) -> Vec<f64> {
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                (0..12)
                    .map(|_| {
                        state = state
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        (state >> 11) as f64 / (1u64 << 53) as f64
                    })
                    .sum::<f64>()
                    - 6.0
            })
            .collect()
    }

    #[test]
    fn finds_a_small_separated_cluster() {
        let mut t = normals(950, 1);
        t.extend(normals(50, 2).iter().map(|v| 6.0 + 0.5 * v));
        let split = fit_two_gaussians(&t).unwrap();
        assert!((split.weights[1] - 0.05).abs() < 0.01, "{split:?}");
        assert!(split.separation() > 4.0);
        assert!(split.minor_posterior(6.0) > 0.99 && split.minor_posterior(0.0) < 0.01);
    }

    #[test]
    fn a_heavy_tail_is_not_two_groups() {
        // A scale mixture: 80% sd 1, 20% sd 3, same centre.
        let mut t = normals(800, 3);
        t.extend(normals(200, 4).iter().map(|v| 3.0 * v));
        assert!(fit_two_gaussians(&t).unwrap().separation() < 1.5);
    }
}
