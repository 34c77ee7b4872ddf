//! Is the state directory usable: writable, with free space (`cldpd
//! doctor`).

use std::io::Write;
use std::path::Path;

/// Below this much free space, `cldpd doctor` warns: session logs may soon
/// be incomplete.
pub const LOW_SPACE: u64 = 64 * 1024 * 1024;

/// Bytes available to an unprivileged user on the file system of `path`.
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a zeroed out-struct.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Check that `state_dir` (made if missing) takes a small write; returns the
/// free bytes on its file system.
pub fn check_writable(state_dir: &Path) -> std::io::Result<u64> {
    std::fs::create_dir_all(state_dir)?;
    let probe = state_dir.join(format!(".doctor-{}", std::process::id()));
    let written = std::fs::File::create(&probe).and_then(|mut f| {
        f.write_all(&[b'x'; 4096])?;
        f.sync_all()
    });
    let _ = std::fs::remove_file(&probe);
    written?;
    free_bytes(state_dir)
}
