//! Atomic outputs: every file is written to a temp file in the target directory, synced, then
//! renamed over the old one, so a failed or killed run leaves the previous outputs whole.
//!
//! Two costs of that are kept off the scan's critical path (measured at 1M x 256, a 1 GB
//! `clean.parquet`): the final sync waited 1.4 s for the whole file to reach the disk, and the
//! rename over last night's file took 0.8 s, dropping the old file's cached pages and blocks.
//! Large files start their write-back while they are being written ([`WritebackFile`]), and a
//! replaced file is released on a background thread ([`Retired`]).

use std::fs::File;
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::arrow_writer::{ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves};
use parquet::basic::Compression;
use parquet::column::writer::ColumnCloseResult;
use parquet::file::metadata::ParquetMetaData;
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{ChunkReader, Length};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::{ColumnPath, SchemaDescPtr, SchemaDescriptor};
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
    /// Small writes gathered into one system call (the writer hands over 8 KiB at a time).
    buffer: Vec<u8>,
    written: u64,
    requested: u64,
}

/// Bytes a [`WritebackFile`] gathers before writing them.
const WRITE_BUFFER_BYTES: usize = 1 << 20;

impl WritebackFile {
    fn new(temp: NamedTempFile) -> WritebackFile {
        WritebackFile {
            temp,
            buffer: Vec::with_capacity(WRITE_BUFFER_BYTES),
            written: 0,
            requested: 0,
        }
    }

    /// The temp file, everything written to it.
    fn into_temp(mut self) -> std::io::Result<NamedTempFile> {
        self.flush()?;
        Ok(self.temp)
    }

    fn write_out(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.temp.write_all(bytes)?;
        self.written += bytes.len() as u64;
        if self.written - self.requested >= WRITEBACK_CHUNK {
            self.start_writeback();
        }
        Ok(())
    }

    fn write_buffer(&mut self) -> std::io::Result<()> {
        let buffer = std::mem::take(&mut self.buffer);
        let result = self.write_out(&buffer);
        self.buffer = buffer;
        self.buffer.clear();
        result
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
        if self.buffer.len() + buf.len() > WRITE_BUFFER_BYTES {
            self.write_buffer()?;
        }
        if buf.len() >= WRITE_BUFFER_BYTES {
            self.write_out(buf)?;
        } else {
            self.buffer.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.write_buffer()?;
        self.temp.flush()
    }
}

/// Bytes per read when copying row groups: the copy goes through 8 KiB steps, which should
/// not each be a system call.
const COPY_READ_BYTES: usize = 1 << 20;

/// An input file read for copying its column chunks ([`ParquetSink::append_row_group`]).
struct CopySource<'a>(&'a File);

impl Length for CopySource<'_> {
    fn len(&self) -> u64 {
        self.0.len()
    }
}

impl ChunkReader for CopySource<'_> {
    type T = std::io::BufReader<File>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        let mut file = self.0.try_clone()?;
        file.seek(std::io::SeekFrom::Start(start))?;
        Ok(std::io::BufReader::with_capacity(COPY_READ_BYTES, file))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<bytes::Bytes> {
        self.0.get_bytes(start, length)
    }
}

/// Files replaced by a commit, still open so that their space and cached pages are released
/// when these handles close, not inside the rename. Dropping a `Retired` closes them on a
/// background thread; should the process end first, the kernel closes them at exit, so nothing
/// is left on disk either way.
#[derive(Default)]
pub struct Retired(Vec<File>);

impl Drop for Retired {
    fn drop(&mut self) {
        let files = std::mem::take(&mut self.0);
        if !files.is_empty() {
            drop_in_background("datavet-retire", files);
        }
    }
}

/// Held while a run writes into an output directory: an advisory lock on the directory itself
/// (no lock file to leave behind), released when dropped or when the process ends, however it
/// ends. Two nightly jobs that overlap on one `--out` would otherwise interleave their outputs
/// and their references.
pub struct OutputDirLock {
    _held: Option<File>,
    /// The folders this run created for the directory, innermost first: removed again when the
    /// run leaves the directory empty (an input error), so a mistyped --out leaves nothing
    /// behind. A run that wrote anything keeps them all (`a/../b` needs `a`).
    created: Vec<PathBuf>,
    dir: PathBuf,
}

/// Removes `folders` (innermost first) where they are empty; one holding anything is left alone.
fn remove_empty_folders(folders: &[PathBuf]) {
    for folder in folders {
        let _ = std::fs::remove_dir(folder);
    }
}

impl Drop for OutputDirLock {
    fn drop(&mut self) {
        if std::fs::read_dir(&self.dir).is_ok_and(|mut entries| entries.next().is_none()) {
            remove_empty_folders(&self.created);
        }
    }
}

/// Creates `dir` if needed and locks it for this run, or fails naming the directory if another
/// run holds it. Where directories cannot be opened or locked (not Unix, some network file
/// systems), the run goes on unlocked. With the lock, it first finishes a publication a killed
/// run left half done ([`complete_publication`]; an error when that cannot be finished) and
/// removes the temp files killed runs left.
pub fn lock_output_dir(dir: &Path) -> Result<OutputDirLock, OutputError> {
    // Created one folder at a time, outermost first, to know which this run made (`a/../b`
    // makes `a`, then `b`); removed innermost first.
    let mut created = Vec::new();
    let missing: Vec<&Path> = dir.ancestors().filter(|d| !d.as_os_str().is_empty()).collect();
    for folder in missing.into_iter().rev() {
        if folder.exists() {
            continue;
        }
        match std::fs::create_dir(folder) {
            Ok(()) => created.push(folder.to_path_buf()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                created.reverse();
                remove_empty_folders(&created);
                return Err(OutputError::Io {
                    path: dir.to_path_buf(),
                    source,
                });
            }
        }
    }
    created.reverse();
    let mut lock = OutputDirLock {
        _held: None,
        created,
        dir: dir.to_path_buf(),
    };
    if let Ok(handle) = File::open(dir) {
        match handle.try_lock() {
            Ok(()) => lock._held = Some(handle),
            Err(std::fs::TryLockError::WouldBlock) => {
                remove_empty_folders(&lock.created);
                return Err(OutputError::Other {
                    path: dir.to_path_buf(),
                    message: "another datavet run is writing to this output directory; wait for it \
                              to finish, or give this run another --out"
                        .into(),
                });
            }
            Err(std::fs::TryLockError::Error(_)) => {}
        }
    }
    if let Err(e) = finish_pending_publication(dir) {
        remove_empty_folders(&lock.created);
        return Err(e);
    }
    remove_stale_temp_files(dir);
    Ok(lock)
}

fn finish_pending_publication(dir: &Path) -> Result<(), OutputError> {
    if let Some(renamed) = complete_publication(dir)? {
        log::warn!(
            "{}: the last run stopped while publishing its outputs; finished that ({renamed} \
             files renamed into place; report.html and report.md may be older: `datavet report \
             DIR` rewrites them)",
            dir.display()
        );
    }
    Ok(())
}

/// Before a command that only reads `dir` (export, report, diff): finishes a publication a
/// killed run left half done. A run publishing right now holds the lock: this waits for it
/// (seconds at most: the lock is held for a whole scan, but the journal exists only while the
/// files are renamed), then finds nothing left to do.
pub fn settle_output_dir(dir: &Path) -> Result<(), OutputError> {
    if !dir.join(PUBLISH_JOURNAL).exists() {
        return Ok(());
    }
    let handle = File::open(dir).ok();
    if let Some(h) = &handle {
        let _ = h.lock();
    }
    finish_pending_publication(dir)
}

/// Removes the temp files ([`AtomicFile`]'s `.datavet-*.tmp`) a killed run left in `dir`, once
/// untouched for [`STALE_TEMP`]: with the lock held no other scan or release writes there, and
/// at 1M rows a killed write stage leaves about a gigabyte behind; the age spares an `export`
/// writing into the directory meanwhile (it takes no lock). Best effort: what cannot be removed
/// stays.
fn remove_stale_temp_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let stale = entry
            .metadata()
            .ok()
            .filter(|m| m.is_file())
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= STALE_TEMP);
        if name.starts_with(".datavet-") && name.ends_with(".tmp") && stale {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// How long a temp file must have been left untouched before a run holding the lock removes it.
const STALE_TEMP: std::time::Duration = std::time::Duration::from_secs(15 * 60);

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
        let mut builder = tempfile::Builder::new();
        // An ordinary file's mode under the user's umask (0644 under the usual 022; 0600 under
        // 077), as any file the user writes; tempfile's own 0600 hid outputs from the group.
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
        let temp = builder
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
        self.make_durable()?;
        let replaced = open_replaced(&self.path);
        self.temp.persist(&self.path).map_err(|e| OutputError::Io {
            path: self.path.clone(),
            source: e.error,
        })?;
        Ok(Retired(replaced.into_iter().collect()))
    }

    /// Syncs the temp file: what must hold before it may replace anything.
    fn make_durable(&self) -> Result<(), OutputError> {
        self.temp.as_file().sync_all().map_err(|source| OutputError::Io {
            path: self.path.clone(),
            source,
        })
    }

    /// Writes `value` as JSON atomically: `pretty` for the files people open (reports), compact
    /// for machine state (stage results, references).
    pub fn write_json(path: &Path, value: &impl serde::Serialize, pretty: bool) -> Result<(), OutputError> {
        AtomicFile::write_all(path, &json_bytes(path, value, pretty)?)
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

/// The file at `path` about to be replaced, held open across the rename so that the rename does
/// not free it (see [`Retired`]). Unix only: elsewhere an open file may block the rename.
fn open_replaced(path: &Path) -> Option<File> {
    if cfg!(unix) { File::open(path).ok() } else { None }
}

/// Syncs a directory, so that renames in it survive a power loss. Best effort: not every
/// platform or file system can open or sync a directory.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// The journal of a [`Publication`] under way, in the output directory.
pub const PUBLISH_JOURNAL: &str = ".datavet-publish.json";

/// Files that replace their predecessors as one: a scan's clean, quarantine and scores files and
/// its report, or a release's. Seen half old and half new, they hold rows twice or not at all,
/// and the report counts neither. Renames cannot be grouped, so the commit is a redo log: every
/// file is written and synced under its temp name, a journal naming each temp and its target
/// (and the lines to append to logs) is made durable, then the renames and appends run and the
/// journal goes. A run killed on the way leaves the journal, and the next datavet command on the
/// directory finishes the job before it reads or writes anything ([`complete_publication`]).
pub struct Publication {
    dir: PathBuf,
    files: Vec<AtomicFile>,
    /// (published file, another place it is linked to): see [`Publication::link`].
    links: Vec<(PathBuf, PathBuf)>,
    appends: Vec<Append>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Journal {
    /// In rename order; paths relative to the output directory.
    renames: Vec<Rename>,
    appends: Vec<Append>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Rename {
    temp: PathBuf,
    target: PathBuf,
    /// The temp file's identity (inode, or size where there are none): once renamed, the target
    /// has it. A temp that is gone while its target is another file was lost, not renamed.
    identity: u64,
}

/// A line appended to a log (the audit log) once the files are in place, exactly once.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Append {
    /// Relative to the output directory.
    target: PathBuf,
    line: String,
}

/// What a file is, for telling a renamed temp from another file (see [`Rename::identity`]).
fn identity(metadata: &std::fs::Metadata) -> u64 {
    #[cfg(unix)]
    {
        std::os::unix::fs::MetadataExt::ino(metadata)
    }
    #[cfg(not(unix))]
    {
        metadata.len()
    }
}

impl Publication {
    /// A publication into `dir`; every file added must lie in `dir` or below it.
    pub fn new(dir: &Path) -> Publication {
        Publication {
            dir: dir.to_path_buf(),
            files: Vec::new(),
            links: Vec::new(),
            appends: Vec::new(),
        }
    }

    /// Adds a file; files are renamed in the order added.
    pub fn add(&mut self, file: AtomicFile) {
        self.files.push(file);
    }

    /// Adds a Parquet file, closing it first.
    pub fn add_parquet(&mut self, sink: ParquetSink) -> Result<(), OutputError> {
        let sink = sink.close()?;
        let temp = sink.closed.expect("closed above");
        self.add(AtomicFile { path: sink.path, temp });
        Ok(())
    }

    /// Adds `value` as JSON (see [`AtomicFile::write_json`]).
    pub fn add_json(&mut self, path: &Path, value: &impl serde::Serialize, pretty: bool) -> Result<(), OutputError> {
        let bytes = json_bytes(path, value, pretty)?;
        let mut f = AtomicFile::create(path)?;
        f.writer().write_all(&bytes).map_err(|source| OutputError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        self.add(f);
        Ok(())
    }

    /// Publishes the new `published` (a file added before the commit) at `also_at` too, hard
    /// linked where the file system allows, else copied: a reference's snapshot of the outputs.
    pub fn link(&mut self, published: &Path, also_at: &Path) {
        self.links.push((published.to_path_buf(), also_at.to_path_buf()));
    }

    /// Appends `line` (without its newline) to the log at `path` once the files are in place.
    /// Appended, never rewritten: the log may be append-only, a link to a central one, or
    /// read while it grows.
    pub fn append_line(&mut self, path: &Path, line: &str) -> Result<(), OutputError> {
        let target = relative_to(&self.dir, path)?;
        self.appends.push(Append {
            target,
            line: line.to_string(),
        });
        Ok(())
    }

    /// Replaces every target by its new file and appends the log lines, handing back the files
    /// replaced (see [`Retired`]).
    pub fn commit(self) -> Result<Retired, OutputError> {
        match fail_after_renames() {
            Some(renames) => {
                self.commit_stopping_after(Some(renames))?;
                // A killed run, for the tests: no destructor runs, the journal stays.
                std::process::exit(137)
            }
            None => self.commit_stopping_after(None),
        }
    }

    /// [`Publication::commit`]; with `stop` = Some(n), returns after n renames as if killed
    /// there, leaving the journal.
    fn commit_stopping_after(self, stop: Option<usize>) -> Result<Retired, OutputError> {
        let Publication {
            dir,
            files,
            links,
            appends,
        } = self;
        let journal_path = dir.join(PUBLISH_JOURNAL);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| OutputError::Io { path, source }
        };
        for f in &files {
            f.make_durable()?;
        }
        // (temp, target), every temp beside its target. From here the temps belong to the
        // journal: a failure must not delete them, but before it is written, this must.
        let mut staged: Vec<(PathBuf, PathBuf)> = Vec::with_capacity(files.len() + links.len());
        for f in files {
            let target = f.path;
            let (_, temp) = f.temp.keep().map_err(|e| io(&target)(e.error))?;
            staged.push((temp, target));
        }
        let journaled = (|| {
            for (published, also_at) in &links {
                let source = staged
                    .iter()
                    .find(|(_, target)| target == published)
                    .map(|(t, _)| t.clone());
                if let Some(source) = source {
                    staged.push((link_beside(&source, also_at)?, also_at.clone()));
                }
            }
            let mut renames = Vec::with_capacity(staged.len());
            for (temp, target) in &staged {
                let metadata = std::fs::metadata(temp).map_err(io(target))?;
                let target = relative_to(&dir, target)?;
                renames.push(Rename {
                    // The temp's own path may have been made absolute.
                    temp: target.with_file_name(temp.file_name().expect("a temp file's name")),
                    target,
                    identity: identity(&metadata),
                });
            }
            // The temps' names in their directories must be durable before the journal is.
            sync_dirs(&dir, staged.iter().map(|(_, t)| t.as_path()));
            let journal = Journal { renames, appends };
            AtomicFile::write_json(&journal_path, &journal, false).map(|_| journal)
        })();
        let journal = match journaled {
            Ok(journal) => journal,
            Err(e) => {
                for (temp, _) in &staged {
                    let _ = std::fs::remove_file(temp);
                }
                return Err(e);
            }
        };
        sync_dir(&dir);
        // From here on, as a later command would finish it.
        carry_out(&dir, &journal, stop).map(|(_, replaced)| replaced)
    }
}

/// Carries out a durable journal in `dir`: renames each temp still there (a temp gone while its
/// target is another file is an error), syncs the directories, appends the log lines not yet
/// appended, removes the journal. The one path for a publication and for finishing a killed one.
/// Returns how many files it renamed, and the files they replaced (see [`Retired`]). With `stop`
/// = Some(n) it returns after n renames, as if killed there (for the tests).
fn carry_out(dir: &Path, journal: &Journal, stop: Option<usize>) -> Result<(usize, Retired), OutputError> {
    let journal_path = dir.join(PUBLISH_JOURNAL);
    let mut replaced = Retired::default();
    let mut renamed = 0;
    for (done, r) in journal.renames.iter().enumerate() {
        if stop == Some(done) {
            return Ok((renamed, replaced));
        }
        let (temp, target) = (dir.join(&r.temp), dir.join(&r.target));
        if temp.exists() {
            replaced.0.extend(open_replaced(&target));
            std::fs::rename(&temp, &target).map_err(|e| unfinished(&journal_path, &target, e))?;
            renamed += 1;
        } else if std::fs::metadata(&target).map(|m| identity(&m)).ok() != Some(r.identity) {
            return Err(damaged_journal(
                &journal_path,
                format!("the new {} ({}) is gone", r.target.display(), r.temp.display()),
            ));
        }
    }
    let targets: Vec<PathBuf> = journal.renames.iter().map(|r| dir.join(&r.target)).collect();
    sync_dirs(dir, targets.iter().map(PathBuf::as_path));
    if stop.is_some() {
        return Ok((renamed, replaced));
    }
    append_lines(dir, &journal.appends).map_err(|(path, e)| unfinished(&journal_path, &path, e))?;
    remove_journal(&journal_path)?;
    Ok((renamed, replaced))
}

/// A journal that cannot be carried out, and what the user does about it.
fn damaged_journal(journal: &Path, message: String) -> OutputError {
    OutputError::Other {
        path: journal.to_path_buf(),
        message: format!(
            "{message}; this journal of an interrupted publication cannot be finished, and the \
             outputs beside it may be half replaced: remove it and run the scan again"
        ),
    }
}

/// `path` relative to the output directory `dir` it must lie in.
fn relative_to(dir: &Path, path: &Path) -> Result<PathBuf, OutputError> {
    path.strip_prefix(dir)
        .map(Path::to_path_buf)
        .map_err(|_| OutputError::Other {
            path: path.to_path_buf(),
            message: format!("not inside the output directory {}", dir.display()),
        })
}

/// A temp file beside `target` holding what `source` holds: a hard link, or where the file
/// system has none, a synced copy.
pub fn link_beside(source: &Path, target: &Path) -> Result<PathBuf, OutputError> {
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let linked = tempfile::Builder::new()
        .prefix(".datavet-")
        .suffix(".tmp")
        .make_in(dir, |path| {
            std::fs::hard_link(source, path).or_else(|_| {
                std::fs::copy(source, path)?;
                File::open(path)?.sync_all()
            })
        })
        .map_err(|source| OutputError::Io {
            path: target.to_path_buf(),
            source,
        })?;
    let (_, path) = linked.keep().map_err(|e| OutputError::Io {
        path: target.to_path_buf(),
        source: e.error,
    })?;
    Ok(path)
}

/// A publication that stopped half way: it stays half done until the cause is mended and
/// the next datavet command on the directory finishes it.
fn unfinished(journal: &Path, path: &Path, e: std::io::Error) -> OutputError {
    OutputError::Other {
        path: path.to_path_buf(),
        message: format!(
            "{e}: the outputs are half replaced; once this is mended, the next datavet command on \
             the directory finishes them (its journal: {})",
            journal.display()
        ),
    }
}

/// Appends each line to its log unless the log already ends with it (a finished publication
/// whose journal was not yet removed), and syncs the log.
fn append_lines(dir: &Path, appends: &[Append]) -> Result<(), (PathBuf, std::io::Error)> {
    for append in appends {
        let path = dir.join(&append.target);
        let error = |e| (path.clone(), e);
        let existing = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(error(e)),
        };
        if existing.lines().last() == Some(append.line.as_str()) {
            continue;
        }
        let separator = if existing.is_empty() || existing.ends_with('\n') {
            ""
        } else {
            "\n"
        };
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(error)?;
        writeln!(log, "{separator}{}", append.line)
            .and_then(|_| log.sync_all())
            .map_err(error)?;
    }
    Ok(())
}

fn remove_journal(journal: &Path) -> Result<(), OutputError> {
    std::fs::remove_file(journal).map_err(|source| OutputError::Io {
        path: journal.to_path_buf(),
        source,
    })
}

/// Syncs `dir` and every other directory a file of `paths` lies in.
fn sync_dirs<'a>(dir: &Path, paths: impl Iterator<Item = &'a Path>) {
    let mut dirs: Vec<&Path> = paths.filter_map(Path::parent).filter(|d| *d != dir).collect();
    dirs.sort();
    dirs.dedup();
    dirs.into_iter().for_each(sync_dir);
    sync_dir(dir);
}

/// Fault injection for the tests of [`complete_publication`]: `DATAVET_FAIL_AFTER_RENAMES=N`
/// ends the process (exit 137, as a kill would) after the first N renames of a publication.
fn fail_after_renames() -> Option<usize> {
    std::env::var("DATAVET_FAIL_AFTER_RENAMES").ok()?.parse().ok()
}

/// Finishes the [`Publication`] a killed run left half done in `dir`, if any: renames the temps
/// its journal names that are still there, appends its log lines, then removes the journal.
/// Returns how many files it renamed (`None`: nothing was pending). Called with the directory's
/// lock held where it can be had.
pub fn complete_publication(dir: &Path) -> Result<Option<usize>, OutputError> {
    let journal_path = dir.join(PUBLISH_JOURNAL);
    let bytes = match std::fs::read(&journal_path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(OutputError::Io {
                path: journal_path,
                source,
            });
        }
    };
    let damaged = |message: String| damaged_journal(&journal_path, message);
    let journal: Journal = serde_json::from_slice(&bytes).map_err(|e| damaged(e.to_string()))?;
    let inside = |p: &Path| p.components().all(|c| matches!(c, std::path::Component::Normal(_)));
    let paths = journal.renames.iter().flat_map(|r| [&r.temp, &r.target]);
    if let Some(outside) = paths
        .chain(journal.appends.iter().map(|a| &a.target))
        .find(|p| !inside(p))
    {
        return Err(damaged(format!("{} lies outside the directory", outside.display())));
    }
    // The replaced files are closed here: a killed run's, not worth a thread.
    let (renamed, mut replaced) = carry_out(dir, &journal, None)?;
    replaced.0.clear();
    Ok(Some(renamed))
}

fn json_bytes(path: &Path, value: &impl serde::Serialize, pretty: bool) -> Result<Vec<u8>, OutputError> {
    let bytes = if pretty {
        serde_json::to_vec_pretty(value)
    } else {
        serde_json::to_vec(value)
    };
    bytes.map_err(|e| OutputError::Other {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// A Parquet file written batch by batch to a temp file: [`ParquetSink::close`] finishes the
/// footer (the file can then be read back and checked), [`ParquetSink::commit`] renames it into place.
///
/// Batches are encoded into row groups of `OUTPUT_ROW_GROUP_ROWS` (the buffering `ArrowWriter`
/// does, by hand: the low-level writer underneath also takes whole row groups of another file as
/// they are, see [`ParquetSink::append_row_group`]).
pub struct ParquetSink {
    path: PathBuf,
    writer: Option<SerializedFileWriter<WritebackFile>>,
    factory: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
    /// The row group being encoded and its row count.
    in_progress: Option<(Vec<ArrowColumnWriter>, usize)>,
    closed: Option<NamedTempFile>,
}

impl ParquetSink {
    /// `plain_columns` (top-level names) are written without dictionary encoding: float vectors and
    /// per-record values gain nothing from it, and the writer hashes every value trying.
    pub fn create(path: &Path, schema: SchemaRef, plain_columns: &[&str]) -> Result<ParquetSink, OutputError> {
        let tmp = AtomicFile::create(path)?;
        let mut props = WriterProperties::builder().set_compression(Compression::SNAPPY);
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
        let parquet_error = |source| OutputError::Parquet {
            path: path.to_path_buf(),
            source,
        };
        // ArrowWriter converts the schema and stores it in the footer; then it steps aside.
        let (writer, factory) = ArrowWriter::try_new(WritebackFile::new(tmp.temp), schema.clone(), Some(props.build()))
            .and_then(ArrowWriter::into_serialized_writer)
            .map_err(parquet_error)?;
        Ok(ParquetSink {
            path: path.to_path_buf(),
            writer: Some(writer),
            factory,
            schema,
            in_progress: None,
            closed: None,
        })
    }

    fn error(&self, source: parquet::errors::ParquetError) -> OutputError {
        OutputError::Parquet {
            path: self.path.clone(),
            source,
        }
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), OutputError> {
        let mut rest = batch.clone();
        while rest.num_rows() > 0 {
            let buffered = self.in_progress.as_ref().map_or(0, |(_, rows)| *rows);
            let take = rest.num_rows().min(OUTPUT_ROW_GROUP_ROWS - buffered);
            let part = rest.slice(0, take);
            rest = rest.slice(take, rest.num_rows() - take);
            self.encode(&part).map_err(|e| self.error(e))?;
            if buffered + take >= OUTPUT_ROW_GROUP_ROWS {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn encode(&mut self, batch: &RecordBatch) -> parquet::errors::Result<()> {
        let writer = self.writer.as_ref().expect("write before close");
        let (columns, rows) = match &mut self.in_progress {
            Some(group) => group,
            none => none.insert((
                self.factory.create_column_writers(writer.flushed_row_groups().len())?,
                0,
            )),
        };
        let mut columns = columns.iter_mut();
        for (field, array) in self.schema.fields().iter().zip(batch.columns()) {
            for leaf in compute_leaves(field, array)? {
                columns.next().expect("a writer per leaf").write(&leaf)?;
            }
        }
        *rows += batch.num_rows();
        Ok(())
    }

    /// Ends the current row group.
    pub fn flush(&mut self) -> Result<(), OutputError> {
        let Some((columns, _)) = self.in_progress.take() else {
            return Ok(());
        };
        let writer = self.writer.as_mut().expect("flush before close");
        let result = (|| {
            let mut group = writer.next_row_group()?;
            for column in columns {
                column.close()?.append_to_row_group(&mut group)?;
            }
            group.close().map(|_| ())
        })();
        result.map_err(|e| self.error(e))
    }

    /// The Parquet schema the sink writes: a file whose row groups are to be appended as they
    /// are must have the same leaf columns (see [`same_leaf_columns`]).
    pub fn parquet_schema(&self) -> SchemaDescPtr {
        Arc::new(self.writer.as_ref().expect("open sink").schema_descr().clone())
    }

    /// Appends row group `group` of the Parquet file `file` (whose footer is `metadata`) as its
    /// bytes are, without decoding it: a row group that lost no record is copied, not
    /// re-encoded. Its values are the input's by construction (pages, encodings, compression).
    /// The file's leaf columns must be ours ([`same_leaf_columns`]).
    pub fn append_row_group(
        &mut self,
        file: &File,
        metadata: &ParquetMetaData,
        group: usize,
    ) -> Result<(), OutputError> {
        self.flush()?;
        let writer = self.writer.as_mut().expect("append before close");
        let source = metadata.row_group(group);
        let result = (|| {
            let mut out = writer.next_row_group()?;
            for column in source.columns() {
                let close = ColumnCloseResult {
                    bytes_written: column.compressed_size() as u64,
                    rows_written: source.num_rows() as u64,
                    metadata: column.clone(),
                    bloom_filter: None,
                    column_index: None,
                    offset_index: None,
                };
                out.append_column(&CopySource(file), close)?;
            }
            out.close().map(|_| ())
        })();
        result.map_err(|e| self.error(e))
    }

    /// Writes the footer; the file stays at its temp path.
    pub fn close(mut self) -> Result<ParquetSink, OutputError> {
        self.flush()?;
        if let Some(writer) = self.writer.take() {
            let file = writer.into_inner().map_err(|e| self.error(e))?;
            let temp = file.into_temp().map_err(|source| OutputError::Io {
                path: self.path.clone(),
                source,
            })?;
            self.closed = Some(temp);
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

/// Whether two Parquet schemas have the same leaf columns (path, physical and logical type,
/// repetition and levels): what appending a row group of one to a file of the other needs.
pub fn same_leaf_columns(a: &SchemaDescriptor, b: &SchemaDescriptor) -> bool {
    a.num_columns() == b.num_columns() && a.columns().iter().zip(b.columns()).all(|(x, y)| x == y)
}

/// `batch` under `schema`: a column whose type differs only in nested field names (a list's
/// `item` against pyarrow's `element`) is cast to the schema's type, the values untouched; the
/// reader accepted the files as one schema (`schema_difference`).
/// Why: the outputs have the first file's schema, and a batch of another writer's file would not
/// go into them.
pub fn conform(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, arrow_schema::ArrowError> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| match (column.data_type(), field.data_type()) {
            (from, to) if from == to => Ok(column.clone()),
            (arrow_schema::DataType::Date64, arrow_schema::DataType::Date32) => whole_days(column),
            (_, to) => arrow_cast::cast(column, to),
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema.clone(), columns)
}

/// A date64 column (milliseconds) as the date32 (days) of the dataset's first file: exact, or an
/// error naming the first value that is not a whole day (Arrow's cast drops the time of day,
/// and moves days before 1970 one later). The reader refuses such files before the analysis
/// (`io::read`, naming the file's row); this is the write's own guard.
pub(crate) fn whole_days(column: &arrow_array::ArrayRef) -> Result<arrow_array::ArrayRef, arrow_schema::ArrowError> {
    use arrow_array::cast::AsArray;
    if let Some((row, ms)) = first_partial_day(column) {
        return Err(arrow_schema::ArrowError::CastError(format!(
            "row {row}: a date64 of {ms} ms is not a whole day within date32's range, and the first \
             file stores this column as date32 (days): it would be changed"
        )));
    }
    let ms = column.as_primitive::<arrow_array::types::Date64Type>();
    let days: arrow_array::Date32Array = ms.unary(|v| (v.div_euclid(MS_PER_DAY)) as i32);
    Ok(Arc::new(days))
}

const MS_PER_DAY: i64 = 86_400_000;

/// The first value of a date64 column that is not a whole day a date32 can hold (days past
/// i32's range would wrap): (index, milliseconds).
pub(crate) fn first_partial_day(column: &arrow_array::ArrayRef) -> Option<(usize, i64)> {
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    let ms = column.as_primitive::<arrow_array::types::Date64Type>();
    let a_day = |v: i64| v.rem_euclid(MS_PER_DAY) == 0 && i32::try_from(v.div_euclid(MS_PER_DAY)).is_ok();
    (0..ms.len())
        .find(|&i| ms.is_valid(i) && !a_day(ms.value(i)))
        .map(|i| (i, ms.value(i)))
}

/// A piece of the input, in input order: decoded rows, or a whole row group left encoded for
/// the caller to copy ([`ParquetSink::append_row_group`]).
pub enum Piece {
    Rows(RecordBatch),
    RowGroup {
        file: Arc<File>,
        metadata: Arc<ParquetMetaData>,
        group: usize,
        rows: usize,
    },
}

impl Piece {
    pub fn rows(&self) -> usize {
        match self {
            Piece::Rows(batch) => batch.num_rows(),
            Piece::RowGroup { rows, .. } => *rows,
        }
    }
}

/// Streams every column of every input file in input order. `visit` gets each piece and the
/// global row of its first record; a row group for which `copy(footer, first row, rows)` holds
/// comes whole and undecoded, every other one as batches. Pass-through columns are decoded as
/// they are, never converted, so they are written back with the same values.
pub fn for_each_piece(
    files: &[FileInfo],
    schema: &SchemaRef,
    copy: impl Fn(&ParquetMetaData, usize, usize) -> bool + Send,
    mut visit: impl FnMut(Piece, usize) -> Result<(), crate::Error>,
) -> Result<(), crate::Error> {
    // Decoding runs on its own thread, a few batches ahead, so it overlaps with the caller's
    // filtering and encoding: the two halves of the write stage take about as long each.
    let (sender, receiver) = std::sync::mpsc::sync_channel::<Result<Piece, InputError>>(4);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut first = 0usize;
            for info in files {
                match send_file(info, (schema, &files[0].path), &mut first, &copy, &sender) {
                    Ok(true) => {}
                    // The consumer failed and stopped (a closed channel): stop too.
                    Ok(false) => return,
                    Err(e) => {
                        let _ = sender.send(Err(e));
                        return;
                    }
                }
            }
        });
        let mut global = 0usize;
        for piece in receiver {
            let piece = piece?;
            let rows = piece.rows();
            visit(piece, global)?;
            global += rows;
        }
        Ok(())
    })
}

/// Sends the pieces of one file (see [`for_each_piece`]); `first` is the global row of its
/// first record, advanced past it. `false` when the channel closed (the consumer stopped).
fn send_file(
    info: &FileInfo,
    (schema, first_file): (&SchemaRef, &Path),
    first: &mut usize,
    copy: &impl Fn(&ParquetMetaData, usize, usize) -> bool,
    sender: &std::sync::mpsc::SyncSender<Result<Piece, InputError>>,
) -> Result<bool, InputError> {
    let corrupt = |e: &dyn std::fmt::Display| InputError::Corrupt {
        path: info.path.clone(),
        message: e.to_string(),
    };
    let open = || {
        File::open(&info.path).map_err(|source| InputError::Io {
            path: info.path.clone(),
            source,
        })
    };
    let file = open()?;
    let footer = super::read::load_input_footer(&file, &info.path)?;
    let metadata = footer.metadata().clone();
    // Handles of one open file share its read position: the consumer copies through this one
    // (not touched here again), the decoding below reads through files of its own.
    let copied = Arc::new(file);
    let mut decode: Vec<usize> = Vec::new();
    // Row groups to decode go in runs, one reader each; a copied group ends a run.
    let flush = |decode: &mut Vec<usize>| -> Result<bool, InputError> {
        if decode.is_empty() {
            return Ok(true);
        }
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(open()?, footer.clone())
            .with_row_groups(std::mem::take(decode))
            .with_batch_size(DEFAULT_BATCH_ROWS)
            .build()
            .map_err(|e| corrupt(&e))?;
        for batch in reader {
            let batch = conform(batch.map_err(|e| corrupt(&e))?, schema).map_err(|e| InputError::SchemaMismatch {
                path: info.path.clone(),
                first: first_file.to_path_buf(),
                difference: e.to_string(),
            })?;
            if sender.send(Ok(Piece::Rows(batch))).is_err() {
                return Ok(false);
            }
        }
        Ok(true)
    };
    for group in 0..metadata.num_row_groups() {
        let source = metadata.row_group(group);
        let rows = source.num_rows() as usize;
        let whole = copy(&metadata, *first, rows) && source.columns().iter().all(|c| c.file_path().is_none());
        *first += rows;
        if !whole {
            decode.push(group);
            continue;
        }
        let piece = Piece::RowGroup {
            file: copied.clone(),
            metadata: metadata.clone(),
            group,
            rows,
        };
        if !flush(&mut decode)? || sender.send(Ok(piece)).is_err() {
            return Ok(false);
        }
    }
    flush(&mut decode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn taking_the_lock_removes_temp_files_a_killed_run_left() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join(".datavet-abc123.tmp");
        std::fs::write(&stale, b"half a parquet file").unwrap();
        let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(an_hour_ago)
            .unwrap();
        let kept = ["clean.parquet", ".datavet-notes.txt", "x.tmp", ".datavet-fresh.tmp"].map(|n| dir.path().join(n));
        kept.iter().for_each(|p| std::fs::write(p, b"mine").unwrap());
        // Other files, and a temp file just written (an export's, which takes no lock), stay.
        let lock = lock_output_dir(dir.path()).unwrap();
        assert!(!stale.exists());
        assert!(kept.iter().all(|p| p.exists()));
        // While the lock is held, another run's temp files are left alone.
        let live = AtomicFile::create(&dir.path().join("report.json")).unwrap();
        assert!(lock_output_dir(dir.path()).is_err());
        drop(lock);
        drop(live);
    }

    /// A publication of `a.json` (new), `b.json` (new) and `sub/c.json` into `dir`, whose
    /// targets hold "old" now.
    fn three_file_publication(dir: &Path) -> (Publication, [PathBuf; 3]) {
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let targets = ["a.json", "b.json", "sub/c.json"].map(|n| dir.join(n));
        let mut publication = Publication::new(dir);
        for t in &targets {
            std::fs::write(t, "\"old\"").unwrap();
            publication.add_json(t, &"new", false).unwrap();
        }
        (publication, targets)
    }

    fn contents(paths: &[PathBuf]) -> Vec<String> {
        paths.iter().map(|p| std::fs::read_to_string(p).unwrap()).collect()
    }

    fn temp_files(dir: &Path) -> usize {
        walkdir(dir).filter(|p| p.to_string_lossy().ends_with(".tmp")).count()
    }

    fn walkdir(dir: &Path) -> impl Iterator<Item = PathBuf> {
        let mut found = Vec::new();
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            if e.path().is_dir() {
                found.extend(walkdir(&e.path()));
            } else {
                found.push(e.path());
            }
        }
        found.into_iter()
    }

    #[test]
    fn a_publication_replaces_every_file_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let (publication, targets) = three_file_publication(dir.path());
        assert_eq!(contents(&targets), ["\"old\""; 3]);
        drop(publication.commit().unwrap());
        assert_eq!(contents(&targets), ["\"new\""; 3]);
        assert!(!dir.path().join(PUBLISH_JOURNAL).exists());
        assert_eq!(temp_files(dir.path()), 0);
        assert_eq!(complete_publication(dir.path()).unwrap(), None);
    }

    #[test]
    fn a_publication_cut_short_is_finished_by_the_next_lock() {
        for stop in 0..=3 {
            let dir = tempfile::tempdir().unwrap();
            let (publication, targets) = three_file_publication(dir.path());
            publication.commit_stopping_after(Some(stop)).unwrap();
            // Cut short: the first `stop` files are new, the rest old, the journal says so.
            let mut expected = vec!["\"new\""; stop];
            expected.resize(3, "\"old\"");
            assert_eq!(contents(&targets), expected, "stopped after {stop}");
            assert!(dir.path().join(PUBLISH_JOURNAL).exists());
            // The stale-temp sweep must not take the journal's temps, however old.
            let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
            for temp in walkdir(dir.path()).filter(|p| p.to_string_lossy().ends_with(".tmp")) {
                let file = File::options().write(true).open(temp).unwrap();
                file.set_modified(an_hour_ago).unwrap();
            }
            let lock = lock_output_dir(dir.path()).unwrap();
            assert_eq!(contents(&targets), ["\"new\""; 3], "stopped after {stop}");
            assert!(!dir.path().join(PUBLISH_JOURNAL).exists());
            assert_eq!(temp_files(dir.path()), 0);
            drop(lock);
        }
    }

    #[test]
    fn links_and_log_lines_are_published_with_the_files_exactly_once() {
        for stop in [None, Some(0), Some(2), Some(4)] {
            let dir = tempfile::tempdir().unwrap();
            let (mut publication, targets) = three_file_publication(dir.path());
            let snapshot = dir.path().join("sub/a-snapshot.json");
            publication.link(&targets[0], &snapshot);
            let log = dir.path().join("audit.jsonl");
            std::fs::write(&log, "first").unwrap();
            publication.append_line(&log, "second").unwrap();
            match stop {
                None => drop(publication.commit().unwrap()),
                Some(n) => {
                    publication.commit_stopping_after(Some(n)).unwrap();
                    assert_eq!(std::fs::read_to_string(&log).unwrap(), "first", "stopped after {n}");
                    let journal = dir.path().join(PUBLISH_JOURNAL);
                    let saved = std::fs::read(&journal).unwrap();
                    drop(lock_output_dir(dir.path()).unwrap());
                    // Finished again (a kill before the journal's removal reached the disk):
                    // nothing to rename, and the line is not appended twice.
                    std::fs::write(&journal, saved).unwrap();
                    assert_eq!(complete_publication(dir.path()).unwrap(), Some(0));
                }
            }
            assert_eq!(contents(&targets), ["\"new\""; 3], "{stop:?}");
            assert_eq!(std::fs::read_to_string(&snapshot).unwrap(), "\"new\"");
            assert_eq!(std::fs::read_to_string(&log).unwrap(), "first\nsecond\n", "{stop:?}");
            assert_eq!(temp_files(dir.path()), 0);
        }
    }

    #[test]
    fn a_journal_whose_new_file_is_gone_is_not_called_finished() {
        let dir = tempfile::tempdir().unwrap();
        let (publication, targets) = three_file_publication(dir.path());
        publication.commit_stopping_after(Some(1)).unwrap();
        // The temps of the files not yet renamed are removed by hand.
        for temp in walkdir(dir.path()).filter(|p| p.to_string_lossy().ends_with(".tmp")) {
            std::fs::remove_file(temp).unwrap();
        }
        let e = lock_output_dir(dir.path()).err().unwrap().to_string();
        assert!(e.contains("the new b.json") && e.contains("is gone"), "{e}");
        assert_eq!(contents(&targets)[0], "\"new\"");
    }

    #[test]
    fn folders_made_for_the_output_go_only_when_the_run_leaves_it_empty() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("a/../b");
        drop(lock_output_dir(&out).unwrap());
        assert!(!root.path().join("a").exists() && !root.path().join("b").exists());
        // A run that wrote its outputs keeps every folder made (`a/../b` needs `a`).
        let lock = lock_output_dir(&out).unwrap();
        std::fs::write(out.join("clean.parquet"), b"x").unwrap();
        drop(lock);
        assert!(root.path().join("a").is_dir() && out.join("clean.parquet").is_file());
        // Refused while another run holds it: the folders made on the way go again.
        let held = lock_output_dir(&root.path().join("b")).unwrap();
        assert!(lock_output_dir(&root.path().join("c/../b")).is_err());
        assert!(!root.path().join("c").exists());
        drop(held);
    }

    #[test]
    fn date64_becomes_date32_only_as_whole_days() {
        use arrow_array::cast::AsArray;
        const DAY: i64 = 86_400_000;
        let exact: arrow_array::ArrayRef = Arc::new(arrow_array::Date64Array::from(vec![
            Some(-10 * DAY),
            None,
            Some(3 * DAY),
        ]));
        let days = whole_days(&exact).unwrap();
        let days = days.as_primitive::<arrow_array::types::Date32Type>();
        assert_eq!(days.iter().collect::<Vec<_>>(), [Some(-10), None, Some(3)]);
        // 13:00 on 1969-12-22: Arrow's cast made it 1969-12-23.
        let afternoon: arrow_array::ArrayRef =
            Arc::new(arrow_array::Date64Array::from(vec![0, -10 * DAY + 13 * 3_600_000]));
        let e = whole_days(&afternoon).unwrap_err().to_string();
        assert!(e.contains("row 1") && e.contains("not a whole day"), "{e}");
        // A whole day past i32's days would wrap to another date.
        let far: arrow_array::ArrayRef = Arc::new(arrow_array::Date64Array::from(vec![DAY, 3_000_000_000 * DAY]));
        let e = whole_days(&far).unwrap_err().to_string();
        assert!(e.contains("row 1") && e.contains("range"), "{e}");
    }

    #[test]
    fn a_damaged_journal_is_an_error_that_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join(PUBLISH_JOURNAL);
        std::fs::write(&journal, b"{\"renames\": [[\".datavet-x.tmp\"").unwrap();
        let e = lock_output_dir(dir.path()).err().unwrap().to_string();
        assert!(e.contains(PUBLISH_JOURNAL) && e.contains("run the scan again"), "{e}");
        // A journal naming files outside the directory renames nothing.
        std::fs::write(
            &journal,
            br#"{"renames": [{"temp": "../x.tmp", "target": "clean.parquet", "identity": 1}], "appends": []}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("clean.parquet"), b"mine").unwrap();
        let e = complete_publication(dir.path()).unwrap_err().to_string();
        assert!(e.contains("outside the directory"), "{e}");
        assert_eq!(std::fs::read(dir.path().join("clean.parquet")).unwrap(), b"mine");
    }

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

    /// Encoded batches and a row group copied from another file, in the order they came: the
    /// copy keeps that file's compression and bytes, the batches around it are encoded anew.
    #[test]
    fn sink_appends_row_groups_of_another_file_between_batches() {
        use arrow_array::{ArrayRef, Int64Array};
        let batch = |from: i64| {
            RecordBatch::try_from_iter([(
                "id",
                Arc::new(Int64Array::from_iter_values(from..from + 10)) as ArrayRef,
            )])
            .unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source.parquet");
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(Default::default()))
            .set_max_row_group_row_count(Some(10))
            .build();
        let mut writer = ArrowWriter::try_new(File::create(&source).unwrap(), batch(0).schema(), Some(props)).unwrap();
        writer.write(&batch(100)).unwrap();
        writer.write(&batch(200)).unwrap();
        writer.close().unwrap();
        let file = File::open(&source).unwrap();
        let footer = parquet::arrow::arrow_reader::ArrowReaderMetadata::load(&file, Default::default()).unwrap();
        let path = dir.path().join("out.parquet");
        let mut sink = ParquetSink::create(&path, batch(0).schema(), &[]).unwrap();
        assert!(same_leaf_columns(
            &sink.parquet_schema(),
            footer.metadata().file_metadata().schema_descr()
        ));
        sink.write(&batch(0)).unwrap();
        sink.append_row_group(&file, footer.metadata(), 1).unwrap();
        sink.write(&batch(10)).unwrap();
        sink.commit().unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap()).unwrap();
        let codecs: Vec<Compression> = reader
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.column(0).compression())
            .collect();
        assert_eq!(
            codecs,
            [
                Compression::SNAPPY,
                Compression::ZSTD(Default::default()),
                Compression::SNAPPY
            ]
        );
        let ids: Vec<i64> = reader
            .build()
            .unwrap()
            .flat_map(|b| {
                let b = b.unwrap();
                b.column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect();
        let expected: Vec<i64> = (0..10).chain(200..210).chain(10..20).collect();
        assert_eq!(ids, expected);
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
