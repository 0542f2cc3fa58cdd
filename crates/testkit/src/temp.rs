//! Temporary directories.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A fresh directory `$TMPDIR/ckpt-TAG-XXXXXX` (made by `tempfile`),
/// removed with what it holds on drop. It is 0755, not tempfile's 0700:
/// processes of other users (nobody, in the security tests) run in it.
pub struct TempDir(tempfile::TempDir);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let d = tempfile::Builder::new()
            .prefix(&format!("ckpt-{tag}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot make a temp dir for {tag}: {e}"));
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod temp dir");
        TempDir(d)
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.0.path().join(p)
    }

    /// `join`, made as a directory.
    pub fn mkdir(&self, p: impl AsRef<Path>) -> PathBuf {
        let d = self.join(p);
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
        d
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        self.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_open_and_removed() {
        let p;
        {
            let d = TempDir::new("unit");
            p = d.path().to_path_buf();
            assert!(p
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("ckpt-unit-"));
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o755);
            std::fs::write(d.join("f"), b"x").unwrap();
            assert!(d.mkdir("a/b").is_dir());
        }
        assert!(!p.exists());
    }
}
