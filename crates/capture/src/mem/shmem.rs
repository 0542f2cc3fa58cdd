//! Shared memory mapped shared (shared anonymous, memfd, SysV, /dev/shm):
//! which of its pages hold data (read them) and which are holes (saved as
//! zero pages without touching them: reading would allocate them).

use super::pages::Range;
use super::vmas::{map_files_path, MapEntry};
use ckpt_sys::Pid;
use std::fs::File;

/// The pages of a shared memory mapping: data ranges of the object (found
/// with SEEK_DATA/SEEK_HOLE on it through /proc/PID/map_files) are read,
/// holes are zeros. Without access to the object, the whole range is read.
pub(super) fn shmem_ranges(pid: Pid, idx: usize, e: &MapEntry, page: u64, out: &mut Vec<Range>) {
    use std::os::fd::AsFd;
    let whole = Range::whole(e, idx, true);
    let Ok(f) = File::open(map_files_path(pid, e)) else {
        out.push(whole);
        return;
    };
    let (obj_start, obj_end) = (e.offset, e.offset + (e.end - e.start));
    let size = f.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
    let to_addr = |off: u64| e.start + (off - obj_start);
    let mut found = Vec::new();
    let mut pos = obj_start;
    while pos < obj_end.min(size) {
        let data = match ckpt_sys::fds::regular::seek_data_or_hole(f.as_fd(), pos, false) {
            Ok(Some(d)) => d / page * page,
            Ok(None) => break,
            Err(_) => {
                out.push(whole);
                return;
            }
        };
        if data >= obj_end {
            break;
        }
        let hole = match ckpt_sys::fds::regular::seek_data_or_hole(f.as_fd(), data.max(pos), true) {
            Ok(Some(h)) => h.div_ceil(page) * page,
            _ => obj_end,
        };
        let (a, b) = (data.max(pos), hole.min(obj_end));
        if a < b {
            found.push((to_addr(a), to_addr(b)));
        }
        pos = b.max(pos + page);
    }
    // Data ranges as read ranges, the rest (up to the object's end) as zeros.
    let size_end = size.checked_next_multiple_of(page).unwrap_or(u64::MAX);
    let end = to_addr(obj_end.min(size_end).max(obj_start));
    let mut cur = e.start;
    for (a, b) in found {
        if cur < a {
            out.push(Range {
                start: cur,
                end: a,
                zero: true,
                ..whole
            });
        }
        out.push(Range {
            start: a,
            end: b,
            ..whole
        });
        cur = b;
    }
    if cur < end {
        out.push(Range {
            start: cur,
            end,
            zero: true,
            ..whole
        });
    }
}
