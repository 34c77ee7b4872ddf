//! The build context: a tar of the pod directory, made in memory (pod
//! directories are small: a Dockerfile and what it copies).
//!
//! Symbolic links are archived as links (not followed) and sockets are
//! left out, as the docker CLI does. A Dockerfile outside the context is
//! added under
//! [`OUTSIDE_DOCKERFILE`]. `.dockerignore` is not read (the CLI backend
//! honours it).

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

/// Name inside the archive of a Dockerfile that lives outside the context.
pub(crate) const OUTSIDE_DOCKERFILE: &str = ".cldpd.Dockerfile";

/// The archive, and the Dockerfile's path inside it.
pub(crate) fn context_tar(context: &Path, dockerfile: &Path) -> io::Result<(Vec<u8>, String)> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    builder.mode(tar::HeaderMode::Deterministic);
    builder.append_dir(".", context)?;
    add_dir(&mut builder, context, Path::new("."))?;
    let name = match dockerfile.strip_prefix(context) {
        Ok(rel) if !rel.as_os_str().is_empty() => rel.to_string_lossy().into_owned(),
        _ => {
            builder.append_path_with_name(dockerfile, OUTSIDE_DOCKERFILE)?;
            OUTSIDE_DOCKERFILE.to_string()
        }
    };
    Ok((builder.into_inner()?, name))
}

/// Add what `dir` holds under `rel`, in name order, without following
/// links; sockets (which tar cannot hold) are skipped, as docker's own
/// archiver skips them.
fn add_dir(builder: &mut tar::Builder<Vec<u8>>, dir: &Path, rel: &Path) -> io::Result<()> {
    let mut entries = std::fs::read_dir(dir)?.collect::<io::Result<Vec<_>>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let kind = entry.file_type()?;
        let name = rel.join(entry.file_name());
        if kind.is_socket() {
            continue;
        }
        if kind.is_dir() {
            builder.append_dir(&name, entry.path())?;
            add_dir(builder, &entry.path(), &name)?;
        } else {
            builder.append_path_with_name(entry.path(), &name)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(archive: &[u8]) -> Vec<String> {
        let mut a = tar::Archive::new(archive);
        a.entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn archives_the_directory_and_names_the_dockerfile() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/file"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link")).unwrap();
        // A socket (a daemon's, say) is left out instead of failing.
        let _sock = std::os::unix::net::UnixListener::bind(dir.path().join("a.sock")).unwrap();
        let (tar, name) = context_tar(dir.path(), &dir.path().join("Dockerfile")).unwrap();
        assert_eq!(name, "Dockerfile");
        let got = names(&tar);
        for want in ["Dockerfile", "sub/file", "link"] {
            assert!(
                got.iter().any(|n| n.trim_start_matches("./") == want),
                "{want} in {got:?}"
            );
        }
        assert!(!got.iter().any(|n| n.ends_with("a.sock")), "{got:?}");
        // The link stays a link: /etc/passwd's content is not archived.
        let mut a = tar::Archive::new(&tar[..]);
        let link = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .find(|e| e.path().unwrap().ends_with("link"))
            .unwrap();
        assert!(link.header().entry_type().is_symlink());

        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join("Build"), "FROM scratch\n").unwrap();
        let (tar, name) = context_tar(dir.path(), &other.path().join("Build")).unwrap();
        assert_eq!(name, OUTSIDE_DOCKERFILE);
        assert!(names(&tar).iter().any(|n| n == OUTSIDE_DOCKERFILE));
    }
}
