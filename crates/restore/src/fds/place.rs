//! Putting a process's descriptions at their numbers, in its stub, with
//! room for little more than the process's own fds.
//!
//! The root stub made every description of the image into staging slots,
//! wherever the kernel put them (the lowest free numbers), so a slot may
//! sit on a number another description goes to. Each stub moves its own
//! slots to their numbers as a parallel copy: a number whose occupant is
//! still needed elsewhere is filled only once that occupant has been
//! copied out, and a cycle of such numbers is broken by moving one
//! occupant to a spare number. A process with N fds thus needs about
//! max(N, its highest fd + 1) numbers plus a few, never 2 N (staging every
//! description above the saved numbers did), so a process that ran close
//! to its fd limit restores under the same limit.
//!
//! Numbers from `stage` (one above every saved fd of the image) are the
//! stubs' own: [`CTL_STATUS`] (the pipe to the restorer), [`CTL_GO`] (the
//! pipe it releases the stubs with), three copies of the restorer's fds
//! 0-2 from [`CTL_STD`], and the kept memory objects from [`CTL_KEEP`].
//! Everything else a stub opens for itself goes above those.
//!
//! Runs in the stub after a fork: no allocation (the work memory,
//! [`Scratch`], is allocated before the fork).

use super::{FdPlan, Place};
use ckpt_sys::fds;

/// Offsets from `stage` of the stubs' own fds.
pub const CTL_STATUS: i32 = 0;
pub const CTL_GO: i32 = 1;
pub const CTL_STD: i32 = 2;
pub const CTL_KEEP: i32 = 5;

/// One above the stubs' own fixed numbers.
pub fn ctl_end(plan: &FdPlan) -> i32 {
    plan.stage + CTL_KEEP + plan.keep.len() as i32
}

/// The fd numbers a restore needs open at once in the stubs, at most: the
/// root stub holds every description of the image (the lowest free numbers
/// around its own), a stub placing its fds one or two spare numbers, a
/// parent stub a pipe to each child while it forks it; a few for the fds
/// ops open for a moment. check() compares it with RLIMIT_NOFILE.
pub fn fds_needed(plan: &FdPlan) -> u64 {
    let own = (CTL_KEEP + plan.keep.len() as i32) as u64;
    let staged = plan.slots as u64 + own;
    (ctl_end(plan) as u64).max(staged) + 8
}

/// Work memory of [`place`], allocated before the fork.
#[derive(Debug, Default)]
pub struct Scratch {
    /// Per fd number below `stage`: 1 + index into the places of the place
    /// that puts a description there; 0 for none.
    pred: Vec<u32>,
    /// Per fd number below `stage`: the slot whose description sits there
    /// since the root stub made it (u32::MAX: none of ours).
    occupant: Vec<u32>,
    /// Per place: done.
    done: Vec<bool>,
    /// Per slot: where a copy of its description is now (-1: not ours).
    loc: Vec<i32>,
    /// Numbers that may be filled now (a stack).
    ready: Vec<i32>,
    /// Spare numbers are at or above this.
    spare: i32,
}

impl Scratch {
    pub fn new(plan: &FdPlan) -> Scratch {
        let most = plan.procs.iter().map(|p| p.places.len()).max().unwrap_or(0);
        Scratch {
            pred: vec![0; plan.stage as usize],
            occupant: vec![u32::MAX; plan.stage as usize],
            done: vec![false; most],
            loc: vec![-1; plan.slots],
            ready: Vec::with_capacity(plan.stage as usize + most),
            spare: ctl_end(plan),
        }
    }
}

/// Failure of [`place`]: the fd it was working on, and the errno.
pub type PlaceError = (i32, i32);

fn errno(e: &ckpt_sys::Error) -> i32 {
    e.errno().unwrap_or(libc::EIO)
}

/// Put `places` (sorted by fd, every fd below `stage`) at their numbers
/// from the staging slots (`slots[s]`: the fd of slot s), close every slot
/// this process does not use, and every staging fd left over. Slots at
/// `stage` or above that are the stubs' own numbers (the restorer's fds
/// 0-2) are left for the caller. Spare numbers are taken at `spare` or
/// above.
pub fn place(
    slots: &[i32],
    places: &[Place],
    stage: i32,
    spare: i32,
    sc: &mut Scratch,
) -> Result<(), PlaceError> {
    let own_fixed = |fd: i32| fd >= stage && fd < spare;
    sc.spare = spare;
    // Which slots are ours; close the others' staging fds.
    sc.loc.iter_mut().for_each(|l| *l = -1);
    for p in places {
        sc.loc[p.slot] = slots[p.slot];
    }
    for (s, &fd) in slots.iter().enumerate() {
        // (Only the restorer's fds 0-2, at fixed numbers, can be the fd
        // of two slots: no other staging fd is closed twice.)
        if sc.loc[s] < 0 && fd >= 0 && !own_fixed(fd) {
            fds::close(fd).map_err(|e| (fd, errno(&e)))?;
        }
    }
    sc.pred.iter_mut().for_each(|p| *p = 0);
    sc.occupant.iter_mut().for_each(|o| *o = u32::MAX);
    sc.ready.clear();
    for (s, &fd) in slots.iter().enumerate() {
        if sc.loc[s] >= 0 && fd >= 0 && fd < stage {
            sc.occupant[fd as usize] = s as u32;
        }
    }
    for (i, p) in places.iter().enumerate() {
        sc.pred[p.fd as usize] = i as u32 + 1;
        sc.done[i] = false;
    }
    // A slot already at one of its numbers: only its close-on-exec flag.
    for (i, p) in places.iter().enumerate() {
        if slots[p.slot] == p.fd {
            fds::set_cloexec(p.fd, p.cloexec).map_err(|e| (p.fd, errno(&e)))?;
            sc.done[i] = true;
        } else if sc.occupant[p.fd as usize] == u32::MAX {
            sc.ready.push(p.fd);
        }
    }
    let mut todo = places.len();
    while todo > 0 {
        todo -= 1;
        while let Some(d) = sc.ready.pop() {
            fill(d, slots, places, sc)?;
        }
        let i = todo;
        if sc.done[i] {
            continue;
        }
        // A cycle: the number is taken by a description still to be
        // copied elsewhere. Move that one to a spare number first.
        let d = places[i].fd;
        let s = sc.occupant[d as usize] as usize;
        if s == u32::MAX as usize {
            sc.ready.push(d);
            while let Some(d) = sc.ready.pop() {
                fill(d, slots, places, sc)?;
            }
            continue;
        }
        let tmp = fds::dup_at_least(d, spare).map_err(|e| (d, errno(&e)))?;
        sc.loc[s] = std::os::fd::IntoRawFd::into_raw_fd(tmp);
        sc.occupant[d as usize] = u32::MAX;
        sc.ready.push(d);
        while let Some(d) = sc.ready.pop() {
            fill(d, slots, places, sc)?;
        }
    }
    // Staging fds of ours not at one of the numbers (nothing overwrote them).
    for (s, &fd) in slots.iter().enumerate() {
        if sc.loc[s] < 0 || fd < 0 || own_fixed(fd) {
            continue;
        }
        let placed = fd < stage && sc.pred[fd as usize] != 0;
        if !placed {
            fds::close(fd).map_err(|e| (fd, errno(&e)))?;
        }
    }
    Ok(())
}

/// Fill number `d` from wherever its description is now; if that was its
/// staging number and something goes there, that number is free now.
fn fill(d: i32, slots: &[i32], places: &[Place], sc: &mut Scratch) -> Result<(), PlaceError> {
    let i = sc.pred[d as usize] as usize - 1;
    let p = places[i];
    let from = sc.loc[p.slot];
    fds::dup3(from, d, p.cloexec).map_err(|e| (d, errno(&e)))?;
    sc.done[i] = true;
    let orig = slots[p.slot];
    sc.loc[p.slot] = d;
    if from != orig && from >= sc.spare {
        // A spare copy (a cycle was broken through it): no longer needed.
        fds::close(from).map_err(|e| (from, errno(&e)))?;
    }
    if from == orig && orig >= 0 && (orig as usize) < sc.pred.len() {
        sc.occupant[orig as usize] = u32::MAX;
        let j = sc.pred[orig as usize];
        if j != 0 && !sc.done[j as usize - 1] {
            sc.ready.push(orig);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fds::ProcFds;
    use ckpt_sys::clone::{fork_with_pid, Forked};
    use std::os::fd::IntoRawFd;

    /// Run `f` in a forked child (it rearranges its fd table); its exit
    /// code is the test's verdict (0: passed).
    fn in_child(f: impl FnOnce() -> i32) -> i32 {
        match fork_with_pid(None).unwrap() {
            Forked::Child => ckpt_sys::proc::exit_now(f()),
            Forked::Parent(c) => match ckpt_sys::proc::wait::wait_child_exit(c).unwrap() {
                ckpt_sys::proc::wait::ExitKind::Exited(code) => code,
                ckpt_sys::proc::wait::ExitKind::Signaled(s) => 1000 + s,
            },
        }
    }

    /// `n` memfds as the staging slots (at the lowest free numbers from 3),
    /// slot s at file position s + 1; the process places them per
    /// `places`, with its fd limit at `limit`. 0 when every placed fd has
    /// the right description and nothing else is open from 3 up.
    fn run(n: usize, places: Vec<Place>, limit: u64) -> i32 {
        let stage = places.iter().map(|p| p.fd).max().unwrap_or(2) + 1;
        let plan = FdPlan {
            slots: n,
            stage: stage.max(3),
            procs: vec![ProcFds {
                places: places.clone(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut sc = Scratch::new(&plan);
        let mut slots = vec![-1i32; n];
        let spare = ctl_end(&plan);
        in_child(move || {
            if ckpt_sys::proc::prlimit(0, libc::RLIMIT_NOFILE, Some((limit, limit))).is_err() {
                return 2;
            }
            let _ = fds::close_range(3, u32::MAX);
            // The stubs' own numbers are taken (as in a stub).
            for fd in plan.stage..spare {
                if fds::dup3(2, fd, true).is_err() {
                    return 8;
                }
            }
            for (s, slot) in slots.iter_mut().enumerate() {
                let Ok(fd) = fds::memfd::memfd_create(c"slot", 0) else {
                    return 3;
                };
                *slot = fd.into_raw_fd();
                if fds::seek(*slot, s as u64 + 1).is_err() {
                    return 4;
                }
            }
            if place(&slots, &places, plan.stage, spare, &mut sc).is_err() {
                return 5;
            }
            let mut expect_open = 0;
            for p in &places {
                match fds::position(p.fd) {
                    Ok(pos) if pos == p.slot as u64 + 1 => {}
                    _ => return 6,
                }
                expect_open += 1;
            }
            // Nothing else left open from 3 up.
            let mut open = 0;
            for fd in (3..plan.stage).chain(spare..limit as i32) {
                if fds::get_fl(fd).is_ok() {
                    open += 1;
                }
            }
            if open != expect_open {
                return 7;
            }
            0
        })
    }

    fn at(slot: usize, fd: i32) -> Place {
        Place {
            slot,
            fd,
            cloexec: false,
        }
    }

    #[test]
    fn cycles_fan_out_and_gaps() {
        // Slots land at 3, 4, 5, 6, 7. A 3-cycle (3->4->5->3), a slot
        // placed twice (one at its own number), a slot going far up.
        let places = vec![at(0, 4), at(1, 5), at(2, 3), at(3, 6), at(3, 40), at(4, 9)];
        let mut sorted = places.clone();
        sorted.sort_by_key(|p| p.fd);
        assert_eq!(run(5, sorted, 64), 0);
    }

    #[test]
    fn unused_slots_are_closed() {
        assert_eq!(run(6, vec![at(5, 3)], 64), 0);
    }

    #[test]
    fn ten_thousand_fds_in_one_cycle_fit_a_limit_just_above() {
        // Slot s lands at 3 + s and goes to 3 + (s + 1) % n: every number
        // is taken by a description still to move (one big cycle).
        let n = 10_000;
        let places: Vec<Place> = (0..n).map(|s| at(s, 3 + ((s + 1) % n) as i32)).collect();
        let mut sorted = places;
        sorted.sort_by_key(|p| p.fd);
        assert_eq!(run(n, sorted, n as u64 + 3 + CTL_KEEP as u64 + 4), 0);
    }
}
