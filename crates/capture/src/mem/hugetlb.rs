//! hugetlb memory (MAP_HUGETLB, MFD_HUGETLB memfds): which of its pages to
//! save. smaps counts none of them in Rss, and reading a page that does
//! not exist yet would allocate a huge page in the process (or fail when
//! none is free): the pages of a private area are those its pagemap shows;
//! those of a shared object are found by reading the object through
//! /proc/PID/map_files (hugetlbfs reads its holes as zeros without
//! allocating), a huge page at a time: the ones not all zeros are saved.

use super::pages::Range;
use super::vmas::{map_files_path, MapEntry};
use ckpt_sys::Pid;
use std::fs::File;
use std::os::unix::fs::FileExt;

/// The ranges of shared hugetlb area `e` (pages `huge` bytes) to read.
/// Without access to the object, the whole area is read, pages that
/// cannot be left out.
pub(super) fn shared_ranges(pid: Pid, idx: usize, e: &MapEntry, huge: u64, out: &mut Vec<Range>) {
    let whole = Range::whole(e, idx, true);
    let Ok(f) = File::open(map_files_path(pid, e)) else {
        out.push(whole);
        return;
    };
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    let end = e.end.min(e.start + size.saturating_sub(e.offset));
    // (Never 0: the area is read a page at a time at worst.)
    let huge = huge.max(4096);
    let mut buf = vec![0u8; huge as usize];
    let mut at = e.start;
    while at < end {
        let n = huge.min(end - at) as usize;
        let off = e.offset + (at - e.start);
        let used = match f.read_exact_at(&mut buf[..n], off) {
            Ok(()) => buf[..n].iter().any(|&b| b != 0),
            Err(_) => true,
        };
        if used {
            match out.last_mut() {
                Some(l) if l.vma == idx && l.end == at => l.end = at + n as u64,
                _ => out.push(Range {
                    start: at,
                    end: at + n as u64,
                    ..whole
                }),
            }
        }
        at += n as u64;
    }
}
