//! Verified writes: bytes go to `<file>.part`, hashed as they stream, then fsync and rename.
//!
//! A `.part` left by a crash is kept: [`PartFile::open`] rehashes what it holds so the caller
//! can resume with a `Range` request from [`PartFile::offset`].

use std::fs::{File, OpenOptions};
use std::io::{Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use crate::{ContentHash, Error, Result, StreamHasher};

/// Suffix of partial files.
pub const PART_SUFFIX: &str = ".part";

/// What a file must turn out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// Exact size in bytes.
    pub size: u64,
    /// Content hash.
    pub hash: ContentHash,
}

/// A partial file being written.
pub struct PartFile {
    target: PathBuf,
    part: PathBuf,
    file: File,
    hasher: StreamHasher,
    written: u64,
    expected: Expected,
}

impl std::fmt::Debug for PartFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartFile")
            .field("part", &self.part)
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

/// The path of the partial file for `target`.
pub fn part_path(target: &Path) -> PathBuf {
    let mut name = target.as_os_str().to_os_string();
    name.push(PART_SUFFIX);
    PathBuf::from(name)
}

impl PartFile {
    /// Opens (or resumes) the partial file for `target`.
    ///
    /// An existing `.part` no longer than the expected size is kept and rehashed; a longer
    /// one is truncated.
    pub fn open(target: &Path, expected: Expected) -> Result<Self> {
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io("create directory", parent, e))?;
        }
        let part = part_path(target);
        crate::part::unlink_planted(&part)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&part)
            .map_err(|e| Error::io("open", &part, e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat", &part, e))?
            .len();
        let mut hasher = expected.hash.hasher(expected.size);
        let written = if len > 0 && len <= expected.size {
            let n = crate::hash::feed(&mut file, &mut hasher)
                .map_err(|e| Error::io("read", &part, e))?;
            tracing::debug!(part = %part.display(), bytes = n, "resuming partial file");
            n
        } else {
            file.set_len(0)
                .map_err(|e| Error::io("truncate", &part, e))?;
            0
        };
        file.seek(SeekFrom::Start(written))
            .map_err(|e| Error::io("seek", &part, e))?;
        Ok(Self {
            target: target.to_path_buf(),
            part,
            file,
            hasher,
            written,
            expected,
        })
    }

    /// Bytes already on disk (where a resumed download starts).
    pub fn offset(&self) -> u64 {
        self.written
    }

    /// The announced size.
    pub fn expected(&self) -> &Expected {
        &self.expected
    }

    /// Appends bytes, refusing to grow past the expected size.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        let new_len = self.written + data.len() as u64;
        if new_len > self.expected.size {
            let err = Error::SizeMismatch {
                path: self.target.clone(),
                expected: self.expected.size,
                actual: new_len,
            };
            self.discard();
            return Err(err);
        }
        self.file
            .write_all(data)
            .map_err(|e| Error::io("write", &self.part, e))?;
        self.hasher.update(data);
        self.written = new_len;
        Ok(())
    }

    /// Drops what was written and starts over at byte 0 (the server ignored a `Range`).
    pub fn restart(&mut self) -> Result<()> {
        self.file
            .set_len(0)
            .map_err(|e| Error::io("truncate", &self.part, e))?;
        self.file
            .seek(SeekFrom::Start(0))
            .map_err(|e| Error::io("seek", &self.part, e))?;
        self.hasher = self.expected.hash.hasher(self.expected.size);
        self.written = 0;
        Ok(())
    }

    /// Checks size and hash, fsyncs and renames onto the target. On a mismatch the partial
    /// file is deleted and nothing is renamed.
    pub fn finish(mut self) -> Result<PathBuf> {
        if self.written != self.expected.size {
            return Err(Error::SizeMismatch {
                path: self.target.clone(),
                expected: self.expected.size,
                actual: self.written,
            });
        }
        let actual = self.hasher.clone().finish();
        if actual != self.expected.hash {
            let err = Error::HashMismatch {
                path: self.target.clone(),
                expected: self.expected.hash.to_string(),
                actual: actual.to_string(),
            };
            self.discard();
            return Err(err);
        }
        self.file
            .flush()
            .and_then(|()| self.file.sync_all())
            .map_err(|e| Error::io("fsync", &self.part, e))?;
        std::fs::rename(&self.part, &self.target)
            .map_err(|e| Error::io("rename", &self.target, e))?;
        if let Some(dir) = self.target.parent() {
            // Make the rename durable; failure here is not fatal on filesystems without dir fsync.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(self.target)
    }

    /// Deletes the partial file.
    pub fn discard(&mut self) {
        let _ = std::fs::remove_file(&self.part);
        self.written = 0;
    }
}

/// Removes a symbolic link planted where the cache keeps one of its own temporary files, so
/// opening that name never writes through the link.
pub(crate) fn unlink_planted(path: &Path) -> Result<()> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        tracing::warn!(path = %path.display(), "removing a symbolic link planted in the cache");
        std::fs::remove_file(path).map_err(|e| Error::io("remove", path, e))?;
    }
    Ok(())
}
