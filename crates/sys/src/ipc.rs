//! System V IPC of the caller's IPC namespace: shared memory segments,
//! semaphore sets and message queues (by hand: nix has none of them).
//!
//! Reading never changes an object's contents: messages are copied with
//! `MSG_COPY` (the queue keeps them), segments are read through a
//! read-only attach of the caller's own.

use crate::{last_os, os_errno, Result};
use std::os::fd::AsRawFd;

/// The ipc_perm fields ckpt keeps, and the object's id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Perm {
    pub key: i32,
    pub id: i32,
    /// Permission bits, with SHM_DEST (0o1000) and SHM_LOCKED (0o2000)
    /// for segments.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub cuid: u32,
    pub cgid: u32,
}

fn perm_of(id: i32, p: &libc::ipc_perm) -> Perm {
    Perm {
        key: p.__key,
        id,
        mode: u32::from(p.mode),
        uid: p.uid,
        gid: p.gid,
        cuid: p.cuid,
        cgid: p.cgid,
    }
}

/// A segment's state (shmctl IPC_STAT).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShmStat {
    pub perm: Perm,
    pub size: u64,
    pub nattch: u64,
    pub cpid: i32,
    pub lpid: i32,
}

/// SHM_DEST in `Perm::mode`: IPC_RMID was done, the segment goes with its
/// last attach.
pub const SHM_DEST: u32 = 0o1000;

/// shmctl(IPC_STAT) of segment `id`.
pub fn shm_stat(id: i32) -> Result<ShmStat> {
    // SAFETY: all-zero is a valid shmid_ds (integers only).
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: `ds` is a live shmid_ds the kernel fills.
    let r = unsafe { libc::shmctl(id, libc::IPC_STAT, &mut ds) };
    if r < 0 {
        return Err(last_os("shmctl(IPC_STAT)", 0));
    }
    Ok(ShmStat {
        perm: perm_of(id, &ds.shm_perm),
        size: ds.shm_segsz as u64,
        nattch: ds.shm_nattch,
        cpid: ds.shm_cpid,
        lpid: ds.shm_lpid,
    })
}

/// shmget(2): a new segment (IPC_CREAT | IPC_EXCL unless `key` is
/// IPC_PRIVATE) of `size` bytes and permission bits `mode`.
pub fn shm_create(key: i32, size: u64, mode: u32) -> Result<i32> {
    let flags = libc::IPC_CREAT | libc::IPC_EXCL | (mode & 0o777) as i32;
    // SAFETY: integer arguments only.
    let r = unsafe { libc::shmget(key, size as usize, flags) };
    if r < 0 {
        return Err(last_os("shmget", 0));
    }
    Ok(r)
}

/// A segment attached in the caller; detached on drop.
pub struct ShmAttach {
    addr: *mut libc::c_void,
    len: usize,
}

impl ShmAttach {
    /// shmat(2) of segment `id` (`size` bytes) anywhere, read-only or
    /// read-write.
    pub fn new(id: i32, size: u64, write: bool) -> Result<ShmAttach> {
        let flags = if write { 0 } else { libc::SHM_RDONLY };
        // SAFETY: a null address lets the kernel choose where; nothing of
        // ours is mapped over.
        let addr = unsafe { libc::shmat(id, std::ptr::null(), flags) };
        if addr as isize == -1 {
            return Err(last_os("shmat", 0));
        }
        Ok(ShmAttach {
            addr,
            len: size as usize,
        })
    }

    /// The mapping's address (to find it under /proc/self/map_files).
    pub fn addr(&self) -> u64 {
        self.addr as u64
    }

    /// Copy `buf.len()` bytes from offset `off` of the segment.
    pub fn read(&self, off: usize, buf: &mut [u8]) {
        let n = buf.len().min(self.len.saturating_sub(off));
        // SAFETY: [off, off+n) lies inside the attached segment, mapped
        // readable for the life of self; `buf` has room for n bytes and
        // does not overlap a mapping we just made.
        unsafe {
            std::ptr::copy_nonoverlapping(self.addr.cast::<u8>().add(off), buf.as_mut_ptr(), n)
        }
    }

    /// Copy `data` into the segment at offset `off` (attached read-write).
    pub fn write(&self, off: usize, data: &[u8]) {
        let n = data.len().min(self.len.saturating_sub(off));
        // SAFETY: [off, off+n) lies inside the attached segment, mapped
        // read-write (`new` with `write`) for the life of self.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.addr.cast::<u8>().add(off), n) }
    }
}

impl Drop for ShmAttach {
    fn drop(&mut self) {
        // SAFETY: `addr` is our own attach, and nothing refers to it past
        // this point.
        unsafe { libc::shmdt(self.addr) };
    }
}

/// IPC_SET of a segment, set or queue: owner and permission bits (and a
/// queue's byte limit, when `qbytes` is given).
pub fn set_owner(kind: Kind, id: i32, uid: u32, gid: u32, mode: u32) -> Result<()> {
    match kind {
        Kind::Shm => {
            // SAFETY: all-zero is a valid shmid_ds.
            let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
            // SAFETY: live struct, filled then read by the kernel.
            if unsafe { libc::shmctl(id, libc::IPC_STAT, &mut ds) } < 0 {
                return Err(last_os("shmctl(IPC_STAT)", 0));
            }
            (ds.shm_perm.uid, ds.shm_perm.gid) = (uid, gid);
            ds.shm_perm.mode = (mode & 0o777) as libc::c_ushort;
            // SAFETY: as above.
            if unsafe { libc::shmctl(id, libc::IPC_SET, &mut ds) } < 0 {
                return Err(last_os("shmctl(IPC_SET)", 0));
            }
        }
        Kind::Sem => {
            let mut ds = sem_ds(id)?;
            (ds.sem_perm.uid, ds.sem_perm.gid) = (uid, gid);
            ds.sem_perm.mode = (mode & 0o777) as libc::c_ushort;
            // SAFETY: IPC_SET reads a semid_ds through the pointer argument.
            if unsafe { libc::semctl(id, 0, libc::IPC_SET, &mut ds as *mut libc::semid_ds) } < 0 {
                return Err(last_os("semctl(IPC_SET)", 0));
            }
        }
        Kind::Msg => {
            let mut ds = msg_ds(id)?;
            (ds.msg_perm.uid, ds.msg_perm.gid) = (uid, gid);
            ds.msg_perm.mode = (mode & 0o777) as libc::c_ushort;
            // SAFETY: live struct read by the kernel.
            if unsafe { libc::msgctl(id, libc::IPC_SET, &mut ds) } < 0 {
                return Err(last_os("msgctl(IPC_SET)", 0));
            }
        }
    }
    Ok(())
}

/// The three kinds of objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Shm,
    Sem,
    Msg,
}

impl Kind {
    /// "shm", "sem", "msg": the /proc/sys/kernel/KIND_next_id and
    /// /proc/sysvipc/KIND names.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Shm => "shm",
            Kind::Sem => "sem",
            Kind::Msg => "msg",
        }
    }
}

/// IPC_RMID of an object.
pub fn remove(kind: Kind, id: i32) -> Result<()> {
    // SAFETY: IPC_RMID takes no buffer (a null pointer is allowed).
    let r = unsafe {
        match kind {
            Kind::Shm => libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()),
            Kind::Sem => libc::semctl(id, 0, libc::IPC_RMID),
            Kind::Msg => libc::msgctl(id, libc::IPC_RMID, std::ptr::null_mut()),
        }
    };
    if r < 0 {
        return Err(last_os("IPC_RMID", 0));
    }
    Ok(())
}

/// Have the next object of `kind` created in this IPC namespace get id
/// `id` (writes /proc/sys/kernel/KIND_next_id; the kernel resets it to -1
/// once used). Needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN.
pub fn set_next_id(kind: Kind, id: i32) -> Result<()> {
    let path = format!("/proc/sys/kernel/{}_next_id", kind.name());
    std::fs::write(&path, id.to_string()).map_err(|source| crate::Error::Os {
        op: "writing /proc/sys/kernel/*_next_id",
        tid: 0,
        source,
    })
}

fn sem_ds(id: i32) -> Result<libc::semid_ds> {
    // SAFETY: all-zero is a valid semid_ds.
    let mut ds: libc::semid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: IPC_STAT fills the semid_ds the pointer argument points at.
    if unsafe { libc::semctl(id, 0, libc::IPC_STAT, &mut ds as *mut libc::semid_ds) } < 0 {
        return Err(last_os("semctl(IPC_STAT)", 0));
    }
    Ok(ds)
}

fn msg_ds(id: i32) -> Result<libc::msqid_ds> {
    // SAFETY: all-zero is a valid msqid_ds.
    let mut ds: libc::msqid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: live struct filled by the kernel.
    if unsafe { libc::msgctl(id, libc::IPC_STAT, &mut ds) } < 0 {
        return Err(last_os("msgctl(IPC_STAT)", 0));
    }
    Ok(ds)
}

/// A semaphore set: its permissions, its values and, for each
/// semaphore, the pid of the last semop on it (GETPID).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SemSet {
    pub perm: Perm,
    pub values: Vec<u16>,
    pub pids: Vec<i32>,
}

/// The state of semaphore set `id`.
pub fn sem_read(id: i32) -> Result<SemSet> {
    let ds = sem_ds(id)?;
    let n = ds.sem_nsems as usize;
    let mut values = vec![0u16; n];
    if n > 0 {
        // SAFETY: GETALL writes sem_nsems unsigned shorts into the array.
        if unsafe { libc::semctl(id, 0, libc::GETALL, values.as_mut_ptr()) } < 0 {
            return Err(last_os("semctl(GETALL)", 0));
        }
    }
    let mut pids = Vec::with_capacity(n);
    for i in 0..n {
        // SAFETY: GETPID takes no buffer.
        let r = unsafe { libc::semctl(id, i as i32, libc::GETPID) };
        if r < 0 {
            return Err(last_os("semctl(GETPID)", 0));
        }
        pids.push(r);
    }
    Ok(SemSet {
        perm: perm_of(id, &ds.sem_perm),
        values,
        pids,
    })
}

/// semget(2): a new set of `n` semaphores, then their values (SETALL).
pub fn sem_create(key: i32, mode: u32, values: &[u16]) -> Result<i32> {
    let flags = libc::IPC_CREAT | libc::IPC_EXCL | (mode & 0o777) as i32;
    // SAFETY: integer arguments only.
    let id = unsafe { libc::semget(key, values.len() as i32, flags) };
    if id < 0 {
        return Err(last_os("semget", 0));
    }
    if !values.is_empty() {
        let mut v = values.to_vec();
        // SAFETY: SETALL reads sem_nsems (= values.len()) shorts.
        if unsafe { libc::semctl(id, 0, libc::SETALL, v.as_mut_ptr()) } < 0 {
            let e = last_os("semctl(SETALL)", 0);
            let _ = remove(Kind::Sem, id);
            return Err(e);
        }
    }
    Ok(id)
}

/// A message queue: its permissions, byte limit, last sender and
/// receiver, and its messages (type, bytes) in queue order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MsgQueue {
    pub perm: Perm,
    pub qbytes: u64,
    pub lspid: i32,
    pub lrpid: i32,
    pub messages: Vec<(i64, Vec<u8>)>,
}

/// The most bytes of one message (a bound for the copy buffer).
const MSG_MAX: usize = 1 << 20;
const MSG_COPY: i32 = 0o40000;

/// The state of queue `id`, its messages copied (MSG_COPY: the queue
/// keeps them; needs a kernel with CONFIG_CHECKPOINT_RESTORE).
pub fn msg_read(id: i32) -> Result<MsgQueue> {
    let ds = msg_ds(id)?;
    let count = ds.msg_qnum as usize;
    let cap = (ds.msg_qbytes as usize).clamp(1, MSG_MAX);
    let mut buf = vec![0u8; 8 + cap];
    let mut messages = Vec::with_capacity(count);
    for i in 0..count {
        // SAFETY: `buf` holds a long mtype followed by `cap` bytes of text,
        // which is what msgrcv writes at most.
        let r = unsafe {
            libc::msgrcv(
                id,
                buf.as_mut_ptr().cast(),
                cap,
                i as libc::c_long,
                MSG_COPY | libc::IPC_NOWAIT | libc::MSG_NOERROR,
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOMSG) {
                break; // a message went meanwhile
            }
            return Err(crate::Error::Os {
                op: "msgrcv(MSG_COPY)",
                tid: 0,
                source: e,
            });
        }
        let mtype = i64::from_ne_bytes(buf[..8].try_into().expect("8 bytes"));
        messages.push((mtype, buf[8..8 + r as usize].to_vec()));
    }
    Ok(MsgQueue {
        perm: perm_of(id, &ds.msg_perm),
        qbytes: ds.msg_qbytes,
        lspid: ds.msg_lspid,
        lrpid: ds.msg_lrpid,
        messages,
    })
}

/// msgget(2): a new queue; then its messages sent in order, and its byte
/// limit set when it differs from the default (raising it past msgmnb
/// needs CAP_SYS_RESOURCE).
pub fn msg_create(key: i32, mode: u32, qbytes: u64, messages: &[(i64, Vec<u8>)]) -> Result<i32> {
    let flags = libc::IPC_CREAT | libc::IPC_EXCL | (mode & 0o777) as i32;
    // SAFETY: integer arguments only.
    let id = unsafe { libc::msgget(key, flags) };
    if id < 0 {
        return Err(last_os("msgget", 0));
    }
    let r = (|| {
        let mut ds = msg_ds(id)?;
        if ds.msg_qbytes != qbytes && qbytes != 0 {
            ds.msg_qbytes = qbytes;
            // SAFETY: live struct read by the kernel.
            if unsafe { libc::msgctl(id, libc::IPC_SET, &mut ds) } < 0 {
                return Err(last_os("msgctl(IPC_SET msg_qbytes)", 0));
            }
        }
        let mut buf = Vec::new();
        for (mtype, data) in messages {
            if *mtype <= 0 {
                return Err(os_errno("msgsnd", 0, libc::EINVAL));
            }
            buf.clear();
            buf.extend_from_slice(&mtype.to_ne_bytes());
            buf.extend_from_slice(data);
            // SAFETY: `buf` is a long mtype followed by data.len() bytes.
            let r = unsafe { libc::msgsnd(id, buf.as_ptr().cast(), data.len(), libc::IPC_NOWAIT) };
            if r < 0 {
                return Err(last_os("msgsnd", 0));
            }
        }
        Ok(())
    })();
    if let Err(e) = r {
        let _ = remove(Kind::Msg, id);
        return Err(e);
    }
    Ok(id)
}

/// The data ranges of the shmem object behind `fd` in `0..size`
/// (SEEK_DATA/SEEK_HOLE), page-aligned outwards.
pub fn data_ranges(fd: impl AsRawFd + Copy, size: u64, page: u64) -> Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let Some(d) = crate::fds::regular::seek_data_or_hole(fd, pos, false)? else {
            break;
        };
        let d = d / page * page;
        if d >= size {
            break;
        }
        let h = crate::fds::regular::seek_data_or_hole(fd, d, true)?
            .unwrap_or(size)
            .div_ceil(page)
            * page;
        let h = h.min(size).max(d + page.min(size - d));
        out.push((d, h));
        pos = h;
    }
    Ok(out)
}
