//! datavet finds poisoned records in machine-learning training data.
//!
//! A scan reads Parquet files (an id, a label and an activation vector per record), groups the
//! records by class, computes per-class statistics once (mean, covariance, top principal
//! components), runs detectors on every class (activation clustering, spectral signatures, a
//! SPECTRE-style robust score), decides which classes look attacked and which of their records
//! to quarantine, and writes `clean.parquet` + `quarantine.parquet` (every input row exactly once,
//! values unchanged), `scores.parquet` and `report.json`.
//!
//! Data flows one way: `io -> detect -> score -> quarantine -> report`, called in order by
//! `pipeline`; `cli` parses flags and calls `pipeline`.

// Numeric kernels index several parallel arrays at once; iterator chains would hide that.
#![allow(clippy::needless_range_loop)]

pub mod cli;
pub mod codec;
pub mod config;
pub mod detect;
pub mod error;
pub mod influence;
pub mod io;
pub mod pipeline;
pub mod progress;
pub mod quarantine;
pub mod reference;
pub mod report;
pub mod score;
pub mod stages;
pub mod stats;
#[doc(hidden)]
pub mod testkit;

pub use error::{Error, Result};
