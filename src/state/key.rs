//! The state directory's secret key, and the keyed hash of build inputs.
//!
//! Build records (`<state>/images/<tag>.json`) keep a *fingerprint* of a
//! pod's build inputs, secret build-arg values included, so that every
//! process sharing the state directory can tell whether an image was built
//! from the inputs it has now. The fingerprint is BLAKE3 in keyed mode
//! (a MAC) under a random 32-byte key made once per state directory and
//! kept in `<state>/key` (mode 0600):
//!
//! - stable: the same inputs give the same fingerprint in every process
//!   and every cldpd version using this scheme (BLAKE3 is specified; the
//!   standard library's `DefaultHasher` is not, and was used before);
//! - not a guessing target: without the key, a record says nothing about
//!   the secrets that went into it (an unkeyed hash of a weak secret can be
//!   brute-forced offline by anyone who can read the record).
//!
//! Removing the key only costs one rebuild of each pod (old records no
//! longer match).

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// `<state>/key`.
pub(crate) fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("key")
}

/// Read the key of `state_dir`, making it first if there is none.
/// Concurrent first uses by several processes all end up with the same key:
/// it is written to a private temporary file, then linked into place,
/// which fails if another process was first (its key is then read).
pub(crate) fn load_or_create(state_dir: &Path) -> io::Result<[u8; 32]> {
    let path = path(state_dir);
    if let Some(key) = read(&path)? {
        return Ok(key);
    }
    std::fs::create_dir_all(state_dir)?;
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    let tmp = state_dir.join(format!(
        ".key.{}.{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    let made = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&key)?;
        f.sync_all()?;
        std::fs::hard_link(&tmp, &path)
    })();
    let _ = std::fs::remove_file(&tmp);
    match made {
        Ok(()) => Ok(key),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read(&path)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "the state key vanished")),
        Err(e) => Err(e),
    }
}

fn read(path: &Path) -> io::Result<Option<[u8; 32]>> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::with_capacity(32);
    f.read_to_end(&mut bytes)?;
    let key: [u8; 32] = bytes.try_into().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is not a cldpd key (32 bytes); remove it and cldpd makes a new one",
                path.display()
            ),
        )
    })?;
    Ok(Some(key))
}

/// A keyed hasher: feed it fields with [`Fingerprint::field`].
pub(crate) struct Fingerprint(blake3::Hasher);

impl Fingerprint {
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        Fingerprint(blake3::Hasher::new_keyed(key))
    }

    /// Add one field, length-prefixed (so `("ab", "c")` and `("a", "bc")`
    /// differ).
    pub(crate) fn field(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update(&(bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self
    }

    /// The fingerprint, as 64 hex digits.
    pub(crate) fn hex(&self) -> String {
        self.0.finalize().to_hex().to_string()
    }
}
