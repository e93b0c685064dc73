//! Range-parallel writes: one large file fetched as several byte ranges at once, each written
//! at its offset into `<file>.rpart`, then hashed whole, fsynced and renamed.
//!
//! Unlike [`PartFile`](crate::PartFile) a ranged part has holes until every range is in, so it
//! is never resumed across runs: a new ranged download starts it afresh.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use crate::{Error, Expected, Result, hash_file};

/// Suffix of range-parallel partial files.
pub const RANGED_SUFFIX: &str = ".rpart";

/// A preallocated partial file written at offsets.
#[derive(Debug)]
pub struct RangedPart {
    target: PathBuf,
    part: PathBuf,
    file: File,
    expected: Expected,
}

impl RangedPart {
    /// Creates (truncating any leftover) `<target>.rpart` with the expected size.
    pub fn create(target: &Path, expected: Expected) -> Result<Self> {
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io("create directory", parent, e))?;
        }
        let mut name = target.as_os_str().to_os_string();
        name.push(RANGED_SUFFIX);
        let part = PathBuf::from(name);
        crate::part::unlink_planted(&part)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&part)
            .map_err(|e| Error::io("create", &part, e))?;
        file.set_len(expected.size)
            .map_err(|e| Error::io("preallocate", &part, e))?;
        Ok(Self {
            target: target.to_path_buf(),
            part,
            file,
            expected,
        })
    }

    /// The announced size.
    pub fn expected(&self) -> &Expected {
        &self.expected
    }

    /// Writes `data` at `offset`, refusing anything past the expected size.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        let end = offset + data.len() as u64;
        if end > self.expected.size {
            return Err(Error::SizeMismatch {
                path: self.target.clone(),
                expected: self.expected.size,
                actual: end,
            });
        }
        write_all_at(&self.file, data, offset).map_err(|e| Error::io("write", &self.part, e))
    }

    /// Fsyncs, hashes the whole file and renames it onto the target; deletes it on a mismatch.
    pub fn finish(self) -> Result<PathBuf> {
        self.file
            .sync_all()
            .map_err(|e| Error::io("fsync", &self.part, e))?;
        let actual = hash_file(&self.part, &self.expected.hash)?;
        if actual != self.expected.hash {
            let _ = std::fs::remove_file(&self.part);
            return Err(Error::HashMismatch {
                path: self.target,
                expected: self.expected.hash.to_string(),
                actual: actual.to_string(),
            });
        }
        std::fs::rename(&self.part, &self.target)
            .map_err(|e| Error::io("rename", &self.target, e))?;
        Ok(self.target)
    }

    /// Deletes the partial file.
    pub fn discard(self) {
        let _ = std::fs::remove_file(&self.part);
    }
}

#[cfg(unix)]
fn write_all_at(file: &File, data: &[u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, data, offset)
}

#[cfg(windows)]
fn write_all_at(file: &File, mut data: &[u8], mut offset: u64) -> std::io::Result<()> {
    while !data.is_empty() {
        let n = std::os::windows::fs::FileExt::seek_write(file, data, offset)?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        data = &data[n..];
        offset += n as u64;
    }
    Ok(())
}
