//! One writer per output file: a run holds an exclusive advisory lock (`flock`) on its output
//! for as long as it runs, so a requeued task or a replacement pod started while the old one
//! still writes stops at once instead of interleaving records with it. `merge` refuses a shard
//! output that is locked (still being written).

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot open output {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("output {path} is being written by another docanalyze run (it holds the file's lock): two writers would interleave their records; wait for it to end, or write elsewhere")]
    Busy { path: PathBuf },
}

/// The held lock on an output file. Dropped without [`OutputLock::keep`], it removes the file
/// if this run created it and wrote nothing: a run that fails to start leaves no trace.
pub struct OutputLock {
    _file: File,
    path: PathBuf,
    created: bool,
    kept: bool,
}

impl OutputLock {
    /// Opens (creating if needed, never truncating) and locks `path`.
    pub fn acquire(path: &Path) -> Result<Self, LockError> {
        let io_err = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        let created = !path.exists();
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io_err)?;
        let remove_if_created = || {
            if created {
                let _ = std::fs::remove_file(path);
            }
        };
        match try_lock(&file, Mode::Exclusive) {
            Ok(true) => Ok(Self {
                _file: file,
                path: path.to_path_buf(),
                created,
                kept: false,
            }),
            Ok(false) => Err(LockError::Busy {
                path: path.to_path_buf(),
            }),
            Err(e) => {
                remove_if_created();
                Err(io_err(e))
            }
        }
    }

    /// The run has started writing: the file stays, whatever happens next.
    pub fn keep(&mut self) {
        self.kept = true;
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        let empty = std::fs::metadata(&self.path).is_ok_and(|m| m.len() == 0);
        if self.created && !self.kept && empty {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Whether a running docanalyze holds `path`'s lock (it is still being written).
pub fn is_being_written(path: &Path) -> io::Result<bool> {
    let file = File::open(path)?;
    // A shared lock is refused only while an exclusive one is held; it is released on close.
    Ok(!try_lock(&file, Mode::Shared)?)
}

enum Mode {
    Shared,
    Exclusive,
}

/// Takes the lock without waiting: `Ok(false)` when another holder has it.
#[cfg(unix)]
fn try_lock(file: &File, mode: Mode) -> io::Result<bool> {
    use std::os::unix::io::AsRawFd;
    let op = match mode {
        Mode::Shared => libc::LOCK_SH,
        Mode::Exclusive => libc::LOCK_EX,
    };
    // SAFETY: flock only reads the descriptor, which `file` keeps open for the call.
    if unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

#[cfg(not(unix))]
fn try_lock(_: &File, _: Mode) -> io::Result<bool> {
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_until_the_first_is_done() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out.jsonl");
        let mut first = OutputLock::acquire(&path).expect("first lock");
        assert!(is_being_written(&path).expect("checks"));
        let second = OutputLock::acquire(&path);
        assert!(matches!(second, Err(LockError::Busy { .. })));
        first.keep();
        drop(first);
        assert!(path.exists(), "kept");
        assert!(!is_being_written(&path).expect("checks"));
        assert!(OutputLock::acquire(&path).is_ok());
    }

    #[test]
    fn an_unused_new_file_is_removed_an_existing_one_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let new = dir.path().join("new.csv");
        drop(OutputLock::acquire(&new).expect("lock"));
        assert!(!new.exists());
        let old = dir.path().join("old.csv");
        std::fs::write(&old, "").expect("write");
        drop(OutputLock::acquire(&old).expect("lock"));
        assert!(old.exists());
    }
}
