//! Regular files and directories, reopened by path at their saved offset;
//! deleted files (and O_TMPFILE files) are made again as unlinked files
//! with their saved contents (holes kept), size, owner, mode and times;
//! deleted directories (and the other deleted nodes of opath.rs and
//! pipe.rs: FIFOs, socket files) are made under a free name next to where
//! they were, opened, and unlinked.

use super::{cpath, strip_deleted, Builder, FdOp, O_TMPFILE_BIT};
use crate::stub::Child;
use crate::Report;
use ckpt_image::{FileIdentity, RegularFile};
use ckpt_sys::fds::{self, regular};
use ckpt_sys::fs;
use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, IntoRawFd};

/// What a remade node gets besides its contents: its size (regular
/// files), owner and times, as saved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeMeta {
    pub size: u64,
    /// (uid, gid), set where they differ from the creator's.
    pub owner: Option<(u32, u32)>,
    /// (atime, mtime) in nanoseconds since the epoch.
    pub times: Option<(i64, i64)>,
    /// The device number of a device node.
    pub rdev: u64,
    /// The target of a symlink.
    pub target: Option<CString>,
}

impl NodeMeta {
    pub(super) fn of(id: &FileIdentity) -> NodeMeta {
        NodeMeta {
            size: id.size,
            owner: Some((id.uid, id.gid)),
            times: (id.mtime_ns != 0 || id.atime_ns != 0).then_some((id.atime_ns, id.mtime_ns)),
            rdev: 0,
            target: None,
        }
    }
}

/// A regular file: reopened by path, or made again when it was deleted.
pub(super) fn plan_file(b: &mut Builder, g: usize, rf: &RegularFile) {
    let f = b.groups[g].file;
    let path = if rf.file.path.is_empty() {
        strip_deleted(&f.path).to_vec()
    } else {
        strip_deleted(&rf.file.path).to_vec()
    };
    // Unlinked under the name the fd shows but saved under another name
    // it still has (a hard link): reopened there.
    let relinked = !rf.file.deleted
        && !rf.has_contents
        && !rf.file.path.is_empty()
        && !rf.file.path.ends_with(b" (deleted)");
    if !relinked && (rf.file.deleted || f.path.ends_with(b" (deleted)")) {
        plan_deleted(b, g, rf, &path);
        return;
    }
    let (what, flags) = (b.what(g), b.flags(g));
    if let Some((pid, rest)) = proc_of_image(b, &path) {
        plan_late_open(b, g, pid, rest, flags, f.position);
        return;
    }
    let Some(s) = b.open_path(&what, &path, flags) else {
        return;
    };
    if flags & libc::O_PATH == 0 {
        b.seek(&what, s, f.position);
        if flags & libc::O_APPEND == 0 && f.position > 0 && f.position <= rf.file.size {
            b.plan.offsets.push((what, path, rf.file.size, f.position));
        }
    }
    b.slot_of[g] = Some(s);
}

/// The directory `path` was in (the first choice for a remade node), and
/// /tmp.
fn dirs_of(path: &[u8]) -> Vec<CString> {
    let mut dirs = Vec::new();
    if let Some(pos) = path.iter().rposition(|&c| c == b'/') {
        let d = if pos == 0 {
            b"/".to_vec()
        } else {
            path[..pos].to_vec()
        };
        if let Some(c) = cpath(&d) {
            dirs.push(c);
        }
    }
    if dirs.first().is_none_or(|d| d.as_bytes() != b"/tmp") {
        dirs.push(CString::new("/tmp").expect("no NUL"));
    }
    dirs
}

/// Free names to try for a node remade next to where `path` was: `path`
/// itself (then /proc shows the saved name, " (deleted)"), else
/// `DIR/.ckpt-deleted-INODE-K`, then the same in /tmp.
pub(crate) fn temp_names(path: &[u8], inode: u64) -> Vec<CString> {
    let mut out = Vec::new();
    if path.starts_with(b"/") {
        out.extend(cpath(path));
    }
    for d in dirs_of(path) {
        let d = d.as_bytes();
        let sep = if d.ends_with(b"/") { "" } else { "/" };
        for k in 0..4 {
            let mut n = d.to_vec();
            n.extend_from_slice(format!("{sep}.ckpt-deleted-{inode}-{k}").as_bytes());
            if let Some(c) = cpath(&n) {
                out.push(c);
            }
        }
    }
    out
}

/// A deleted file: an unlinked file with the saved contents, in the
/// directory it was in (else /tmp).
fn plan_deleted(b: &mut Builder, g: usize, rf: &RegularFile, path: &[u8]) {
    let (what, flags) = (b.what(g), b.flags(g));
    let key = (rf.file.dev, rf.file.inode);
    if let Some(&made) = b.remade.get(&key).filter(|_| key != (0, 0)) {
        // Another open of a file made again already: one file for both.
        let flags = flags & !(O_TMPFILE_BIT | libc::O_DIRECTORY);
        let s = b.reopen(&what, made, flags);
        if flags & libc::O_PATH == 0 {
            b.seek(&what, s, b.groups[g].file.position);
        }
        b.slot_of[g] = Some(s);
        return;
    }
    let s = b.slot();
    b.remade.insert(key, s);
    if !rf.has_contents {
        b.error(format!(
            "{what}: the file was deleted and the image does not hold its contents"
        ));
        return;
    }
    let contents = match b.load(&rf.contents) {
        Ok(c) => c,
        Err(e) => {
            b.error(format!("{what}: reading its saved contents: {e}"));
            return;
        }
    };
    let mode = if rf.file.mode & 0o7777 != 0 {
        rf.file.mode & 0o7777
    } else {
        0o600
    };
    let mut meta = NodeMeta::of(&rf.file);
    // An image from before sizes were used: the contents are the file.
    if rf.extents.is_empty() && meta.size < contents.len() as u64 {
        meta.size = contents.len() as u64;
    }
    b.op(
        &what,
        FdOp::TmpFile {
            slot: s,
            name: cpath(path),
            dirs: dirs_of(path),
            mode,
            contents,
            extents: rf.extents.iter().map(|e| (e.offset, e.length)).collect(),
            meta,
        },
    );
    let flags = flags & !(O_TMPFILE_BIT | libc::O_DIRECTORY);
    // Made with O_TMPFILE, the new fd would keep that flag in F_GETFL
    // where the saved one had none: open it again through /proc.
    let s = if b.flags(g) & O_TMPFILE_BIT == 0 {
        b.reopen(&what, s, flags)
    } else {
        b.reopen_unless_rdwr(&what, s, flags)
    };
    if flags & libc::O_PATH == 0 {
        b.seek(&what, s, b.groups[g].file.position);
    }
    b.slot_of[g] = Some(s);
}

/// A directory, reopened by path; a deleted one made again (empty, as a
/// deleted directory is) and removed.
pub(super) fn plan_directory(b: &mut Builder, g: usize, fi: &FileIdentity) {
    let f = b.groups[g].file;
    let (what, flags) = (b.what(g), b.flags(g));
    let path = if fi.path.is_empty() {
        strip_deleted(&f.path).to_vec()
    } else {
        strip_deleted(&fi.path).to_vec()
    };
    if fi.deleted || f.path.ends_with(b" (deleted)") {
        let s = b.slot();
        b.op(
            &what,
            FdOp::TmpNode {
                slot: s,
                paths: temp_names(&path, fi.inode),
                mode: libc::S_IFDIR | (fi.mode & 0o7777),
                flags: flags | libc::O_DIRECTORY,
                meta: NodeMeta::of(fi),
            },
        );
        b.slot_of[g] = Some(s);
        return;
    }
    if let Some((pid, rest)) = proc_of_image(b, &path) {
        plan_late_open(b, g, pid, rest, flags | libc::O_DIRECTORY, 0);
        return;
    }
    let Some(s) = b.open_path(&what, &path, flags | libc::O_DIRECTORY) else {
        return;
    };
    if flags & libc::O_PATH == 0 {
        b.seek(&what, s, f.position);
    }
    b.slot_of[g] = Some(s);
}

/// FdOp::TmpFile: created with the saved user's ids where the restore
/// takes them (the file then belongs to that user, in a directory that
/// user may write to), then filled, sized, given its owner, mode and
/// times. At its old `name` when that is free, unlinked at once (so that
/// /proc/PID/fd names it as before), else O_TMPFILE in one of `dirs`.
pub(super) fn tmpfile(
    c: &mut Child<'_>,
    slot: usize,
    (name, dirs): (Option<&CStr>, &[CString]),
    mode: u32,
    (contents, extents): (&[u8], &[(u64, u64)]),
    meta: &NodeMeta,
) -> ckpt_sys::Result<()> {
    let fd = c.as_saved(|_| {
        if let Some(name) = name {
            let excl = libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
            if let Ok(fd) = ckpt_sys::fds::open(name, excl, mode) {
                if ckpt_sys::fs::unlink_if_same(name, fd.as_raw_fd()).unwrap_or(false) {
                    return Ok(fd.into_raw_fd());
                }
            }
        }
        let mut last = None;
        for d in dirs {
            match fds::open(d, libc::O_TMPFILE | libc::O_RDWR, mode) {
                Ok(f) => return Ok(f.into_raw_fd()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| ckpt_sys::Error::Os {
            op: "open(O_TMPFILE)",
            tid: 0,
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        }))
    })?;
    let fd = c.new_fd(slot, fd)?;
    if extents.is_empty() {
        regular::pwrite_all(fd, contents, 0)?;
    } else {
        let mut at = 0usize;
        for &(off, len) in extents {
            let end = (at + len as usize).min(contents.len());
            regular::pwrite_all(fd, &contents[at..end], off)?;
            at = end;
        }
    }
    regular::ftruncate(fd, meta.size)?;
    if let Some((uid, gid)) = meta.owner {
        let (u, g, _) = fs::owner_of(fd)?;
        if (u, g) != (uid, gid) {
            fs::fchown(fd, uid, gid)?;
        }
    }
    // The umask applied at the creation; a chown clears set-id bits.
    regular::fchmod(fd, mode)?;
    if let Some((atime, mtime)) = meta.times {
        fs::set_times(fd, atime, mtime)?;
    }
    Ok(())
}

/// FdOp::TmpNode: made (with the saved user's ids where the restore
/// takes them) at the first free name of `paths`, given its owner, mode
/// and times, opened, and removed again; on a failure after it was made,
/// removed too.
pub(super) fn tmpnode(
    c: &mut Child<'_>,
    slot: usize,
    paths: &[CString],
    mode: u32,
    flags: i32,
    meta: &NodeMeta,
) -> ckpt_sys::Result<()> {
    let dir = mode & libc::S_IFMT == libc::S_IFDIR;
    let fd = c.as_saved(|_| {
        let mut last = ckpt_sys::Error::Os {
            op: "mknod",
            tid: 0,
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        };
        for p in paths {
            let made = match &meta.target {
                Some(t) if mode & libc::S_IFMT == libc::S_IFLNK => fs::symlink(t, p),
                _ => fs::mknod(p, mode, meta.rdev),
            };
            match made {
                Ok(()) => {
                    let r = fill_node(p, mode, flags, meta);
                    let rm = fs::remove_entry(p, dir);
                    let fd = r?;
                    if let Err(e) = rm {
                        let _ = fds::close(fd);
                        return Err(e);
                    }
                    return Ok(fd);
                }
                Err(e) => {
                    let again = matches!(
                        e.errno(),
                        Some(
                            libc::EEXIST | libc::EACCES | libc::EROFS | libc::ENOENT | libc::EPERM
                        )
                    );
                    last = e;
                    if !again {
                        break;
                    }
                }
            }
        }
        Err(last)
    })?;
    c.new_fd(slot, fd)?;
    Ok(())
}

/// Owner, mode and times of the node just made at `p`, then open it.
fn fill_node(p: &std::ffi::CStr, mode: u32, flags: i32, meta: &NodeMeta) -> ckpt_sys::Result<i32> {
    if let Some((uid, gid)) = meta.owner {
        let (u, g, _) = fs::owner_of_path(p)?;
        if (u, g) != (uid, gid) {
            fs::chown_nofollow(p, uid, gid)?;
        }
    }
    if mode & libc::S_IFMT != libc::S_IFLNK {
        // (A symlink has no mode of its own.)
        fs::chmod_nofollow(p, mode & 0o7777)?;
    }
    let fd = fds::open(p, flags | libc::O_NOFOLLOW, 0)?.into_raw_fd();
    if let Some((atime, mtime)) = meta.times {
        if let Err(e) = fs::set_times_nofollow(p, atime, mtime) {
            let _ = fds::close(fd);
            return Err(e);
        }
    }
    Ok(fd)
}

/// An unlinked copy is created by the restorer, so never with set-id bits
/// for another user's process.
pub(super) fn check_tmpfile(what: &str, mode: u32, r: &mut Report) {
    if mode & 0o6000 != 0 {
        r.errors.push(format!(
            "{what}: its unlinked copy would be created set-user/group-id (mode {mode:#o}) by the restorer"
        ));
    }
}

/// `/proc/PID/REST` where PID is a process or thread of the image: the
/// pid and REST (empty or starting with '/').
fn proc_of_image<'p>(b: &Builder, path: &'p [u8]) -> Option<(i32, &'p [u8])> {
    let tail = path.strip_prefix(b"/proc/")?;
    let end = tail.iter().position(|&c| c == b'/').unwrap_or(tail.len());
    let pid: i32 = std::str::from_utf8(&tail[..end]).ok()?.parse().ok()?;
    let ours = b
        .image
        .processes
        .iter()
        .any(|q| q.pid == pid || q.threads.iter().any(|t| t.tid == pid));
    ours.then_some((pid, &tail[end..]))
}

/// A file under /proc/PID of a process of the image: opened once that
/// process exists under its restored pid, by an open injected into each
/// process holding it (`late`; each holder gets a description of its
/// own), at the saved offset.
fn plan_late_open(b: &mut Builder, g: usize, pid: i32, rest: &[u8], flags: i32, pos: u64) {
    let what = b.what(g);
    if rest.contains(&0) {
        b.error(format!("{what}: path holds a NUL byte"));
        return;
    }
    let mut by_proc: std::collections::BTreeMap<usize, Vec<(i32, bool)>> = Default::default();
    for &(i, f) in &b.groups[g].holders {
        by_proc.entry(i).or_default().push((f.fd, f.cloexec));
    }
    if by_proc.len() > 1 {
        b.warning(format!(
            "{what}: held by {} processes: each gets a description of its own (offsets no longer shared)",
            by_proc.len()
        ));
    }
    for (proc, fds) in by_proc {
        b.plan.late.push(super::LateFd {
            proc,
            what: what.clone(),
            op: super::LateOp::ProcOpen {
                pid,
                rest: rest.to_vec(),
                flags: flags & !libc::O_CLOEXEC,
                pos,
                fds,
            },
        });
    }
    b.late[g] = true;
}

/// LateOp::ProcOpen injected into `main`: `/proc/PID/REST` with the pid
/// as restored (`ids`), at `pos`, at each of `fds`.
pub(crate) fn late_proc_open(
    main: &mut crate::remote::Remote,
    what: &str,
    (pid, rest, flags, pos): (i32, &[u8], i32, u64),
    fds: &[(i32, bool)],
    ids: &std::collections::BTreeMap<i32, i32>,
    scratch: u64,
) -> crate::error::Result<()> {
    let pid = ids.get(&pid).copied().unwrap_or(pid);
    let mut path = format!("/proc/{pid}").into_bytes();
    path.extend_from_slice(rest);
    let shown = String::from_utf8_lossy(&path).into_owned();
    let fd = main.open(&format!("{what}: open of {shown}"), scratch, &path, flags)?;
    if pos > 0 {
        main.call(
            &format!("{what}: lseek of {shown} to {pos}"),
            libc::SYS_lseek,
            &[fd, pos, libc::SEEK_SET as u64],
        )?;
    }
    super::pidfd::place_late(main, what, fd, fds)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{fd, file, none};
    use super::super::{plan_fds, FdEnv};
    use super::*;
    use ckpt_image::*;

    #[test]
    fn deleted_file_needs_contents_and_sockets_are_refused() {
        let mut img = Image::default();
        let rf = RegularFile {
            file: FileIdentity {
                path: b"/d/f".to_vec(),
                deleted: true,
                ..Default::default()
            },
            ..Default::default()
        };
        img.files
            .push(file(1, libc::O_RDWR as u32, FileKind::Regular(rf.clone())));
        img.files.push(file(
            2,
            libc::O_RDWR as u32,
            // Connected to a socket outside the image.
            FileKind::UnixSocket(UnixSocket {
                sock_type: libc::SOCK_STREAM as u32,
                state: 1,
                inode: 100,
                peer_inode: 200,
                ..Default::default()
            }),
        ));
        let p = Process {
            fds: vec![fd(3, 1), fd(4, 2)],
            ..Default::default()
        };
        let plan = plan_fds(&img, &p, &FdEnv::default(), &mut none);
        assert_eq!(plan.errors.len(), 2, "{:?}", plan.errors);
        assert!(plan.errors[0].contains("deleted"));
        assert!(
            plan.errors[1]
                .starts_with("fd 4: /x: a unix socket connected to a socket outside the image"),
            "{}",
            plan.errors[1]
        );

        img.files[0].kind = FileKind::Regular(RegularFile {
            has_contents: true,
            ..rf
        });
        img.files[0].flags = libc::O_RDONLY as u32;
        img.files[0].position = 5;
        let p = Process {
            fds: vec![fd(3, 1)],
            ..Default::default()
        };
        let plan = plan_fds(&img, &p, &FdEnv::default(), &mut |_| Ok(b"abc".to_vec()));
        assert!(plan.errors.is_empty(), "{:?}", plan.errors);
        match &plan.ops[0] {
            FdOp::TmpFile {
                name,
                dirs,
                contents,
                ..
            } => {
                assert_eq!(name.as_deref(), Some(c"/d/f"));
                assert_eq!(dirs[0].as_bytes(), b"/d");
                assert_eq!(contents, b"abc");
            }
            o => panic!("{o:?}"),
        }
        assert!(matches!(
            plan.ops[1],
            FdOp::Reopen {
                slot: 1,
                from: 0,
                flags: 0
            }
        ));
        assert_eq!(plan.ops[2], FdOp::Seek { slot: 1, pos: 5 });
    }
}
