//! Atomic outputs: every file is written to a temp file in the target directory, synced, then
//! renamed over the old one, so a failed or killed run leaves the previous outputs whole.

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
        self.temp.persist(&self.path).map_err(|e| OutputError::Io {
            path: self.path.clone(),
            source: e.error,
        })?;
        Ok(())
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
    writer: Option<ArrowWriter<NamedTempFile>>,
    closed: Option<NamedTempFile>,
}

impl ParquetSink {
    /// `plain_columns` are written without dictionary encoding (float vectors gain nothing from it).
    pub fn create(path: &Path, schema: SchemaRef, plain_columns: &[&str]) -> Result<ParquetSink, OutputError> {
        let tmp = AtomicFile::create(path)?;
        // Row groups are buffered in memory until flushed: cap them so writing a 1M-row file does
        // not hold the whole file (the default is 1M rows).
        let mut props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(OUTPUT_ROW_GROUP_ROWS));
        for c in plain_columns {
            // Leaf paths differ by writer convention; disabling a path that does not exist is harmless.
            for leaf in ["list.element", "list.item", "element", "item"] {
                props = props.set_column_dictionary_enabled(ColumnPath::from(format!("{c}.{leaf}")), false);
            }
        }
        let writer =
            ArrowWriter::try_new(tmp.temp, schema, Some(props.build())).map_err(|source| OutputError::Parquet {
                path: path.to_path_buf(),
                source,
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
            self.closed = Some(temp);
        }
        Ok(self)
    }

    /// Where the closed file is until it is committed.
    pub fn temp_path(&self) -> &Path {
        self.closed.as_ref().expect("temp_path after close").path()
    }

    /// Syncs and renames the closed file into place.
    pub fn commit(self) -> Result<(), OutputError> {
        let sink = self.close()?;
        let temp = sink.closed.expect("closed above");
        AtomicFile { path: sink.path, temp }.commit()
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
}
