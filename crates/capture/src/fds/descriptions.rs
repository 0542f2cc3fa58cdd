//! Which fds share an open file description (dup, fork, SCM_RIGHTS), in
//! one process or across the processes of a tree, in O(n log n) system
//! calls.
//!
//! Fds that may share one are grouped first by what a description fixes:
//! its mount and its inode (and, for a file that cannot be stat'ed, the
//! /proc link). Within a group, kcmp(KCMP_FILE) orders descriptions (by
//! their obfuscated kernel addresses): the group is sorted with it, and
//! equal neighbours are one description. Position and flags are not part of
//! the key: another process sharing a description may move them between two
//! fdinfo reads. Without kcmp (a kernel built without it), fds with the same
//! mount, inode, position, flags and link are taken as one description.

use super::{RawFd, O_CLOEXEC};
use crate::error::Result;
use ckpt_sys::{kcmp, Pid};
use std::cmp::Ordering;
use std::collections::HashMap;
use std::convert::Infallible;
use std::os::unix::fs::MetadataExt;

/// The open file descriptions of a list of fds.
#[derive(Debug)]
pub(crate) struct Descriptions {
    /// For each fd (in the order of the list), the number of its description.
    pub of_fd: Vec<usize>,
    /// For each description, the index of its first fd in the list:
    /// descriptions are numbered in the order of their first fd.
    pub first_fd: Vec<usize>,
    pub count: usize,
}

/// What one description has in one value: (mount id, device, inode, link
/// when the file cannot be stat'ed).
type Key = (u64, u64, u64, Vec<u8>);

fn key(f: &RawFd) -> Key {
    match &f.md {
        Some(md) => (f.info.mnt_id, md.dev(), md.ino(), Vec::new()),
        None => (f.info.mnt_id, 0, f.info.ino, f.link.clone()),
    }
}

/// Group fds of one or several processes, each `(pid, fd)`, into open file
/// descriptions (numbered in the order of the list).
pub(crate) fn group_all(fds: &[(Pid, &RawFd)]) -> Result<Descriptions> {
    let mut candidates: HashMap<Key, Vec<usize>> = HashMap::new();
    for (i, (_, f)) in fds.iter().enumerate() {
        candidates.entry(key(f)).or_default().push(i);
    }
    let mut kcmp_ok = true;
    let mut calls = 0u64;
    // Each fd's lowest fellow (index into fds).
    let mut first_of = vec![0usize; fds.len()];
    for idx in candidates.into_values() {
        let classes = if idx.len() == 1 {
            vec![idx]
        } else {
            split(fds, idx, &mut kcmp_ok, &mut calls)
        };
        for class in classes {
            let first = class.iter().copied().min().unwrap_or(0);
            for i in class {
                first_of[i] = first;
            }
        }
    }
    tracing::debug!(kcmp_calls = calls, kcmp_ok, "open file descriptions");
    let mut number = vec![0usize; fds.len()];
    let mut first_fd = Vec::new();
    for i in 0..fds.len() {
        // first_of[i] <= i: numbered already, unless it is i itself.
        if first_of[i] == i {
            number[i] = first_fd.len();
            first_fd.push(i);
        }
    }
    let of_fd = (0..fds.len()).map(|i| number[first_of[i]]).collect();
    Ok(Descriptions {
        of_fd,
        count: first_fd.len(),
        first_fd,
    })
}

/// One group of candidates (indices into `fds`) split into descriptions.
fn split(
    fds: &[(Pid, &RawFd)],
    idx: Vec<usize>,
    kcmp_ok: &mut bool,
    calls: &mut u64,
) -> Vec<Vec<usize>> {
    if *kcmp_ok {
        let mut kcmp = |a: usize, b: usize| {
            *calls += 1;
            let ((pa, fa), (pb, fb)) = (fds[a], fds[b]);
            kcmp::kcmp_file_order(pa, pb, fa.fd, fb.fd)
        };
        match classes(idx.clone(), &mut kcmp) {
            Ok(c) => return c,
            Err(e) => {
                tracing::warn!(
                    pid = fds[0].0,
                    error = %e,
                    "kcmp failed: fds with the same file, position and flags are taken as one open file description"
                );
                *kcmp_ok = false;
            }
        }
    }
    let fallback = |i: usize| {
        let f = fds[i].1;
        (f.info.pos, f.info.flags & !O_CLOEXEC, &f.link)
    };
    let mut by = |a: usize, b: usize| Ok::<_, Infallible>(fallback(a).cmp(&fallback(b)));
    match classes(idx, &mut by) {
        Ok(c) => c,
        Err(never) => match never {},
    }
}

/// Split `v` into classes of equal items by a total order `cmp`: sorted
/// with it, equal neighbours are one class. About n log2 n + n calls.
pub(crate) fn classes<E>(
    v: Vec<usize>,
    cmp: &mut impl FnMut(usize, usize) -> std::result::Result<Ordering, E>,
) -> std::result::Result<Vec<Vec<usize>>, E> {
    let sorted = merge_sort(v, cmp)?;
    let mut out: Vec<Vec<usize>> = Vec::new();
    for i in sorted {
        match out.last_mut() {
            Some(class) if cmp(class[0], i)? == Ordering::Equal => class.push(i),
            _ => out.push(vec![i]),
        }
    }
    Ok(out)
}

/// A bottom-up merge sort whose comparison may fail (the first failure
/// ends it). Unlike `sort_by`, never panics whatever `cmp` answers.
fn merge_sort<E>(
    mut src: Vec<usize>,
    cmp: &mut impl FnMut(usize, usize) -> std::result::Result<Ordering, E>,
) -> std::result::Result<Vec<usize>, E> {
    let n = src.len();
    let mut dst = vec![0usize; n];
    let mut width = 1;
    while width < n {
        for start in (0..n).step_by(2 * width) {
            let mid = (start + width).min(n);
            let end = (start + 2 * width).min(n);
            let (mut a, mut b, mut k) = (start, mid, start);
            while a < mid && b < end {
                if cmp(src[b], src[a])? == Ordering::Less {
                    dst[k] = src[b];
                    b += 1;
                } else {
                    dst[k] = src[a];
                    a += 1;
                }
                k += 1;
            }
            dst[k..k + mid - a].copy_from_slice(&src[a..mid]);
            k += mid - a;
            dst[k..k + end - b].copy_from_slice(&src[b..end]);
        }
        std::mem::swap(&mut src, &mut dst);
        width *= 2;
    }
    Ok(src)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_by_a_total_order() {
        // Item i belongs to class value[i]; the order of classes is unrelated
        // to the order of items (as kcmp's is).
        let value: Vec<u64> = (0..1000u64).map(|i| (i * 7919) % 37).collect();
        let mut calls = 0u64;
        let mut cmp = |a: usize, b: usize| {
            calls += 1;
            Ok::<_, ()>(value[a].cmp(&value[b]))
        };
        let c = classes((0..1000).collect(), &mut cmp).unwrap();
        assert_eq!(c.len(), 37);
        for class in &c {
            assert!(class.iter().all(|&i| value[i] == value[class[0]]));
        }
        assert_eq!(c.iter().map(Vec::len).sum::<usize>(), 1000);
        // n log2 n + n at most.
        assert!(calls <= 1000 * 10 + 1000, "{calls} comparisons");
    }

    #[test]
    fn sort_is_stable_and_total() {
        let v = vec![5, 3, 9, 1, 3, 0, 8, 2, 7];
        let key = |i: usize| i / 3;
        let mut cmp = |a: usize, b: usize| Ok::<_, ()>(key(a).cmp(&key(b)));
        let s = merge_sort(v, &mut cmp).unwrap();
        assert_eq!(s, vec![1, 0, 2, 5, 3, 3, 8, 7, 9]);
        assert!(merge_sort(Vec::new(), &mut cmp).unwrap().is_empty());
        let mut fail = |_: usize, _: usize| Err::<Ordering, _>("no kcmp");
        assert_eq!(merge_sort(vec![2, 1], &mut fail), Err("no kcmp"));
        assert_eq!(merge_sort(vec![4], &mut fail), Ok(vec![4]));
    }
}
