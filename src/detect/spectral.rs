//! Spectral signatures (Tran, Li, Madry 2018, arXiv:1811.00636): per class, the score of a record is
//! |<x - mean, v>| with v the top right singular vector of the centred class matrix.
//!
//! ART projects the uncentred x, which mostly measures the distance of the class mean from the
//! origin; we centre, as the paper does. The eigen-gap is reported but not used to pick classes:
//! natural anisotropy varies too much between classes (see `spectre` for the class signal).

use serde::{Deserialize, Serialize};

use super::{ClassScores, ClassView, DetectError, Detector, ParamError, Stat};

/// `[detect.spectral]` in a pipeline file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct SpectralParams {
    /// Top singular vectors to project on (score = norm of the projection); 1 is the paper's.
    pub top_k: usize,
}

impl Default for SpectralParams {
    fn default() -> Self {
        SpectralParams { top_k: 1 }
    }
}

impl SpectralParams {
    pub fn check(self) -> Result<Spectral, ParamError> {
        if self.top_k == 0 {
            return Err(ParamError::new("top-k", "must be at least 1", self.top_k));
        }
        Ok(Spectral { params: self })
    }
}

/// The checked detector; made only by [`SpectralParams::check`].
#[derive(Clone, Debug)]
pub struct Spectral {
    params: SpectralParams,
}

impl Detector for Spectral {
    fn name(&self) -> &'static str {
        "spectral"
    }

    fn score_class(&self, view: &ClassView<'_>) -> Result<ClassScores, DetectError> {
        let basis = view.basis;
        let top = self.params.top_k.min(basis.k);
        // The basis already holds the centred coordinates on the top principal directions.
        let scores = basis
            .projected
            .chunks_exact(basis.k)
            .map(|row| row[..top].iter().map(|v| v * v).sum::<f32>().sqrt())
            .collect();
        let ev = &basis.eigenvalues;
        let gap = if ev.len() > 1 && ev[1] > 0.0 {
            ev[0] / ev[1]
        } else {
            0.0
        };
        let total = basis.total_variance;
        Ok(ClassScores {
            scores,
            stats: vec![
                Stat {
                    name: "spectral_gap".into(),
                    value: gap,
                },
                Stat {
                    name: "top_variance_share".into(),
                    value: if total > 0.0 { ev[0] / total } else { 0.0 },
                },
            ],
            signal: None,
            grouping: None,
            record_level: None,
            flagged: Vec::new(),
            fit: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_cannot_be_zero() {
        assert_eq!(SpectralParams { top_k: 0 }.check().unwrap_err().key, "top-k");
    }
}
