//! Changes of names and attributes: scratch files (create, unlink, rename
//! among themselves), a rename onto an editable file (an edit), chmod,
//! chown and truncate.
//!
//! Editors replace a file by writing a temp file beside it and renaming it
//! over the file (`sed -i`, vim, Python's write-then-rename). Such temp
//! files may be made in the directories that hold editable files
//! (`PID/`, `PID/fds/`, `PID/task/TID/`); they live in memory. Renaming
//! one onto `regs`, `signals`, `cwd`, `fds/N` or `task/TID/regs` applies
//! its contents as an edit of that file (one generation); renaming an
//! editable file away (vim's backup) leaves it in place and makes the
//! new name a scratch copy of it.

use super::inval::Inval;
use super::{errno, lock, CkptFs};
use crate::scratch::{ScratchFile, MAX_BYTES};
use crate::store::Failure;
use crate::tree::{Kind, Node};
use fuser::{Errno, FileAttr, INodeNo, RenameFlags, Request, TimeOrNow};
use std::ffi::OsStr;
use std::time::SystemTime;

/// What a setattr asks to change.
pub struct AttrChange {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub mtime: Option<TimeOrNow>,
}

fn name_str(name: &OsStr) -> Result<&str, Errno> {
    let n = name.to_str().ok_or(Errno::EINVAL)?;
    if n.is_empty() || n == "." || n == ".." || n.contains('/') {
        return Err(Errno::EINVAL);
    }
    Ok(n)
}

impl CkptFs {
    /// A refused change of the tree (mkdir, rmdir, symlink, link): EPERM.
    pub(super) fn not_here(&self, parent: INodeNo, name: &OsStr, what: &str) -> Errno {
        let node = self.node(parent).unwrap_or(fuser_root());
        let f = Failure::new(
            libc::EPERM,
            "the tree of an image is fixed: only editors' temp files can be made, in PID/, PID/fds/ and PID/task/TID/",
        );
        let path = format!("{}/{}", self.path_of(node), name.to_string_lossy());
        self.refuse(node, &format!("{what} {path}"), &f)
    }

    pub(super) fn make_scratch(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
    ) -> Result<(Node, FileAttr), Errno> {
        let p = self.node(parent)?;
        let name = name_str(name)?;
        let what = format!("create {}/{name}", self.path_of(p));
        if !p.allows_scratch() {
            let f = Failure::new(
                libc::EPERM,
                "files can only be made in PID/, PID/fds/ and PID/task/TID/ (as editors' temp files)",
            );
            return Err(self.refuse(p, &what, &f));
        }
        if self.cfg.read_only {
            return Err(Errno::EROFS);
        }
        self.loaded(p)?;
        if self.lookup_node(p, name).is_ok() {
            return Err(Errno::EEXIST);
        }
        let id = p.image().ok_or(Errno::ENOENT)?;
        let f = ScratchFile {
            img: id,
            parent: p,
            name: name.to_string(),
            data: Vec::new(),
            mode: (mode & 0o7777) as u16,
            uid: req.uid(),
            gid: req.gid(),
            mtime: SystemTime::now(),
        };
        let n = lock(&self.scratch)
            .create(f)
            .map_err(|f| self.refuse(p, &what, &f))?;
        tracing::debug!("{what}");
        let node = Node::Scratch(id, n);
        Ok((node, self.attr(node)?))
    }

    pub(super) fn do_unlink(&self, parent: INodeNo, name: &OsStr) -> Result<(), Errno> {
        let p = self.node(parent)?;
        let name = name.to_str().ok_or(Errno::ENOENT)?;
        match self.child(p, name)? {
            Node::Scratch(_, n) => {
                lock(&self.scratch).remove(n);
                tracing::debug!("unlink {}/{name}", self.path_of(p));
                Ok(())
            }
            real => {
                let f = Failure::new(
                    libc::EPERM,
                    "the files of an image cannot be removed (remove STORE/NAME.ckpt to remove the image)",
                );
                Err(self.refuse(real, &format!("unlink {}", self.path_of(real)), &f))
            }
        }
    }

    pub(super) fn do_rename(
        &self,
        _req: &Request,
        from: (INodeNo, &OsStr),
        to: (INodeNo, &OsStr),
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        let (p, np) = (self.node(from.0)?, self.node(to.0)?);
        let name = from.1.to_str().ok_or(Errno::ENOENT)?;
        let newname = name_str(to.1)?;
        let src = self.child(p, name)?;
        let dst = match self.child(np, newname) {
            Ok(n) => Some(n),
            Err(Errno::ENOENT) => None,
            Err(e) => return Err(e),
        };
        let what = format!(
            "rename {} to {}/{newname}",
            self.path_of(src),
            self.path_of(np)
        );
        let refuse = |errno: i32, why: &str| self.refuse(src, &what, &Failure::new(errno, why));
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            return Err(refuse(libc::EINVAL, "exchanging names is not supported"));
        }
        if self.cfg.read_only {
            return Err(Errno::EROFS);
        }
        if src.image() != np.image() {
            return Err(refuse(libc::EXDEV, "not within one image"));
        }
        if flags.contains(RenameFlags::RENAME_NOREPLACE) && dst.is_some() {
            return Err(Errno::EEXIST);
        }
        let r = match (src, dst) {
            (Node::Scratch(_, s), Some(d)) if !matches!(d, Node::Scratch(..)) => {
                self.commit_scratch(s, d, &what)
            }
            (Node::Scratch(_, s), _) if np.allows_scratch() => {
                lock(&self.scratch).rename(s, np, newname);
                Ok(())
            }
            (real, None | Some(Node::Scratch(..))) if np.allows_scratch() => {
                self.backup_copy(real, np, newname, &what)
            }
            _ => Err(refuse(
                libc::EPERM,
                "the files of an image cannot be moved or replaced, only edited (write them, or rename an editor's temp file onto regs, signals, cwd, fds/N or task/TID/regs)",
            )),
        };
        if r.is_ok() {
            tracing::debug!("{what}");
            // The kernel moved its dentry; make it look the names up again.
            self.inval.send(vec![
                Inval::Entry(from.0 .0, name.to_string()),
                Inval::Entry(to.0 .0, newname.to_string()),
            ]);
        }
        r
    }

    /// A rename of scratch file `s` onto the real file `dst`: its contents
    /// are the new text of `dst`, applied as one edit.
    fn commit_scratch(&self, s: u32, dst: Node, what: &str) -> Result<(), Errno> {
        if !dst.is_text_edit() {
            let why = if dst.is_mem() {
                "memory cannot be replaced by a rename: write mem or the map file in place"
            } else {
                "this file cannot be edited"
            };
            return Err(self.refuse(dst, what, &Failure::new(libc::EACCES, why)));
        }
        let data = lock(&self.scratch)
            .get(s)
            .map(|f| f.data.clone())
            .ok_or(Errno::ENOENT)?;
        // apply_edit notes a failure in ctl, errors and the log.
        self.apply_edit(dst, &data).map_err(|e| errno(e.errno))?;
        lock(&self.scratch).remove(s);
        Ok(())
    }

    /// A rename of an editable file away (vim's backup): the file stays,
    /// the new name is a scratch copy of it.
    fn backup_copy(&self, real: Node, np: Node, newname: &str, what: &str) -> Result<(), Errno> {
        if !real.is_text_edit() {
            let f = Failure::new(libc::EPERM, "the files of an image cannot be moved");
            return Err(self.refuse(real, what, &f));
        }
        let l = self.loaded(real)?;
        let data = self
            .store
            .content(real, &l)
            .map(|c| c.to_vec())
            .unwrap_or_default();
        let a = self.attr(real)?;
        let id = np.image().ok_or(Errno::ENOENT)?;
        let mut sc = lock(&self.scratch);
        if let Some(old) = sc.lookup(np, newname) {
            sc.remove(old);
        }
        sc.create(ScratchFile {
            img: id,
            parent: np,
            name: newname.to_string(),
            data,
            mode: a.perm,
            uid: a.uid,
            gid: a.gid,
            mtime: SystemTime::now(),
        })
        .map_err(|f| self.refuse(real, what, &f))?;
        Ok(())
    }

    pub(super) fn do_setattr(
        &self,
        req: &Request,
        node: Node,
        fh: Option<u64>,
        ch: &AttrChange,
    ) -> Result<FileAttr, Errno> {
        if let Node::Scratch(_, n) = node {
            self.setattr_scratch(req, n, ch)?;
            return self.attr(node);
        }
        let a = self.attr(node)?;
        let path = self.path_of(node);
        let same_mode = ch.mode.is_none_or(|m| (m & 0o7777) as u16 == a.perm);
        let same_owner = ch.uid.is_none_or(|u| u == a.uid) && ch.gid.is_none_or(|g| g == a.gid);
        if !same_mode || !same_owner {
            // chmod or chown to what it is already is fine (editors do it).
            let f = Failure::new(
                libc::EPERM,
                "modes and owners follow the image file's (chmod/chown STORE/NAME.ckpt)",
            );
            return Err(self.refuse(node, &format!("chmod/chown {path}"), &f));
        }
        if ch.size.is_some() {
            if !node.writable() || node.kind() == Kind::Dir {
                return Err(Errno::EACCES);
            }
            if self.cfg.read_only {
                return Err(Errno::EROFS);
            }
            // Truncation (the shell's `>`) of a text file starts the
            // collected text over; of memory it means nothing.
            if let Some(fh) = fh {
                if let Some(e) = lock(&self.handles)
                    .get_mut(&fh)
                    .and_then(|h| h.edit.as_mut())
                {
                    e.data.clear();
                    e.base = None;
                }
            }
        }
        Ok(a)
    }

    fn setattr_scratch(&self, req: &Request, n: u32, ch: &AttrChange) -> Result<(), Errno> {
        let mut sc = lock(&self.scratch);
        let f = sc.get_mut(n).ok_or(Errno::ENOENT)?;
        let root = req.uid() == 0;
        if (ch.mode.is_some() || ch.uid.is_some() || ch.gid.is_some())
            && !root
            && req.uid() != f.uid
        {
            return Err(Errno::EPERM);
        }
        if ch.uid.is_some_and(|u| u != f.uid) && !root {
            return Err(Errno::EPERM);
        }
        if let Some(m) = ch.mode {
            f.mode = (m & 0o7777) as u16;
        }
        if let Some(u) = ch.uid {
            f.uid = u;
        }
        if let Some(g) = ch.gid {
            f.gid = g;
        }
        if let Some(s) = ch.size {
            if s > MAX_BYTES as u64 {
                return Err(Errno::EFBIG);
            }
            f.data.resize(s as usize, 0);
            f.mtime = SystemTime::now();
        }
        match ch.mtime {
            Some(TimeOrNow::SpecificTime(t)) => f.mtime = t,
            Some(TimeOrNow::Now) => f.mtime = SystemTime::now(),
            None => {}
        }
        Ok(())
    }
}

fn fuser_root() -> Node {
    Node::Root
}
