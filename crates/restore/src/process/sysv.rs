//! SysV IPC objects of the image (segments, semaphore sets, message
//! queues), in the restorer's IPC namespace, before the stub exists: each
//! one is reused when an object with its id is still there unchanged
//! (same key, size, owner and contents: the dumped process was killed
//! and the object outlived it), made again with its id when the id is
//! free (/proc/sys/kernel/KIND_next_id, then *get), and refused when the
//! id or the key is taken by something else.
//!
//! Segments are attached by the process being built (mem/vmas.rs); those
//! that were removed (IPC_RMID) at the dump are removed again once they
//! are attached ([`Made::remove_removed`]). On a failed restore, the
//! objects made here are removed ([`Made`] drop).

use crate::error::{Error, Result};
use crate::Report;
use ckpt_image::{Image, ImageReader, IpcPerm, ReadAt, SysvMsgQueue, SysvSem, SysvShm};
use ckpt_sys::ipc::{self, Kind};

/// What became of a saved object here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Its id is free: it is made again.
    Make,
    /// An object with its id is there, unchanged: it is used as it is.
    Reuse,
}

fn ipc_err(what: String) -> Error {
    Error::Ipc { what }
}

/// The objects of `kind` with their ids, keys: (id, key).
fn existing(kind: Kind) -> Vec<(i32, i32)> {
    let path = format!("/proc/sysvipc/{}", kind.name());
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let key = f.next()?.parse().ok()?;
            let id = f.next()?.parse().ok()?;
            Some((id, key))
        })
        .collect()
}

/// Same key, owner and mode (the kernel's view: `now`) as saved.
fn same_perm(saved: &IpcPerm, now: &ipc::Perm) -> bool {
    saved.key == now.key
        && saved.uid == now.uid
        && saved.gid == now.gid
        && saved.mode & 0o777 == now.mode & 0o777
}

/// Whether saved object (kind, perm) can be made again or reused, or why not.
fn fate<R: ReadAt>(
    reader: &ImageReader<R>,
    kind: Kind,
    perm: &IpcPerm,
    what: &str,
    there: &[(i32, i32)],
    obj: Obj<'_>,
) -> std::result::Result<Fate, String> {
    if !there.iter().any(|(id, _)| *id == perm.id) {
        if perm.key != libc::IPC_PRIVATE {
            if let Some((id, _)) = there.iter().find(|(_, k)| *k == perm.key) {
                return Err(format!(
                    "{what}: its key {:#x} is taken by {} {id}",
                    perm.key,
                    kind.name()
                ));
            }
        }
        return Ok(Fate::Make);
    }
    let unchanged = match obj {
        Obj::Shm(s) => ipc::shm_stat(perm.id).is_ok_and(|st| {
            same_perm(perm, &st.perm) && st.size == s.size && shm_same(reader, s).unwrap_or(false)
        }),
        Obj::Sem(s) => ipc::sem_read(perm.id)
            .is_ok_and(|now| same_perm(perm, &now.perm) && now.values == s.values),
        Obj::Msg(q) => ipc::msg_read(perm.id).is_ok_and(|now| {
            same_perm(perm, &now.perm)
                && now.messages.len() == q.messages.len()
                && now
                    .messages
                    .iter()
                    .zip(&q.messages)
                    .all(|((t, d), m)| *t == m.mtype && *d == m.data)
        }),
    };
    if unchanged {
        Ok(Fate::Reuse)
    } else {
        Err(format!(
            "{what}: id {} is taken by another {} object, or by this one changed since the dump (remove it with ipcrm to restore the saved one)",
            perm.id,
            kind.name()
        ))
    }
}

/// One saved object.
#[derive(Clone, Copy)]
enum Obj<'a> {
    Shm(&'a SysvShm),
    Sem(&'a SysvSem),
    Msg(&'a SysvMsgQueue),
}

fn objects(image: &Image) -> Vec<(Kind, &IpcPerm, String, Obj<'_>)> {
    let mut v: Vec<(Kind, &IpcPerm, String, Obj<'_>)> = Vec::new();
    for s in &image.sysv_shm {
        v.push((
            Kind::Shm,
            &s.perm,
            format!("shared memory segment {}", s.perm.id),
            Obj::Shm(s),
        ));
    }
    for s in &image.sysv_sem {
        v.push((
            Kind::Sem,
            &s.perm,
            format!("semaphore set {}", s.perm.id),
            Obj::Sem(s),
        ));
    }
    for q in &image.sysv_msg {
        v.push((
            Kind::Msg,
            &q.perm,
            format!("message queue {}", q.perm.id),
            Obj::Msg(q),
        ));
    }
    v
}

/// Which objects cannot be made again or reused here.
pub(crate) fn check<R: ReadAt>(reader: &ImageReader<R>, r: &mut Report) {
    let image = reader.image();
    let objs = objects(image);
    if objs.is_empty() {
        return;
    }
    let mut make = false;
    for (kind, perm, what, obj) in &objs {
        match fate(reader, *kind, perm, what, &existing(*kind), *obj) {
            Ok(Fate::Make) => make = true,
            Ok(Fate::Reuse) => r.warnings.push(format!(
                "SysV {what}: still there, unchanged: the restored process uses it as it is"
            )),
            Err(e) => r.errors.push(format!("SysV {e}")),
        }
    }
    if make
        && std::fs::OpenOptions::new()
            .write(true)
            .open("/proc/sys/kernel/shm_next_id")
            .is_err()
    {
        r.errors.push(
            "SysV IPC objects of the image must be made with their saved ids, which needs /proc/sys/kernel/*_next_id writable (CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN)".into(),
        );
    }
}

/// Whether the segment with the saved id holds the saved contents.
fn shm_same<R: ReadAt>(reader: &ImageReader<R>, s: &SysvShm) -> Result<bool> {
    let saved = reader.read_blob(&s.contents).map_err(|e| {
        ipc_err(format!(
            "shared memory segment {}: reading its saved contents: {e}",
            s.perm.id
        ))
    })?;
    let at = ipc::ShmAttach::new(s.perm.id, s.size, false).map_err(|e| {
        ipc_err(format!(
            "shared memory segment {}: attaching it: {e}",
            s.perm.id
        ))
    })?;
    let mut now = vec![0u8; s.size as usize];
    at.read(0, &mut now);
    Ok(now == saved)
}

/// The objects made here: removed on drop unless [`Made::keep`] was called.
#[derive(Default)]
pub(crate) struct Made {
    made: Vec<(Kind, i32)>,
    /// Segments removed at the dump: removed again once attached.
    rmid: Vec<i32>,
    done: bool,
}

impl Made {
    /// The process has attached its segments: those that were removed at
    /// the dump are removed again (they go with their last attach).
    pub(crate) fn remove_removed(&mut self) -> Result<()> {
        for id in std::mem::take(&mut self.rmid) {
            ipc::remove(Kind::Shm, id)
                .map_err(|e| ipc_err(format!("shared memory segment {id}: IPC_RMID: {e}")))?;
        }
        Ok(())
    }

    /// The restore succeeded: the objects stay.
    pub(crate) fn keep(&mut self) {
        self.done = true;
    }
}

impl Drop for Made {
    fn drop(&mut self) {
        if !self.done {
            for &(kind, id) in &self.made {
                let _ = ipc::remove(kind, id);
            }
        }
    }
}

/// Make again (or reuse) every object of the image.
pub(crate) fn restore<R: ReadAt>(reader: &ImageReader<R>) -> Result<Made> {
    let image = reader.image();
    let mut made = Made::default();
    for (kind, perm, what, obj) in objects(image) {
        let f = fate(reader, kind, perm, &what, &existing(kind), obj).map_err(ipc_err)?;
        if let Obj::Shm(s) = obj {
            if s.removed {
                made.rmid.push(perm.id);
            }
        }
        if f == Fate::Reuse {
            continue;
        }
        ipc::set_next_id(kind, perm.id)
            .map_err(|e| ipc_err(format!("{what}: asking for id {}: {e}", perm.id)))?;
        let key = if matches!(obj, Obj::Shm(s) if s.removed) {
            libc::IPC_PRIVATE
        } else {
            perm.key
        };
        let id = match obj {
            Obj::Shm(s) => ipc::shm_create(key, s.size, perm.mode),
            Obj::Sem(s) => ipc::sem_create(key, perm.mode, &s.values),
            Obj::Msg(q) => {
                let msgs: Vec<(i64, Vec<u8>)> = q
                    .messages
                    .iter()
                    .map(|m| (m.mtype, m.data.clone()))
                    .collect();
                ipc::msg_create(key, perm.mode, q.qbytes, &msgs)
            }
        }
        .map_err(|e| ipc_err(format!("{what}: making it again: {e}")))?;
        made.made.push((kind, id));
        if id != perm.id {
            return Err(ipc_err(format!(
                "{what}: made again with id {id} instead (another object took the id meanwhile)"
            )));
        }
        if let Obj::Shm(s) = obj {
            fill_shm(reader, s)?;
        }
        ipc::set_owner(kind, id, perm.uid, perm.gid, perm.mode)
            .map_err(|e| ipc_err(format!("{what}: setting its owner and mode: {e}")))?;
        tracing::debug!(kind = kind.name(), id, "SysV object made again");
    }
    Ok(made)
}

/// The saved contents into a new segment (zero pages are left as holes).
fn fill_shm<R: ReadAt>(reader: &ImageReader<R>, s: &SysvShm) -> Result<()> {
    let id = s.perm.id;
    let data = reader.read_blob(&s.contents).map_err(|e| {
        ipc_err(format!(
            "shared memory segment {id}: reading its saved contents: {e}"
        ))
    })?;
    if data.iter().all(|&b| b == 0) {
        return Ok(());
    }
    let at = ipc::ShmAttach::new(id, s.size, true)
        .map_err(|e| ipc_err(format!("shared memory segment {id}: attaching it: {e}")))?;
    const CHUNK: usize = 4096;
    for (i, c) in data.chunks(CHUNK).enumerate() {
        if c.iter().any(|&b| b != 0) {
            at.write(i * CHUNK, c);
        }
    }
    Ok(())
}
