//! Cross-process build lock: `<state>/images/<tag>.lock`, held with
//! `flock(2)` for the whole of a build, so that processes sharing a state
//! directory build one tag one at a time, and the ones that waited reuse
//! the build (they read its record once they hold the lock).
//!
//! `flock` locks belong to an open file description: two opens in one
//! process exclude each other like two processes do, and the lock goes
//! when the file is closed, also when the process dies. Taking it blocks:
//! only ever from a blocking task, never on an actor thread.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// A held build lock; dropping it releases it (closing the file on a
/// blocking-pool thread: it is dropped on the dispatcher's).
#[derive(Debug)]
pub(crate) struct BuildLock {
    _file: super::DropOffThread<File>,
}

/// The lock file of image `tag` under `images_dir`.
pub(crate) fn path(images_dir: &Path, tag: &str) -> PathBuf {
    images_dir.join(format!("{}.lock", crate::actors::build::file_stem(tag)))
}

/// Wait for and take the build lock of `tag`.
pub(crate) fn acquire(images_dir: &Path, tag: &str) -> io::Result<BuildLock> {
    std::fs::create_dir_all(images_dir)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path(images_dir, tag))?;
    loop {
        // SAFETY: flock on a valid descriptor owned by `file`.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if r == 0 {
            return Ok(BuildLock {
                _file: super::DropOffThread::new(file),
            });
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
