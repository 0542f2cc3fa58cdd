//! Semantic validation of decoded metadata: reject self-contradictory images
//! with an error naming the field, process and address.

use crate::container::{HEADER_LEN, MAX_FRAME, RECORD_HEADER_LEN};
use crate::model::*;
use crate::{Error, Result, FORMAT_MAJOR, MAX_PAGE_SIZE, MIN_PAGE_SIZE};
use std::collections::{HashMap, HashSet};

/// Largest number of sigactions (signals 1..=64).
pub const MAX_SIGACTIONS: usize = 64;
/// Largest siginfo (the kernel's is 128 bytes).
pub const MAX_SIGINFO: usize = 128;

fn bad(msg: String) -> Error {
    Error::Invalid(msg)
}

/// Check that `image` is self-consistent and that every frame lies inside
/// `frames_end` bytes of the file (the offset of the metadata record that
/// describes it). The writer applies this before writing, the reader after
/// decoding.
/// The metadata's `generation` (UInt32) must equal the generation of the
/// commit record that names it (8 bytes; a value over 2^32 - 1 cannot
/// match). `commit_offset` is the commit record's file offset.
pub fn check_generation(image: &Image, commit_generation: u64, commit_offset: u64) -> Result<()> {
    if u64::from(image.generation) != commit_generation {
        return Err(crate::Error::Corrupt {
            offset: commit_offset + 24 + 16,
            what: format!(
                "the commit record says generation {commit_generation} but its metadata says {}",
                image.generation
            ),
        });
    }
    Ok(())
}

pub fn validate(image: &Image, frames_end: u64) -> Result<()> {
    if image.format_major != FORMAT_MAJOR {
        return Err(bad(format!(
            "Image.formatMajor is {}, this ckpt reads {FORMAT_MAJOR}",
            image.format_major
        )));
    }
    let ps = image.host.page_size;
    if !ps.is_power_of_two() || !(MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&ps) {
        return Err(bad(format!(
            "host.pageSize {ps} is not a power of two in {MIN_PAGE_SIZE}..={MAX_PAGE_SIZE}"
        )));
    }
    check_frames(image, frames_end)?;
    let file_ids = check_files(image)?;
    let mut pids = HashSet::new();
    let mut tids: HashMap<i32, i32> = HashMap::new();
    for (pi, p) in image.processes.iter().enumerate() {
        let pid = p.pid;
        let at = format!("processes[{pi}] (pid {pid})");
        if !pids.insert(pid) {
            return Err(bad(format!("{at}: duplicate pid {pid}")));
        }
        check_threads(p, &at, &mut tids)?;
        check_signals_and_fds(p, &at, &file_ids)?;
        check_vmas(image, p, &at)?;
        check_runs(image, p, &at)?;
        check_vma_contents(image, p, &at)?;
    }
    validate_1_2(image, &file_ids, &pids)
}

/// Frame records: in file order, inside the frame area, within the limits.
fn check_frames(image: &Image, frames_end: u64) -> Result<()> {
    let mut prev_end = 0u64;
    for (i, f) in image.frames.iter().enumerate() {
        // Frames are appended in order: each record lies after the previous one.
        if f.offset < prev_end.saturating_add(RECORD_HEADER_LEN) {
            return Err(bad(format!(
                "frames[{i}] at file offset {} overlaps or precedes the previous frame (ending at {prev_end})",
                f.offset
            )));
        }
        prev_end = f.offset.saturating_add(u64::from(f.stored_size));
        let end = f.offset.checked_add(u64::from(f.stored_size));
        if f.offset < HEADER_LEN + RECORD_HEADER_LEN || end.is_none() || end > Some(frames_end) {
            return Err(bad(format!(
                "frames[{i}] at file offset {} ({} bytes) is outside the file's frame area {}..{frames_end}",
                f.offset,
                f.stored_size,
                HEADER_LEN + RECORD_HEADER_LEN
            )));
        }
        if u64::from(f.size) > MAX_FRAME || u64::from(f.stored_size) > MAX_FRAME {
            return Err(bad(format!(
                "frames[{i}]: size {} / stored size {} over the limit of {MAX_FRAME}",
                f.size, f.stored_size
            )));
        }
        if f.codec == Codec::None && f.size != f.stored_size {
            return Err(bad(format!(
                "frames[{i}]: raw frame with size {} != stored size {}",
                f.size, f.stored_size
            )));
        }
    }

    Ok(())
}

/// Open files: unique ids, saved contents inside the frames; their ids.
fn check_files(image: &Image) -> Result<HashSet<u32>> {
    let mut file_ids = HashSet::new();
    for (i, f) in image.files.iter().enumerate() {
        if !file_ids.insert(f.id) {
            return Err(bad(format!("files[{i}]: duplicate open file id {}", f.id)));
        }
        let blob = match &f.kind {
            FileKind::Regular(r) => Some(&r.contents),
            FileKind::MemFd(m) => Some(&m.contents),
            _ => None,
        };
        if let Some(b) = blob {
            check_blob(image, b, &format!("files[{i}] (id {}) contents", f.id))?;
        }
    }

    Ok(file_ids)
}

/// Threads of process `p` (`at` names it): tids unique in the image
/// (`tids`: tid -> pid so far), pending signals within the limits.
fn check_threads(p: &Process, at: &str, tids: &mut HashMap<i32, i32>) -> Result<()> {
    let pid = p.pid;
    for t in &p.threads {
        if let Some(other) = tids.insert(t.tid, pid) {
            return Err(bad(format!(
                "{at}: duplicate tid {} (also a thread of pid {other})",
                t.tid
            )));
        }
        if t.pending.len() > 1 << 16 {
            return Err(bad(format!(
                "{at}: thread {} has {} pending signals",
                t.tid,
                t.pending.len()
            )));
        }
        for s in &t.pending {
            if s.raw.len() > MAX_SIGINFO {
                return Err(bad(format!(
                    "{at}: thread {} pending siginfo of {} bytes (max {MAX_SIGINFO})",
                    t.tid,
                    s.raw.len()
                )));
            }
        }
    }
    Ok(())
}

/// Signal state within the limits; fds sorted, on known open files.
fn check_signals_and_fds(p: &Process, at: &str, file_ids: &HashSet<u32>) -> Result<()> {
    if p.sigactions.len() > MAX_SIGACTIONS {
        return Err(bad(format!(
            "{at}: {} sigactions, at most {MAX_SIGACTIONS} (signals 1..=64)",
            p.sigactions.len()
        )));
    }
    for s in &p.shared_pending {
        if s.raw.len() > MAX_SIGINFO {
            return Err(bad(format!(
                "{at}: shared pending siginfo of {} bytes (max {MAX_SIGINFO})",
                s.raw.len()
            )));
        }
    }
    let mut prev_fd: Option<i32> = None;
    for fd in &p.fds {
        if fd.fd < 0 || prev_fd.is_some_and(|x| x >= fd.fd) {
            return Err(bad(format!(
                "{at}: fds not sorted or duplicate at fd {}",
                fd.fd
            )));
        }
        prev_fd = Some(fd.fd);
        if !file_ids.contains(&fd.file) {
            return Err(bad(format!(
                "{at}: fd {} refers to unknown open file id {}",
                fd.fd, fd.file
            )));
        }
    }
    Ok(())
}

/// VMAs: sorted, non-overlapping, page-aligned, non-empty.
fn check_vmas(image: &Image, p: &Process, at: &str) -> Result<()> {
    let ps = image.host.page_size;
    let ps64 = u64::from(ps);
    let mut prev_end = 0u64;
    for (vi, v) in p.vmas.iter().enumerate() {
        if v.start >= v.end {
            return Err(bad(format!(
                "{at}: vmas[{vi}] start {:#x} >= end {:#x}",
                v.start, v.end
            )));
        }
        if v.start % ps64 != 0 || v.end % ps64 != 0 {
            return Err(bad(format!(
                "{at}: vmas[{vi}] {:#x}-{:#x} is not aligned to the page size {ps}",
                v.start, v.end
            )));
        }
        if vi > 0 && v.start < prev_end {
            return Err(bad(format!(
                "{at}: vmas[{vi}] at {:#x} overlaps or is before the previous vma ending at {prev_end:#x}",
                v.start
            )));
        }
        prev_end = v.end;
    }
    Ok(())
}

/// Memory runs: sorted, non-overlapping, inside the VMAs, inside their frames.
fn check_runs(image: &Image, p: &Process, at: &str) -> Result<()> {
    let ps = image.host.page_size;
    let ps64 = u64::from(ps);
    let mut prev_end: Option<u64> = None;
    let mut vi = 0usize;
    for (ri, r) in p.memory.iter().enumerate() {
        let len = u64::from(r.pages) * ps64;
        let what = || format!("{at}: memory[{ri}] at {:#x} ({} pages)", r.start, r.pages);
        if r.pages == 0 {
            return Err(bad(format!("{}: empty run", what())));
        }
        if r.start % ps64 != 0 {
            return Err(bad(format!(
                "{}: start not aligned to the page size {ps}",
                what()
            )));
        }
        let Some(end) = r.start.checked_add(len) else {
            return Err(bad(format!("{}: end overflows the address space", what())));
        };
        if prev_end.is_some_and(|e| r.start < e) {
            return Err(bad(format!(
                "{}: overlaps or is before the previous run",
                what()
            )));
        }
        prev_end = Some(end);
        // Covered by consecutive, contiguous VMAs.
        while vi < p.vmas.len() && p.vmas[vi].end <= r.start {
            vi += 1;
        }
        let mut covered = r.start;
        let mut vj = vi;
        while covered < end {
            match p.vmas.get(vj) {
                Some(v) if v.start <= covered && covered < v.end => {
                    covered = v.end;
                    vj += 1;
                }
                _ => {
                    return Err(bad(format!(
                        "{}: address {covered:#x} of the run is not inside a vma of the process",
                        what()
                    )))
                }
            }
        }
        if r.kind == RunKind::Data {
            let Some(f) = image.frames.get(r.frame as usize) else {
                return Err(bad(format!(
                    "{}: frame index {} out of range (the image has {} frames)",
                    what(),
                    r.frame,
                    image.frames.len()
                )));
            };
            if u64::from(r.frame_offset) + len > u64::from(f.size) {
                return Err(bad(format!(
                    "{}: frameOffset {} + {len} bytes is beyond the size {} of frame {}",
                    what(),
                    r.frame_offset,
                    f.size,
                    r.frame
                )));
            }
        }
    }
    Ok(())
}

/// The saved contents of file mappings, inside the frames.
fn check_vma_contents(image: &Image, p: &Process, at: &str) -> Result<()> {
    for (vi, v) in p.vmas.iter().enumerate() {
        if let VmaBacking::File(fm) = &v.backing {
            if fm.has_contents {
                check_blob(
                    image,
                    &fm.contents,
                    &format!("{at}: vmas[{vi}] file contents"),
                )?;
            }
        }
    }
    Ok(())
}

/// The fields added in 1.2: indices and references that must resolve.
fn validate_1_2(image: &Image, file_ids: &HashSet<u32>, pids: &HashSet<i32>) -> Result<()> {
    for (what, id) in [
        ("imageId", &image.image_id),
        ("parent.imageId", &image.parent.image_id),
    ] {
        if id.len() > 64 {
            return Err(bad(format!("{what} is {} bytes (at most 64)", id.len())));
        }
    }
    if !image.parent.image_id.is_empty() && image.parent.image_id == image.image_id {
        return Err(bad("parent.imageId is the image's own imageId".into()));
    }
    if image.parent.image_id.is_empty() {
        for p in &image.processes {
            if let Some(r) = p.memory.iter().find(|r| r.kind == RunKind::Parent) {
                return Err(bad(format!(
                    "process {}: run at {:#x} is saved in the parent image, but the image has no parent",
                    p.pid, r.start
                )));
            }
        }
    }
    let nfilters = image.seccomp_filters.len();
    for (i, f) in image.seccomp_filters.iter().enumerate() {
        // A parent is always an earlier entry: chains cannot loop.
        if f.parent as usize > i {
            return Err(bad(format!(
                "seccompFilters[{i}]: parent {} is not an earlier filter",
                f.parent
            )));
        }
        if f.program.is_empty() || f.program.len() % 8 != 0 || f.program.len() > 4096 * 8 {
            return Err(bad(format!(
                "seccompFilters[{i}]: program of {} bytes is not 1..=4096 instructions of 8 bytes",
                f.program.len()
            )));
        }
    }
    for p in &image.processes {
        let at = format!("process {}", p.pid);
        for t in &p.threads {
            if t.seccomp_filter as usize > nfilters {
                return Err(bad(format!(
                    "{at}: thread {} seccompFilter {} out of range ({nfilters} filters)",
                    t.tid, t.seccomp_filter
                )));
            }
        }
        let sh = &p.shares;
        for (name, other) in [
            ("files", sh.files),
            ("fs", sh.fs),
            ("sighand", sh.sighand),
            ("vm", sh.vm),
            ("sysvsem", sh.sysvsem),
        ] {
            if other != 0 && (other == p.pid || !pids.contains(&other)) {
                return Err(bad(format!(
                    "{at}: shares.{name} names pid {other}, which is not another saved process"
                )));
            }
        }
    }
    for (i, l) in image.locks.iter().enumerate() {
        if !file_ids.contains(&l.file) {
            return Err(bad(format!("locks[{i}]: unknown open file id {}", l.file)));
        }
        if !pids.contains(&l.pid) {
            return Err(bad(format!(
                "locks[{i}]: pid {} is not a saved process",
                l.pid
            )));
        }
        if l.start.checked_add(l.length).is_none() {
            return Err(bad(format!("locks[{i}]: start + length overflows")));
        }
    }
    for f in &image.files {
        if let FileKind::Regular(r) = &f.kind {
            check_extents(f.id, r)?;
        }
    }
    for (i, o) in image.sysv_shm.iter().enumerate() {
        check_blob(image, &o.contents, &format!("sysvShm[{i}] contents"))?;
    }
    for f in &image.files {
        let at = format!("files (id {})", f.id);
        match &f.kind {
            FileKind::InetSocket(s) => check_inet(image, s, &at)?,
            FileKind::UnixSocket(u) => {
                for (j, m) in u.messages.iter().enumerate() {
                    if let Some(id) = m.files.iter().find(|id| !file_ids.contains(id)) {
                        return Err(bad(format!(
                            "{at}: messages[{j}] passes open file id {id}, which is not in the image"
                        )));
                    }
                }
            }
            _ => {}
        }
    }
    validate_ptys(image)
}

/// The extents of a regular file's saved contents: in order, inside the
/// file, adding up to the contents.
fn check_extents(id: u32, r: &RegularFile) -> Result<()> {
    let mut end = 0u64;
    let mut total = 0u64;
    for (j, e) in r.extents.iter().enumerate() {
        let stop = e.offset.checked_add(e.length);
        if e.offset < end || stop.is_none() || stop > Some(r.file.size) {
            return Err(bad(format!(
                "files (id {id}): extents[{j}] at {} ({} bytes) is out of order or past the file size {}",
                e.offset, e.length, r.file.size
            )));
        }
        end = stop.unwrap_or(u64::MAX);
        total = total.saturating_add(e.length);
    }
    if !r.extents.is_empty() && total != r.contents.size {
        return Err(bad(format!(
            "files (id {id}): extents hold {total} bytes, contents {}",
            r.contents.size
        )));
    }
    Ok(())
}

/// An inet socket's addresses, its TCP connection and pending connections.
fn check_inet(image: &Image, s: &InetSocket, at: &str) -> Result<()> {
    let addr_ok = |a: &[u8]| matches!(a.len(), 0 | 4 | 16);
    if !addr_ok(&s.local_addr) || !addr_ok(&s.remote_addr) {
        return Err(bad(format!(
            "{at}: an address of {} or {} bytes (4 or 16)",
            s.local_addr.len(),
            s.remote_addr.len()
        )));
    }
    for (j, d) in s.datagrams.iter().enumerate() {
        if !matches!(d.src_addr.len(), 4 | 16) || !addr_ok(&d.dst_addr) {
            return Err(bad(format!(
                "{at}: datagrams[{j}] has an address of a bad length"
            )));
        }
    }
    if let Some(t) = &s.tcp {
        check_blob(image, &t.send_queue, &format!("{at}: tcp sendQueue"))?;
        check_blob(image, &t.recv_queue, &format!("{at}: tcp recvQueue"))?;
        if u64::from(t.unsent) > t.send_queue.size {
            return Err(bad(format!(
                "{at}: tcp unsent {} is more than the send queue ({} bytes)",
                t.unsent, t.send_queue.size
            )));
        }
        if t.snd_wscale > 14 || t.rcv_wscale > 14 {
            return Err(bad(format!(
                "{at}: tcp window scale {}/{} above 14",
                t.snd_wscale, t.rcv_wscale
            )));
        }
    }
    for (j, p) in s.pending.iter().enumerate() {
        if p.tcp.is_none() || !p.pending.is_empty() {
            return Err(bad(format!(
                "{at}: pending[{j}] is not a saved TCP connection"
            )));
        }
        check_inet(image, p, &format!("{at}: pending[{j}]"))?;
    }
    Ok(())
}

/// Pty pairs: ids > 0 and unique, one pair per (devpts, index), 44-byte
/// settings; every `Tty.pair` names a pair of the image.
fn validate_ptys(image: &Image) -> Result<()> {
    let mut ids = HashSet::new();
    let mut slots = HashSet::new();
    for (i, p) in image.ptys.iter().enumerate() {
        if p.id == 0 || !ids.insert(p.id) {
            return Err(bad(format!("ptys[{i}]: id {} is 0 or used twice", p.id)));
        }
        if !slots.insert((p.devpts, p.index)) {
            return Err(bad(format!(
                "ptys[{i}]: pty {} of devpts {:#x} is saved twice",
                p.index, p.devpts
            )));
        }
        if p.termios.len() != TERMIOS2_SIZE {
            return Err(bad(format!(
                "ptys[{i}]: termios of {} bytes, not a struct termios2 ({TERMIOS2_SIZE})",
                p.termios.len()
            )));
        }
    }
    for f in &image.files {
        if let FileKind::Tty(t) = &f.kind {
            if t.pair != 0 && !ids.contains(&t.pair) {
                return Err(bad(format!(
                    "files (id {}): tty pair {} is not in Image.ptys",
                    f.id, t.pair
                )));
            }
        }
    }
    Ok(())
}

/// Size of `struct termios2` (x86_64 and aarch64).
const TERMIOS2_SIZE: usize = 44;

fn check_blob(image: &Image, b: &Blob, what: &str) -> Result<()> {
    let mut total = 0u64;
    if b.frames.windows(2).any(|w| w[0] >= w[1]) {
        return Err(bad(format!(
            "{what}: blob frame indices are not strictly increasing"
        )));
    }
    for &i in &b.frames {
        let Some(f) = image.frames.get(i as usize) else {
            return Err(bad(format!(
                "{what}: frame index {i} out of range (the image has {} frames)",
                image.frames.len()
            )));
        };
        total = total.saturating_add(u64::from(f.size));
    }
    if total < b.size {
        return Err(bad(format!(
            "{what}: blob of {} bytes but its {} frames hold {total} bytes",
            b.size,
            b.frames.len()
        )));
    }
    Ok(())
}
