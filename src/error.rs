//! The crate's error: one variant per stage, so callers can match on where a scan failed.

use crate::detect::ParamError;
use crate::io::{InputError, OutputError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("invalid setting: {0}")]
    Param(#[from] ParamError),
    #[error(transparent)]
    Review(#[from] crate::quarantine::review::ReviewError),
    #[error(transparent)]
    Stage(#[from] crate::stages::StageError),
    #[error(transparent)]
    Reference(#[from] crate::reference::ReferenceError),
    #[error("row conservation check failed: {0}")]
    Conservation(String),
    /// The outputs were published, but what comes after them failed.
    #[error("the outputs in {out} are complete, but {what} failed: {source}")]
    AfterPublish {
        what: &'static str,
        out: std::path::PathBuf,
        source: Box<Error>,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
