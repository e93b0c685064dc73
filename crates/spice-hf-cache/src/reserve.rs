//! Free-space reservations shared by every pull into one cache, so two pulls running at once
//! cannot each pass the free-space check for space only one of them will get.
//!
//! A pull that has bytes to download reserves them under the cache root, in
//! [`RESERVATIONS_DIR`]: one file per pull listing the files it will write and their sizes,
//! held under an exclusive lock for as long as the pull runs. A new pull, under the folder's
//! own lock, reads every reservation and counts what each still has to write (the announced
//! size less what its files already occupy on disk, so finished bytes are not counted twice);
//! it is refused when its own bytes and those do not fit in the free space. A reservation whose
//! lock nobody holds belongs to a process that died: it is removed, never counted.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, RANGED_SUFFIX, Result, part_path};

/// The folder under the cache root that holds the reservations and their lock.
pub const RESERVATIONS_DIR: &str = ".spice-reservations";

/// Suffix of one pull's reservation file.
const SUFFIX: &str = ".resv";

/// A reservation file larger than this is not ours: it is skipped with a warning.
const MAX_RESERVATION_BYTES: u64 = 16 << 20;

/// One file a pull will write.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Planned {
    path: PathBuf,
    size: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Contents {
    pid: u32,
    files: Vec<Planned>,
}

/// Free space held for one pull until it is dropped (the file is removed and its lock
/// released; a crash releases the lock too, and the next pull removes the file).
#[derive(Debug)]
pub struct Reservation {
    path: PathBuf,
    _file: File,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // Removed before the lock is released, so no other pull counts it as stale and races
        // to remove it; a failure leaves a stale file the next pull removes.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What the other pulls in progress still have to write.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Others {
    pub(crate) pulls: usize,
    pub(crate) bytes: u64,
}

/// Bytes a planned file already occupies: its final file, or its partial download (sparse
/// ranged downloads count their allocated blocks, not their length).
fn written(target: &Path) -> u64 {
    let mut ranged = target.as_os_str().to_os_string();
    ranged.push(RANGED_SUFFIX);
    [
        target.to_path_buf(),
        part_path(target),
        PathBuf::from(ranged),
    ]
    .iter()
    .filter_map(|p| std::fs::symlink_metadata(p).ok())
    .filter(|m| m.is_file())
    .map(|m| occupied(&m))
    .max()
    .unwrap_or(0)
}

#[cfg(unix)]
fn occupied(m: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    (m.blocks().saturating_mul(512)).min(m.len())
}

#[cfg(not(unix))]
fn occupied(m: &std::fs::Metadata) -> u64 {
    m.len()
}

/// Reads the live reservations in `dir`, removing stale ones.
pub(crate) fn others(dir: &Path) -> Result<Others> {
    let mut out = Others::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io("list reservations in", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list reservations in", dir, e))?;
        let path = entry.path();
        if !path.to_string_lossy().ends_with(SUFFIX)
            || !entry.file_type().is_ok_and(|t| t.is_file())
        {
            continue;
        }
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("open reservation", &path, e)),
        };
        match file.try_lock_shared() {
            Ok(()) => {
                // Nobody holds it: the pull that made it is gone.
                tracing::debug!(reservation = %path.display(), "removing a stale space reservation");
                drop(file);
                let _ = std::fs::remove_file(&path);
                continue;
            }
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => return Err(Error::io("lock reservation", &path, e)),
        }
        let mut text = String::new();
        let parsed = (&mut file)
            .take(MAX_RESERVATION_BYTES)
            .read_to_string(&mut text)
            .ok()
            .and_then(|_| serde_json::from_str::<Contents>(&text).ok());
        let Some(contents) = parsed else {
            tracing::warn!(reservation = %path.display(), "skipping an unreadable space reservation");
            continue;
        };
        out.pulls += 1;
        for f in contents.files {
            out.bytes = out
                .bytes
                .saturating_add(f.size.saturating_sub(written(&f.path)));
        }
    }
    Ok(out)
}

/// Reserves `needed` bytes under `root` for a pull that will write `files` (final paths and
/// sizes), or fails with [`Error::NoSpace`] naming what other pulls hold.
pub(crate) fn reserve(root: &Path, files: &[(PathBuf, u64)], needed: u64) -> Result<Reservation> {
    let dir = root.join(RESERVATIONS_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
    let lock_path = dir.join(".lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::io("open lock", &lock_path, e))?;
    // Held only while reservations are read and one is written: microseconds.
    lock.lock().map_err(|e| Error::io("lock", &lock_path, e))?;
    let others = others(&dir)?;
    let available =
        fs4::available_space(root).map_err(|e| Error::io("stat filesystem", root, e))?;
    if needed.saturating_add(others.bytes) > available {
        return Err(Error::NoSpace {
            dir: root.to_path_buf(),
            needed,
            available,
            reserved: others.bytes,
            pulls: others.pulls,
        });
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let path = dir.join(format!("{}-{nanos}{SUFFIX}", std::process::id()));
    let contents = Contents {
        pid: std::process::id(),
        files: files
            .iter()
            .map(|(path, size)| Planned {
                path: path.clone(),
                size: *size,
            })
            .collect(),
    };
    let json = serde_json::to_vec(&contents).map_err(|e| Error::Manifest {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io("create reservation", &path, e))?;
    file.lock()
        .map_err(|e| Error::io("lock reservation", &path, e))?;
    let reservation = Reservation { path, _file: file };
    (&reservation._file)
        .write_all(&json)
        .map_err(|e| Error::io("write reservation", &reservation.path, e))?;
    drop(lock);
    Ok(reservation)
}
