//! epoll instances: made empty with the other descriptions, their targets
//! registered once every fd is at its final number. A watch is keyed by
//! (file, fd number): a watch whose fd number now holds another file (or
//! none: the fd was closed while a dup of it stays open) is added before
//! the fds are placed, with the watched description put at that number
//! for the time of the EPOLL_CTL_ADD (see [`plan_detached`]), and so is
//! every watch of an instance in flight (passed in a queued message).

use super::{Builder, FdOp};
use crate::stub::Child;
use ckpt_image::{FileKind, Image, Process};
use ckpt_sys::fds::{self, epoll};
use std::os::fd::IntoRawFd;

pub(super) fn plan(b: &mut Builder, g: usize) {
    let what = b.what(g);
    let s = b.slot();
    b.op(&what, FdOp::Epoll { slot: s });
    b.slot_of[g] = Some(s);
}

/// Whether the watch of `t` finds its file at its fd number in `proc`.
fn attached(proc: &Process, fd: i32, file: u32) -> bool {
    proc.fds.iter().any(|x| x.fd == fd && x.file == file)
}

/// The highest fd number an epoll watch of `proc` is added under whose fd
/// holds another file now (-1: none): the stub's staging fds must lie
/// above it.
pub(super) fn max_target_fd(image: &Image, proc: &Process) -> i32 {
    let mut max = -1;
    for fd in &proc.fds {
        if let Some(FileKind::Epoll(ep)) = image.file(fd.file).map(|f| &f.kind) {
            for t in &ep.targets {
                if !attached(proc, t.fd, t.file) {
                    max = max.max(t.fd);
                }
            }
        }
    }
    max
}

/// The watches whose fd number holds another file now (or none): each
/// added under that number, before any fd is placed, with the watched
/// description (held by the process at another fd) put there meanwhile.
pub(super) fn plan_detached(b: &mut Builder) {
    for g in 0..b.groups.len() {
        let FileKind::Epoll(ep) = &b.groups[g].file.kind else {
            continue;
        };
        let Some(ep_slot) = b.slot_of[g] else {
            continue;
        };
        let holder = b.groups[g].holders.first().map_or(b.proc, |h| b.procs[h.0]);
        // In flight (in a queued message, at no fd): every watch is added
        // here, through the instance's slot (also once it was sent).
        let in_flight = b.groups[g].holders.is_empty();
        for t in &ep.targets {
            if !in_flight && attached(holder, t.fd, t.file) {
                continue;
            }
            let what = format!(
                "{} (watching fd {}, now closed or another file)",
                b.what(g),
                t.fd
            );
            let held = b.groups.iter().position(|h| h.file.id == t.file);
            if held.is_some_and(|h| b.late[h]) {
                b.error(format!(
                    "{what}: a pidfd watched under another fd number than its own cannot be restored by this version"
                ));
                continue;
            }
            let Some(file_slot) = held.and_then(|h| b.slot_of[h]) else {
                b.error(format!(
                    "{what}: the watched file (open file {}) is not held by the process at any fd",
                    t.file
                ));
                continue;
            };
            if t.fd < 0 {
                b.error(format!("{what}: fd number {} is not valid", t.fd));
                continue;
            }
            b.op(
                &what,
                FdOp::EpollAddVia {
                    ep: ep_slot,
                    file: file_slot,
                    fd: t.fd,
                    events: t.events,
                    data: t.data,
                },
            );
        }
    }
}

/// Each epoll instance's targets, by final fd numbers (once the fds are
/// placed): registered by a process holding both the instance and the
/// target at the saved number (an instance shared by several processes is
/// registered once: its registrations are the instance's).
pub(super) fn plan_targets(b: &mut Builder) {
    for g in 0..b.groups.len() {
        let file = b.groups[g].file;
        let FileKind::Epoll(ep) = &file.kind else {
            continue;
        };
        for t in &ep.targets {
            let by = b.groups[g].holders.iter().find(|(i, _)| {
                b.procs[*i]
                    .fds
                    .iter()
                    .any(|x| x.fd == t.fd && x.file == t.file)
            });
            let Some(&(i, epfd)) = by else {
                let holder = b.groups[g].holders.first().map_or(b.proc, |h| b.procs[h.0]);
                if b.groups[g].holders.is_empty() {
                    break; // in flight: plan_detached
                }
                if !attached(holder, t.fd, t.file) {
                    continue; // plan_detached
                }
                b.error(format!(
                    "{}: watches fd {} (open file {}) which is not open at that number any more",
                    b.what(g),
                    t.fd,
                    t.file
                ));
                continue;
            };
            let late = b
                .groups
                .iter()
                .position(|h| h.file.id == t.file)
                .is_some_and(|h| b.late[h]);
            if late {
                // Its fd exists once the process has its threads.
                b.plan.late.push(super::LateFd {
                    proc: i,
                    what: format!("{} (watching fd {})", b.what(g), t.fd),
                    op: super::LateOp::EpollAdd {
                        epfd: epfd.fd,
                        fd: t.fd,
                        events: t.events,
                        data: t.data,
                    },
                });
                continue;
            }
            let what = format!("{} (watching fd {})", b.what(g), t.fd);
            let p = &mut b.plan.procs[i];
            p.post.push(FdOp::EpollAdd {
                epfd: epfd.fd,
                fd: t.fd,
                events: t.events,
                data: t.data,
            });
            p.post_what.push(what);
        }
    }
}

/// FdOp::Epoll.
pub(super) fn make(c: &mut Child<'_>, slot: usize) -> ckpt_sys::Result<()> {
    c.new_fd(slot, epoll::epoll_create1(0)?.into_raw_fd())?;
    Ok(())
}

/// FdOp::EpollAddVia: `[ep, file]` slots; the watch is added under fd
/// number `fd`. No fd is at its final number yet, but a staging slot may
/// be at `fd`: it is moved away first (its slot follows it).
pub(super) fn add_via(
    c: &mut Child<'_>,
    [ep, file]: [usize; 2],
    fd: i32,
    events: u32,
    data: u64,
) -> ckpt_sys::Result<()> {
    if c.slot(file) == fd {
        return epoll::epoll_add(c.slot(ep), fd, events, data);
    }
    if ckpt_sys::fds::get_fl(fd).is_ok() {
        let moved = ckpt_sys::fds::dup_at_least(fd, fd + 1)?.into_raw_fd();
        c.renumber(fd, moved);
        fds::close(fd)?;
    }
    fds::dup3(c.slot(file), fd, true)?;
    let r = epoll::epoll_add(c.slot(ep), fd, events, data);
    fds::close(fd)?;
    r
}

#[cfg(test)]
mod tests {
    use super::super::tests::{fd, file, none};
    use super::super::{plan_fds, FdEnv};
    use super::*;
    use ckpt_image::*;

    #[test]
    fn epoll_targets_are_added_after_placement() {
        let mut img = Image::default();
        img.files.push(file(
            1,
            0,
            FileKind::EventFd(EventFd {
                count: 7,
                semaphore: false,
            }),
        ));
        img.files.push(file(
            2,
            0,
            FileKind::Epoll(Epoll {
                targets: vec![EpollTarget {
                    fd: 3,
                    file: 1,
                    events: 1,
                    data: 0xe0,
                }],
            }),
        ));
        let p = Process {
            fds: vec![fd(3, 1), fd(4, 2)],
            ..Default::default()
        };
        let plan = plan_fds(&img, &p, &FdEnv::default(), &mut none);
        assert!(plan.errors.is_empty(), "{:?}", plan.errors);
        assert_eq!(
            plan.procs[0].post.last().unwrap(),
            &FdOp::EpollAdd {
                epfd: 4,
                fd: 3,
                events: 1,
                data: 0xe0
            }
        );
    }

    #[test]
    fn watches_of_closed_fds_are_added_under_their_number_before_placement() {
        let mut img = Image::default();
        img.files
            .push(file(1, 0, FileKind::EventFd(EventFd::default())));
        img.files.push(file(
            2,
            0,
            FileKind::Epoll(Epoll {
                targets: vec![
                    // fd 9 was closed; the eventfd stays open at fd 3.
                    EpollTarget {
                        fd: 9,
                        file: 1,
                        events: 1,
                        data: 7,
                    },
                    // A pidfd (made late) watched at its own number.
                    EpollTarget {
                        fd: 5,
                        file: 3,
                        events: 1,
                        data: 8,
                    },
                ],
            }),
        ));
        img.files.push(file(
            3,
            0,
            FileKind::Pidfd(Pidfd {
                pid: 42,
                ..Default::default()
            }),
        ));
        let p = Process {
            pid: 42,
            fds: vec![fd(3, 1), fd(4, 2), fd(5, 3)],
            ..Default::default()
        };
        img.processes.push(p.clone());
        let plan = plan_fds(&img, &p, &FdEnv::default(), &mut none);
        assert!(plan.errors.is_empty(), "{:?}", plan.errors);
        // Staging fds lie above fd 9.
        assert_eq!(plan.stage, 10);
        let via = plan
            .ops
            .iter()
            .position(|o| matches!(o, FdOp::EpollAddVia { fd: 9, data: 7, .. }))
            .expect("the watch of fd 9");
        // (Every op runs before any fd is placed.)
        let _ = via;
        // The pidfd and its watch come once the process has its threads.
        assert!(!plan.procs[0].places.iter().any(|p| p.fd == 5));
        assert_eq!(plan.late.len(), 2, "{:?}", plan.late);
        assert_eq!(
            plan.late[1].op,
            super::super::LateOp::EpollAdd {
                epfd: 4,
                fd: 5,
                events: 1,
                data: 8
            }
        );
    }
}
