//! Progress of long stages, reported by row counts. The library never prints: the CLI implements
//! [`Progress`] with progress bars on a terminal, and everything else passes [`NoProgress`].

/// Receives progress; every method has a do-nothing default. Called from worker threads.
pub trait Progress: Sync {
    /// A stage starts that will process `total_rows` rows.
    fn start(&self, _stage: &'static str, _total_rows: u64) {}
    /// `rows` more rows of the current stage are done.
    fn advance(&self, _rows: u64) {}
    /// The current stage is done.
    fn finish(&self) {}
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {}
