//! Regular files and directories, reopened by path at their saved offset;
//! deleted files (and O_TMPFILE files) are made again as unlinked files
//! with their saved contents.

use super::{cpath, strip_deleted, Builder, FdOp, O_TMPFILE_BIT};
use crate::stub::Child;
use crate::Report;
use ckpt_image::{FileIdentity, RegularFile};
use ckpt_sys::setup;
use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, IntoRawFd};

/// A regular file: reopened by path, or made again when it was deleted.
pub(super) fn plan_file(b: &mut Builder, g: usize, rf: &RegularFile) {
    let f = b.groups[g].file;
    let path = if rf.file.path.is_empty() {
        strip_deleted(&f.path).to_vec()
    } else {
        strip_deleted(&rf.file.path).to_vec()
    };
    if rf.file.deleted || f.path.ends_with(b" (deleted)") {
        plan_deleted(b, g, rf, &path);
        return;
    }
    let (what, flags) = (b.what(g), b.flags(g));
    let Some(s) = b.open_path(&what, &path, flags) else {
        return;
    };
    if flags & libc::O_PATH == 0 {
        b.seek(&what, s, f.position);
    }
    b.slot_of[g] = Some(s);
}

/// A deleted file: an unlinked file with the saved contents, in the
/// directory it was in (else /tmp).
fn plan_deleted(b: &mut Builder, g: usize, rf: &RegularFile, path: &[u8]) {
    let (what, flags) = (b.what(g), b.flags(g));
    let s = b.slot();
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
    dirs.push(CString::new("/tmp").expect("no NUL"));
    let mode = if rf.file.mode & 0o7777 != 0 {
        rf.file.mode & 0o7777
    } else {
        0o600
    };
    b.op(
        &what,
        FdOp::TmpFile {
            slot: s,
            name: cpath(path),
            dirs,
            mode,
            contents,
        },
    );
    let s = b.reopen_unless_rdwr(&what, s, flags & !(O_TMPFILE_BIT | libc::O_DIRECTORY));
    b.seek(&what, s, b.groups[g].file.position);
    b.slot_of[g] = Some(s);
}

/// A directory, reopened by path.
pub(super) fn plan_directory(b: &mut Builder, g: usize, fi: &FileIdentity) {
    let f = b.groups[g].file;
    let (what, flags) = (b.what(g), b.flags(g));
    let path = if fi.path.is_empty() {
        f.path.clone()
    } else {
        fi.path.clone()
    };
    if fi.deleted {
        b.error(format!("{what}: the directory was deleted"));
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
/// user may write to), then filled. At its old `name` when that is free,
/// unlinked at once (so that /proc/PID/fd names it as before), else
/// O_TMPFILE in one of `dirs`.
pub(super) fn tmpfile(
    c: &mut Child<'_>,
    slot: usize,
    name: Option<&CStr>,
    dirs: &[CString],
    mode: u32,
    contents: &[u8],
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
            match setup::open(d, libc::O_TMPFILE | libc::O_RDWR, mode) {
                Ok(f) => return Ok(f),
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
    setup::pwrite_all(fd, contents, 0)
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
