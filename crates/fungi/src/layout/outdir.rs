//! [`OutDir`]: one writer per output directory.
//!
//! Two `fungi extract` runs started on the same `--out` would otherwise both write chunks and
//! final outputs there, and the directory would end up holding one run's features while the
//! other exits 0. An [`OutDir`] holds an exclusive lock on `OUT/.fungi.lock` (the operating
//! system's advisory file lock: released when the process exits or crashes, never left stale)
//! for as long as it lives; a second writer is refused at once, naming the lock file and the
//! holder's pid, which the holder writes into the lock file. The holder removes the lock file
//! when it is done (while still holding the lock), so a finished output directory holds no
//! trace of it; one left by a killed process is an unlocked file, taken over by the next run.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{chunk_path, finish, write_chunk, Chunk, Extras, LayoutError, Manifest, RunIdentity};
use crate::Block;

/// The lock file inside an output directory.
pub const LOCK_FILE: &str = ".fungi.lock";

/// An output directory locked for writing by this process (see the module docs).
#[derive(Debug)]
pub struct OutDir {
    dir: PathBuf,
    lock: File,
    /// Whether this process made the directory (removed again on drop if nothing else was
    /// written into it, so that a refused command leaves no trace).
    created: bool,
}

impl OutDir {
    /// Opens `dir` for writing (making it when it does not exist) and takes its lock.
    ///
    /// # Errors
    /// [`LayoutError::Locked`] at once when another process holds the lock (naming the lock
    /// file and the holder's pid); [`LayoutError::Io`] when the directory or the lock file
    /// cannot be made, or `dir` exists and is not a directory.
    pub fn open(dir: &Path) -> Result<Self, LayoutError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LayoutError::Io { path, source }
        };
        let created = !dir.exists();
        if !created && !dir.is_dir() {
            return Err(LayoutError::Io {
                path: dir.to_path_buf(),
                source: std::io::Error::other("exists and is not a directory"),
            });
        }
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lock_path = dir.join(LOCK_FILE);
        // The holder removes the file before it unlocks: a file opened just before that removal
        // and locked just after it is no longer the one at `lock_path`, so the lock is taken
        // again on the current file.
        let mut attempts = 0;
        let mut lock = loop {
            let mut f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&lock_path)
                .map_err(io(&lock_path))?;
            match f.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    let mut holder = String::new();
                    let _ = f.read_to_string(&mut holder);
                    let holder = holder.trim();
                    return Err(LayoutError::Locked {
                        dir: dir.to_path_buf(),
                        lock: lock_path,
                        holder: if holder.is_empty() {
                            "unknown".into()
                        } else {
                            holder.to_string()
                        },
                    });
                }
                Err(TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
            }
            attempts += 1;
            if same_file(&f, &lock_path) || attempts >= 8 {
                break f;
            }
        };
        lock.set_len(0).map_err(io(&lock_path))?;
        lock.seek(SeekFrom::Start(0)).map_err(io(&lock_path))?;
        writeln!(lock, "{}", std::process::id()).map_err(io(&lock_path))?;
        lock.flush().map_err(io(&lock_path))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            lock,
            created,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Writes finished chunk `c` atomically ([`write_chunk`]).
    ///
    /// # Errors
    /// When it cannot be written (naming the file).
    pub fn write_chunk(&self, c: usize, chunk: &Chunk, dim: usize) -> Result<(), LayoutError> {
        write_chunk(&chunk_path(&self.dir, c), chunk, dim)
    }

    /// Whether chunk `c` is finished (a resumed run skips it).
    pub fn has_chunk(&self, c: usize) -> bool {
        chunk_path(&self.dir, c).exists()
    }

    /// Writes the final outputs of chunks `chunks` and the manifest from this directory's
    /// chunks ([`finish`]).
    ///
    /// # Errors
    /// As [`finish`].
    pub fn finish(
        &self,
        run: &RunIdentity,
        blocks: &[Block],
        chunks: (usize, usize),
        shard: Option<(usize, usize)>,
        extras: &Extras,
    ) -> Result<Manifest, LayoutError> {
        finish(
            &self.dir,
            run,
            blocks,
            chunks,
            shard,
            std::slice::from_ref(&self.dir),
            extras,
        )
    }

    /// Whether `dir` is locked by a live writer right now (`merge` refuses to read such a
    /// shard: its outputs are not final).
    pub fn is_locked(dir: &Path) -> bool {
        let Ok(f) = File::open(dir.join(LOCK_FILE)) else {
            return false;
        };
        match f.try_lock_shared() {
            Ok(()) => {
                let _ = f.unlock();
                false
            }
            Err(_) => true,
        }
    }
}

/// Whether the open file `f` is the file at `path` now.
fn same_file(f: &File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (f.metadata(), std::fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = f;
        path.exists()
    }
}

impl Drop for OutDir {
    fn drop(&mut self) {
        // The lock file goes while the lock is still held; so does a directory this process
        // made and left empty (a command refused after taking the lock).
        let _ = std::fs::remove_file(self.dir.join(LOCK_FILE));
        if self.created {
            let _ = std::fs::remove_dir(&self.dir);
        }
        let _ = self.lock.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_naming_the_lock_and_the_holder() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        let first = OutDir::open(&out).unwrap();
        assert!(OutDir::is_locked(&out));
        let e = OutDir::open(&out).unwrap_err();
        let m = e.to_string();
        assert!(matches!(e, LayoutError::Locked { .. }), "{m}");
        assert!(
            m.contains(LOCK_FILE) && m.contains(&std::process::id().to_string()),
            "{m}"
        );
        std::fs::write(out.join("run.json"), "{}").unwrap();
        drop(first);
        assert!(!OutDir::is_locked(&out));
        assert!(
            !out.join(LOCK_FILE).exists(),
            "the holder removes the lock file"
        );
        // A lock file left by a killed process is taken over.
        std::fs::write(out.join(LOCK_FILE), "999999\n").unwrap();
        let again = OutDir::open(&out).unwrap();
        drop(again);
        assert!(out.join("run.json").exists(), "a used directory stays");
        assert!(!out.join(LOCK_FILE).exists());
    }

    #[test]
    fn a_directory_made_and_left_empty_is_removed() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("fresh");
        drop(OutDir::open(&out).unwrap());
        assert!(!out.exists());
        let file = d.path().join("file");
        std::fs::write(&file, "x").unwrap();
        assert!(OutDir::open(&file).is_err());
    }
}
