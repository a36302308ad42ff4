//! Atomic outputs: every file is written to a temp file in the target directory, synced, then
//! renamed over the old one, so a failed or killed run leaves the previous outputs whole.
//!
//! Two costs of that are kept off the scan's critical path (measured at 1M x 256, a 1 GB
//! `clean.parquet`): the final sync waited 1.4 s for the whole file to reach the disk, and the
//! rename over last night's file took 0.8 s, dropping the old file's cached pages and blocks.
//! Large files start their write-back while they are being written ([`WritebackFile`]), and a
//! replaced file is released on a background thread ([`Retired`]).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use tempfile::NamedTempFile;

use super::read::DEFAULT_BATCH_ROWS;
use super::{FileInfo, InputError, OutputError};

/// Rows per row group in the files we write.
pub const OUTPUT_ROW_GROUP_ROWS: usize = 65_536;

/// Bytes written between two write-back requests of a [`WritebackFile`].
const WRITEBACK_CHUNK: u64 = 8 << 20;

/// A temp file that asks the kernel to start writing each 8 MiB to disk as soon as it is
/// written (Linux `sync_file_range(SYNC_FILE_RANGE_WRITE)`, which returns without waiting, as
/// RocksDB's `bytes_per_sync` does), so the sync at commit finds little left to write: the disk
/// works while the scan encodes the next row groups. Elsewhere it is a plain file.
pub(crate) struct WritebackFile {
    temp: NamedTempFile,
    written: u64,
    requested: u64,
}

impl WritebackFile {
    fn new(temp: NamedTempFile) -> WritebackFile {
        WritebackFile {
            temp,
            written: 0,
            requested: 0,
        }
    }

    #[cfg(target_os = "linux")]
    fn start_writeback(&mut self) {
        use std::os::fd::AsRawFd;
        let (offset, len) = (self.requested, self.written - self.requested);
        // SAFETY: a plain syscall on a file descriptor we own; it reads no memory of ours. It is
        // only a hint: on failure the sync at commit writes everything, as without it.
        unsafe {
            libc::sync_file_range(
                self.temp.as_file().as_raw_fd(),
                offset as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
        self.requested = self.written;
    }

    #[cfg(not(target_os = "linux"))]
    fn start_writeback(&mut self) {
        self.requested = self.written;
    }
}

impl Write for WritebackFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.temp.write(buf)?;
        self.written += n as u64;
        if self.written - self.requested >= WRITEBACK_CHUNK {
            self.start_writeback();
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.temp.flush()
    }
}

/// Files replaced by a commit, still open so that their space and cached pages are released
/// when these handles close, not inside the rename. Dropping a `Retired` closes them on a
/// background thread; should the process end first, the kernel closes them at exit, so nothing
/// is left on disk either way.
#[derive(Default)]
pub struct Retired(Vec<File>);

impl Retired {
    pub fn extend(&mut self, mut other: Retired) {
        self.0.append(&mut other.0);
    }
}

impl Drop for Retired {
    fn drop(&mut self) {
        let files = std::mem::take(&mut self.0);
        if !files.is_empty() {
            drop_in_background("datavet-retire", files);
        }
    }
}

/// Drops `value` on a thread of its own named `name`, for what takes the kernel a while to free
/// (a replaced gigabyte file, a gigabyte of memory) while the caller goes on. Should no thread be
/// had, the closure and `value` with it are dropped here instead.
pub fn drop_in_background<T: Send + 'static>(name: &str, value: T) {
    let _ = std::thread::Builder::new().name(name.into()).spawn(move || drop(value));
}

/// A file that appears at `path` only when [`AtomicFile::commit`] is called.
pub struct AtomicFile {
    path: PathBuf,
    temp: NamedTempFile,
}

impl AtomicFile {
    pub fn create(path: &Path) -> Result<AtomicFile, OutputError> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let temp = tempfile::Builder::new()
            .prefix(".datavet-")
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(|source| OutputError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(AtomicFile {
            path: path.to_path_buf(),
            temp,
        })
    }

    pub fn writer(&mut self) -> &mut File {
        self.temp.as_file_mut()
    }

    /// Syncs and renames into place.
    pub fn commit(self) -> Result<(), OutputError> {
        // Small files: the replaced one is closed here, not worth a thread.
        let mut replaced = self.commit_retiring()?;
        replaced.0.clear();
        Ok(())
    }

    /// [`AtomicFile::commit`], handing back the file it replaced (see [`Retired`]).
    pub fn commit_retiring(self) -> Result<Retired, OutputError> {
        let io = |source| OutputError::Io {
            path: self.path.clone(),
            source,
        };
        // tempfile creates 0600; outputs are ordinary files that others in the group may read.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            self.temp
                .as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644))
                .map_err(io)?;
        }
        self.temp.as_file().sync_all().map_err(io)?;
        // Held open across the rename, the old file is not freed by it (see `Retired`). Unix
        // only: elsewhere an open file may block the rename.
        let replaced = if cfg!(unix) { File::open(&self.path).ok() } else { None };
        self.temp.persist(&self.path).map_err(|e| OutputError::Io {
            path: self.path.clone(),
            source: e.error,
        })?;
        Ok(Retired(replaced.into_iter().collect()))
    }

    /// Writes `value` as JSON atomically: `pretty` for the files people open (reports), compact
    /// for machine state (stage results, references).
    pub fn write_json(path: &Path, value: &impl serde::Serialize, pretty: bool) -> Result<(), OutputError> {
        let bytes = if pretty {
            serde_json::to_vec_pretty(value)
        } else {
            serde_json::to_vec(value)
        };
        let bytes = bytes.map_err(|e| OutputError::Other {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        AtomicFile::write_all(path, &bytes)
    }

    /// Writes `bytes` atomically in one go.
    pub fn write_all(path: &Path, bytes: &[u8]) -> Result<(), OutputError> {
        let mut f = AtomicFile::create(path)?;
        f.writer().write_all(bytes).map_err(|source| OutputError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        f.commit()
    }
}

/// A Parquet file written batch by batch to a temp file: [`ParquetSink::close`] finishes the
/// footer (the file can then be read back and checked), [`ParquetSink::commit`] renames it into place.
pub struct ParquetSink {
    path: PathBuf,
    writer: Option<ArrowWriter<WritebackFile>>,
    closed: Option<NamedTempFile>,
}

impl ParquetSink {
    /// `plain_columns` (top-level names) are written without dictionary encoding: float vectors and
    /// per-record values gain nothing from it, and the writer hashes every value trying.
    pub fn create(path: &Path, schema: SchemaRef, plain_columns: &[&str]) -> Result<ParquetSink, OutputError> {
        let tmp = AtomicFile::create(path)?;
        // Row groups are buffered in memory until flushed: cap them so writing a 1M-row file does
        // not hold the whole file (the default is 1M rows).
        let mut props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(OUTPUT_ROW_GROUP_ROWS));
        for c in plain_columns {
            // The column itself, or its leaf if it is a list; leaf paths differ by writer
            // convention, and disabling a path that does not exist is harmless. (A path is its
            // parts: `ColumnPath::from("a.b")` is one part named "a.b", which matches nothing.)
            for leaf in [
                &[][..],
                &["list", "element"],
                &["list", "item"],
                &["element"],
                &["item"],
            ] {
                let parts = std::iter::once(*c)
                    .chain(leaf.iter().copied())
                    .map(String::from)
                    .collect();
                props = props.set_column_dictionary_enabled(ColumnPath::new(parts), false);
            }
        }
        let writer =
            ArrowWriter::try_new(WritebackFile::new(tmp.temp), schema, Some(props.build())).map_err(|source| {
                OutputError::Parquet {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
        Ok(ParquetSink {
            path: path.to_path_buf(),
            writer: Some(writer),
            closed: None,
        })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), OutputError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let writer = self.writer.as_mut().expect("write before close");
        writer.write(batch).map_err(|source| OutputError::Parquet {
            path: self.path.clone(),
            source,
        })
    }

    /// Ends the current row group.
    pub fn flush(&mut self) -> Result<(), OutputError> {
        let writer = self.writer.as_mut().expect("flush before close");
        writer.flush().map_err(|source| OutputError::Parquet {
            path: self.path.clone(),
            source,
        })
    }

    /// Writes the footer; the file stays at its temp path.
    pub fn close(mut self) -> Result<ParquetSink, OutputError> {
        if let Some(writer) = self.writer.take() {
            let temp = writer.into_inner().map_err(|source| OutputError::Parquet {
                path: self.path.clone(),
                source,
            })?;
            self.closed = Some(temp.temp);
        }
        Ok(self)
    }

    /// Where the file will be once committed.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the closed file is until it is committed.
    pub fn temp_path(&self) -> &Path {
        self.closed.as_ref().expect("temp_path after close").path()
    }

    /// Syncs and renames the closed file into place.
    pub fn commit(self) -> Result<(), OutputError> {
        let mut replaced = self.commit_retiring()?;
        replaced.0.clear();
        Ok(())
    }

    /// [`ParquetSink::commit`], handing back the file it replaced (see [`Retired`]).
    pub fn commit_retiring(self) -> Result<Retired, OutputError> {
        let sink = self.close()?;
        let temp = sink.closed.expect("closed above");
        AtomicFile { path: sink.path, temp }.commit_retiring()
    }
}

/// Streams every column of every input file, batch by batch, in input order. `visit` gets the
/// batch and the global row of its first record. Pass-through columns are decoded as they are,
/// never converted, so they are written back with the same values.
pub fn for_each_batch(
    files: &[FileInfo],
    mut visit: impl FnMut(&RecordBatch, usize) -> Result<(), crate::Error>,
) -> Result<(), crate::Error> {
    // Decoding runs on its own thread, a few batches ahead, so it overlaps with the caller's
    // filtering and encoding: the two halves of the write stage take about as long each.
    let (sender, receiver) = std::sync::mpsc::sync_channel::<Result<RecordBatch, InputError>>(4);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            for info in files {
                let batches = match open_batches(info) {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = sender.send(Err(e));
                        return;
                    }
                };
                for batch in batches {
                    let batch = batch.map_err(|e| InputError::Corrupt {
                        path: info.path.clone(),
                        message: e.to_string(),
                    });
                    let failed = batch.is_err();
                    // A closed channel means the consumer failed and stopped: stop too.
                    if sender.send(batch).is_err() || failed {
                        return;
                    }
                }
            }
        });
        let mut global = 0usize;
        for batch in receiver {
            let batch = batch?;
            visit(&batch, global)?;
            global += batch.num_rows();
        }
        Ok(())
    })
}

fn open_batches(info: &FileInfo) -> Result<parquet::arrow::arrow_reader::ParquetRecordBatchReader, InputError> {
    let file = File::open(&info.path).map_err(|source| InputError::Io {
        path: info.path.clone(),
        source,
    })?;
    ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.with_batch_size(DEFAULT_BATCH_ROWS).build())
        .map_err(|cause| InputError::NotParquet {
            path: info.path.clone(),
            cause,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn atomic_file_replaces_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        AtomicFile::write_all(&path, b"old").unwrap();
        let mut f = AtomicFile::create(&path).unwrap();
        f.writer().write_all(b"new").unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"old",
            "uncommitted write must not be visible"
        );
        drop(f); // a failed run: the temp file is removed, the old output stays
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1);
    }

    /// A large Parquet output replacing an older one: the new bytes are in place, the replaced
    /// file's handle outlives the rename (released later), and no temp file is left.
    #[test]
    fn parquet_sink_replaces_a_large_file_and_leaves_nothing_behind() {
        use arrow_array::{ArrayRef, Float32Array, Int64Array};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clean.parquet");
        std::fs::write(&path, vec![7u8; 3 * WRITEBACK_CHUNK as usize]).unwrap();
        // Over 8 MiB of values: write-back is requested while writing.
        let n = 3_000_000;
        let batch = RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from_iter_values(0..n)) as ArrayRef),
            (
                "v",
                Arc::new(Float32Array::from_iter_values((0..n).map(|i| i as f32))) as ArrayRef,
            ),
        ])
        .unwrap();
        let mut sink = ParquetSink::create(&path, batch.schema(), &["id", "v"]).unwrap();
        sink.write(&batch).unwrap();
        let replaced = sink.commit_retiring().unwrap();
        assert_eq!(replaced.0.len(), 1, "the old file is held, not freed by the rename");
        drop(replaced);
        let back: usize = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap())
            .unwrap()
            .build()
            .unwrap()
            .map(|b| b.unwrap().num_rows())
            .sum();
        assert_eq!(back, n as usize);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["clean.parquet"]);
    }

    /// `plain_columns` turn off dictionary encoding for flat columns and for list leaves (it
    /// used to name leaves as one dotted part, which matched no column), and only for them.
    #[test]
    fn plain_columns_are_written_without_a_dictionary() {
        use arrow_array::builder::{Float32Builder, ListBuilder};
        use arrow_array::{ArrayRef, Float32Array, Int64Array};
        let mut vectors = ListBuilder::new(Float32Builder::new());
        for i in 0..100 {
            vectors.values().append_slice(&[i as f32, 1.0]);
            vectors.append(true);
        }
        let batch = RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from_iter_values(0..100)) as ArrayRef),
            (
                "score",
                Arc::new(Float32Array::from_iter_values((0..100).map(|i| i as f32))) as ArrayRef,
            ),
            ("embedding", Arc::new(vectors.finish()) as ArrayRef),
        ])
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.parquet");
        let mut sink = ParquetSink::create(&path, batch.schema(), &["score", "embedding"]).unwrap();
        sink.write(&batch).unwrap();
        sink.commit().unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap()).unwrap();
        let group = reader.metadata().row_group(0).clone();
        let dictionary: Vec<(String, bool)> = group
            .columns()
            .iter()
            .map(|c| (c.column_path().string(), c.dictionary_page_offset().is_some()))
            .collect();
        assert_eq!(
            dictionary,
            [
                ("id".to_string(), true),
                ("score".to_string(), false),
                ("embedding.list.item".to_string(), false)
            ]
        );
    }
}
