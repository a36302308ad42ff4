//! Small robust statistics shared by detectors, the decision and the evaluation.

/// Whether a vector has a non-zero value: a ReLU layer maps every input it discards to the
/// all-zero vector, whatever its class, so such a vector says nothing about where its record sits.
pub fn is_live(vector: &[f32]) -> bool {
    vector.iter().any(|&v| v != 0.0)
}

/// All-zero vectors among the row-major `x` (`dim` values each). Cheap on ReLU layers: a live
/// row's scan stops at its first non-zero value.
pub fn zero_vectors(x: &[f32], dim: usize) -> usize {
    x.chunks_exact(dim.max(1)).filter(|row| !is_live(row)).count()
}

/// Inner product of two equal-length f64 vectors.
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Mean of the `values` whose index `keep` accepts; `None` when it accepts none.
pub fn mean_where(values: &[f32], keep: impl Fn(usize) -> bool) -> Option<f64> {
    let (sum, count) = values
        .iter()
        .enumerate()
        .filter(|&(i, _)| keep(i))
        .fold((0.0, 0usize), |(sum, count), (_, &v)| (sum + v as f64, count + 1));
    (count > 0).then(|| sum / count as f64)
}

/// Median of `values` (NaN-free); 0 for an empty slice.
pub fn median(values: &[f64]) -> f64 {
    quantile(values, 0.5)
}

/// Linear-interpolated quantile `q` in [0, 1]; 0 for an empty slice.
///
/// By selection, not sorting: the two order statistics it needs cost O(n), where a sort of a
/// class's million scores took most of a median's time (the scan takes dozens of them).
pub fn quantile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    let (_, &mut low, above) = v.select_nth_unstable_by(lo, f64::total_cmp);
    // The next order statistic is the smallest of those above the lo-th.
    let high = if hi > lo {
        above.iter().copied().min_by(f64::total_cmp).unwrap_or(low)
    } else {
        low
    };
    low + (high - low) * (pos - lo as f64)
}

/// Median absolute deviation, scaled by 1.4826 so it estimates sigma for Gaussian data.
pub fn mad_sigma(values: &[f64], centre: f64) -> f64 {
    let dev: Vec<f64> = values.iter().map(|v| (v - centre).abs()).collect();
    1.4826 * median(&dev)
}

/// Robust z-scores: (v - median) / max(MAD sigma, floor).
pub fn robust_z(values: &[f64], floor: f64) -> Vec<f64> {
    let m = median(values);
    let s = mad_sigma(values, m).max(floor).max(f64::MIN_POSITIVE);
    values.iter().map(|v| (v - m) / s).collect()
}

/// Area under the ROC curve of `scores` for `positive` labels (ties count half). `None` when one
/// of the two classes is empty.
pub fn auroc(scores: &[f64], positive: &[bool]) -> Option<f64> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let (mut rank_sum, mut n_pos) = (0.0, 0usize);
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            if positive[k] {
                rank_sum += avg_rank;
                n_pos += 1;
            }
        }
        i = j + 1;
    }
    let n_neg = scores.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    Some((rank_sum - (n_pos * (n_pos + 1)) as f64 / 2.0) / (n_pos * n_neg) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_vectors_are_rows_of_zeros_only() {
        // Rows: zero, live at its last value, zero, negative zero (still zero), live at its first.
        let x = [
            0.0, 0.0, 0.0, 0.0, 0.0, 1e-30, 0.0, 0.0, 0.0, -0.0, 0.0, 0.0, 2.0, 0.0, 0.0,
        ];
        assert_eq!(zero_vectors(&x, 3), 3);
        assert_eq!(zero_vectors(&[], 3), 0);
    }

    #[test]
    fn quantiles_and_mad() {
        let v = [1.0, 2.0, 3.0, 4.0, 100.0];
        assert_eq!(median(&v), 3.0);
        assert_eq!(quantile(&v, 0.25), 2.0);
        assert!((mad_sigma(&v, 3.0) - 1.4826).abs() < 1e-12);
        assert!(robust_z(&v, 0.0)[4] > 60.0);
    }

    /// Selection gives what a full sort gives, for every quantile, with ties and even lengths.
    #[test]
    fn quantile_by_selection_matches_sorting() {
        let mut state = 7u64;
        for n in [1usize, 2, 3, 10, 101, 1000] {
            let values: Vec<f64> = (0..n)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((state >> 40) % 50) as f64 - 10.5 // many ties
                })
                .collect();
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            for q in [0.0, 0.1, 0.25, 0.5, 0.77, 0.9, 1.0] {
                let pos = q * (n - 1) as f64;
                let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
                let want = sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64);
                assert_eq!(quantile(&values, q), want, "n {n}, q {q}");
            }
        }
    }

    #[test]
    fn auroc_perfect_random_and_ties() {
        assert_eq!(auroc(&[0.1, 0.2, 0.9, 0.8], &[false, false, true, true]), Some(1.0));
        assert_eq!(auroc(&[0.5, 0.5], &[false, true]), Some(0.5));
        assert_eq!(auroc(&[0.9, 0.1], &[false, true]), Some(0.0));
        assert_eq!(auroc(&[0.1], &[true]), None);
    }
}
