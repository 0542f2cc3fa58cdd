//! epoll instances: made empty with the other descriptions, their targets
//! registered once every fd is at its final number.

use super::{Builder, FdOp};
use crate::stub::Child;
use ckpt_image::FileKind;
use ckpt_sys::setup;

pub(super) fn plan(b: &mut Builder, g: usize) {
    let what = b.what(g);
    let s = b.slot();
    b.op(&what, FdOp::Epoll { slot: s });
    b.slot_of[g] = Some(s);
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
                b.error(format!(
                    "{}: watches fd {} (open file {}) which is not open at that number any more",
                    b.what(g),
                    t.fd,
                    t.file
                ));
                continue;
            };
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
    c.new_fd(slot, setup::epoll_create1(0)?)?;
    Ok(())
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
}
