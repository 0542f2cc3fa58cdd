//! Scratch files: the temp files editors make beside the file they edit
//! (`sed -i`'s `sedXXXXXX`, vim's `4913` probe and backup, Python's
//! `tempfile`), kept in memory (pure). A rename of one onto an editable
//! file of the image commits its contents as an edit (see [`crate::fuse`]).

use crate::store::Failure;
use crate::tree::{ImgId, Node};
use std::collections::HashMap;
use std::time::SystemTime;

/// Largest scratch file.
pub const MAX_BYTES: usize = 16 << 20;
/// Most scratch files in one directory.
pub const MAX_PER_DIR: usize = 256;

/// One scratch file.
#[derive(Clone, Debug)]
pub struct ScratchFile {
    pub img: ImgId,
    pub parent: Node,
    pub name: String,
    pub data: Vec<u8>,
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub mtime: SystemTime,
}

/// All scratch files of a mount.
#[derive(Default)]
pub struct Scratch {
    files: HashMap<u32, ScratchFile>,
    by_name: HashMap<(Node, String), u32>,
    next: u32,
}

impl Scratch {
    /// The scratch file called `name` in directory `parent`.
    pub fn lookup(&self, parent: Node, name: &str) -> Option<u32> {
        self.by_name.get(&(parent, name.to_string())).copied()
    }

    pub fn get(&self, n: u32) -> Option<&ScratchFile> {
        self.files.get(&n)
    }

    pub fn get_mut(&mut self, n: u32) -> Option<&mut ScratchFile> {
        self.files.get_mut(&n)
    }

    /// Add a file (its name must be free); returns its number.
    pub fn create(&mut self, f: ScratchFile) -> Result<u32, Failure> {
        if f.data.len() > MAX_BYTES {
            return Err(Failure::new(
                libc::EFBIG,
                format!("scratch files hold at most {MAX_BYTES} bytes"),
            ));
        }
        let in_dir = self.files.values().filter(|x| x.parent == f.parent).count();
        if in_dir >= MAX_PER_DIR {
            return Err(Failure::new(
                libc::ENOSPC,
                format!("at most {MAX_PER_DIR} scratch files per directory"),
            ));
        }
        let key = (f.parent, f.name.clone());
        if self.by_name.contains_key(&key) {
            return Err(Failure::new(libc::EEXIST, format!("{} exists", f.name)));
        }
        let n = self.next;
        self.next += 1;
        self.by_name.insert(key, n);
        self.files.insert(n, f);
        Ok(n)
    }

    pub fn remove(&mut self, n: u32) -> Option<ScratchFile> {
        let f = self.files.remove(&n)?;
        self.by_name.remove(&(f.parent, f.name.clone()));
        Some(f)
    }

    /// Move scratch file `n` to `name` in `parent`, replacing the scratch
    /// file there, if any (which is returned).
    pub fn rename(&mut self, n: u32, parent: Node, name: &str) -> Option<ScratchFile> {
        let old = match self.lookup(parent, name) {
            Some(m) if m != n => self.remove(m),
            _ => None,
        };
        if let Some(f) = self.files.get_mut(&n) {
            self.by_name.remove(&(f.parent, f.name.clone()));
            f.parent = parent;
            f.name = name.to_string();
            self.by_name.insert((parent, name.to_string()), n);
        }
        old
    }

    /// The scratch files of directory `parent`: (number, name).
    pub fn list(&self, parent: Node) -> Vec<(u32, String)> {
        let mut v: Vec<(u32, String)> = self
            .files
            .iter()
            .filter(|(_, f)| f.parent == parent)
            .map(|(&n, f)| (n, f.name.clone()))
            .collect();
        v.sort_by(|a, b| a.1.cmp(&b.1));
        v
    }
}

/// Write `data` at `off` into a scratch file's bytes.
pub fn write_at(f: &mut ScratchFile, off: u64, data: &[u8]) -> Result<(), Failure> {
    let end = off as usize + data.len();
    if off as usize > MAX_BYTES || end > MAX_BYTES {
        return Err(Failure::new(
            libc::EFBIG,
            format!("scratch files hold at most {MAX_BYTES} bytes"),
        ));
    }
    if f.data.len() < end {
        f.data.resize(end, 0);
    }
    f.data[off as usize..end].copy_from_slice(data);
    f.mtime = SystemTime::now();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(parent: Node, name: &str) -> ScratchFile {
        ScratchFile {
            img: ImgId(0),
            parent,
            name: name.into(),
            data: Vec::new(),
            mode: 0o600,
            uid: 0,
            gid: 0,
            mtime: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn create_rename_remove() {
        let d = Node::Proc(ImgId(0), 1);
        let e = Node::Fds(ImgId(0), 1);
        let mut s = Scratch::default();
        let a = s.create(file(d, "sedAbc")).unwrap();
        assert!(s.create(file(d, "sedAbc")).is_err());
        let b = s.create(file(d, "other")).unwrap();
        write_at(s.get_mut(a).unwrap(), 3, b"xy").unwrap();
        assert_eq!(s.get(a).unwrap().data, b"\0\0\0xy");
        assert!(write_at(s.get_mut(a).unwrap(), MAX_BYTES as u64, b"x").is_err());
        // Renaming onto another scratch file replaces it.
        let old = s.rename(a, d, "other").unwrap();
        assert_eq!(old.name, "other");
        assert!(s.get(b).is_none());
        assert_eq!(s.lookup(d, "other"), Some(a));
        assert_eq!(s.lookup(d, "sedAbc"), None);
        s.rename(a, e, "moved");
        assert_eq!(s.list(d), vec![]);
        assert_eq!(s.list(e), vec![(a, "moved".to_string())]);
        assert!(s.remove(a).is_some());
        assert_eq!(s.lookup(e, "moved"), None);
    }
}
