//! Pty pairs whose master is in the image (`Image.ptys`): made again at the
//! same index, with the slave's settings, the window size, the bytes that
//! were buffered both ways, packet mode, the slave's exclusive flag and
//! the lock.
//!
//! In the stub, per pair in ascending index order (indexes are given
//! lowest-free, so /dev/ptmx is opened until the saved index comes, the
//! ones below held meanwhile and then closed: nobody ever opened their
//! slaves):
//! 1. [`FdOp::PtyMaster`]: the master at its index, the settings and the
//!    size set through it, unlocked; the buffered bytes put back through a
//!    slave description of its own (output first: TIOCSTI on the master,
//!    beyond the line discipline's 4095 bytes written on the slave side
//!    with output processing off; then the input, TIOCSTI on the slave
//!    under settings that store it as it is), closed after (which leaves
//!    the pair as "slave closed" when no saved process holds the slave).
//! 2. [`FdOp::PtySlave`] for each slave description of the image
//!    (TIOCGPTPEER, always O_NOCTTY).
//! 3. [`FdOp::PtyFinish`] once every slave is open: packet mode (enabling
//!    it clears pending status, so after the data), TIOCEXCL, the lock.
//!
//! TIOCSTI needs CAP_SYS_ADMIN; `check()` says so when a pair has bytes.

use super::{Builder, FdOp};
use crate::stub::Child;
use crate::Report;
use ckpt_image::{FileKind, Image, PtyPair, TtyRole};
use ckpt_sys::fds::tty::{self, InputPutBack, Termios, Winsize};
use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::time::{Duration, Instant};

/// How long the stub waits for a pty index another process holds for a
/// moment (a short-lived pty: a test, `script` of a cron job).
const INDEX_WAIT: Duration = Duration::from_secs(1);
/// The most free indexes below a saved one that the stub holds at once.
const MAX_FILLERS: usize = 1024;

/// What the stub needs to make one pair's master.
#[derive(Debug, Clone, PartialEq)]
pub struct PtySetup {
    pub index: u32,
    /// Access mode of the master description.
    pub flags: i32,
    pub termios: Termios,
    pub winsize: Winsize,
    /// Output to put back for the master to read.
    pub output: Vec<u8>,
    /// Input to put back for the slave side to read.
    pub input: InputPutBack,
    /// Open (and close) a slave description of its own: to put bytes back,
    /// or to leave the pair "slave closed".
    pub own_slave: bool,
    /// The mode and owner of /dev/pts/N to set again: (mode, uid, gid).
    pub owner: Option<(u32, u32, u32)>,
}

/// The pairs of the image this process's descriptions belong to.
pub(super) struct State {
    /// Pair id -> the slot of its master.
    pub master_slot: BTreeMap<u32, usize>,
    /// Ops to run once every slave description is open.
    finish: Vec<(String, FdOp)>,
}

/// The role of a saved terminal (older images: by its device number).
pub(crate) fn role(t: &ckpt_image::Tty) -> TtyRole {
    if t.role != TtyRole::Unknown {
        return t.role;
    }
    let (ma, mi) = (libc::major(t.rdev), libc::minor(t.rdev));
    match (ma, mi) {
        (5, 0) => TtyRole::DevTty,
        (5, 1) => TtyRole::Console,
        (5, 2) => TtyRole::Master,
        (4, 0..=63) => TtyRole::Vt,
        (4, _) => TtyRole::Serial,
        // Older images saved no other terminals: a terminal from outside.
        _ => TtyRole::Slave,
    }
}

/// The slave's device number of a pair (devpts numbering).
pub(super) fn slave_rdev(p: &PtyPair) -> u64 {
    libc::makedev(136 + p.index / 256, p.index % 256)
}

/// Plan the masters of every pair this process holds an end of, in
/// ascending index order, and the slave descriptions.
pub(super) fn plan_pairs(b: &mut Builder) -> State {
    let image = b.image;
    let mut st = State {
        master_slot: BTreeMap::new(),
        finish: Vec::new(),
    };
    // Pair id -> (its master's group, its slaves' groups).
    let mut ends: BTreeMap<u32, (Option<usize>, Vec<usize>)> = BTreeMap::new();
    for (g, group) in b.groups.iter().enumerate() {
        let FileKind::Tty(t) = &group.file.kind else {
            continue;
        };
        // /dev/tty of a process whose terminal was a pair of the image: a
        // description of that pair's slave (/dev/tty would be the terminal
        // of the stub that makes the descriptions).
        let pair = match role(t) {
            TtyRole::DevTty if t.pair == 0 => image
                .ptys
                .iter()
                .find(|p| t.real_rdev != 0 && slave_rdev(p) == t.real_rdev)
                .map_or(0, |p| p.id),
            _ => t.pair,
        };
        if pair == 0 {
            continue;
        }
        let e = ends.entry(pair).or_default();
        if role(t) == TtyRole::Master {
            e.0 = Some(g);
        } else {
            e.1.push(g);
        }
    }
    let mut pairs: Vec<(&PtyPair, Option<usize>, Vec<usize>)> = Vec::new();
    for (id, (master, slaves)) in ends {
        match image.ptys.iter().find(|p| p.id == id) {
            Some(p) => pairs.push((p, master, slaves)),
            None => {
                let what = b.what(master.or(slaves.first().copied()).unwrap_or(0));
                b.error(format!("{what}: pty pair {id} is not in the image"));
            }
        }
    }
    pairs.sort_by_key(|(p, _, _)| p.index);
    for (p, master, slaves) in pairs {
        plan_pair(b, p, master, &slaves, &mut st);
    }
    st
}

/// One pair: its master, and its slaves opened through it.
fn plan_pair(
    b: &mut Builder,
    p: &PtyPair,
    master: Option<usize>,
    slaves: &[usize],
    st: &mut State,
) {
    let first = master.or(slaves.first().copied()).unwrap_or(0);
    let what = format!("{} (pty /dev/pts/{})", b.what(first), p.index);
    let Some(termios) = Termios::from_bytes(&p.termios) else {
        b.error(format!(
            "{what}: saved settings of {} bytes are not a termios2",
            p.termios.len()
        ));
        return;
    };
    let input = match tty::plan_input_put_back(&p.input_lines, &p.input_pending, &termios) {
        Ok(i) => i,
        Err(e) => {
            b.error(format!("{what}: {e}"));
            return;
        }
    };
    let has_input = !input.sti.is_empty() || !input.write.is_empty();
    let own_slave =
        has_input || p.output.len() > tty::LDISC_ROOM || (p.peer_closed && slaves.is_empty());
    if own_slave && !p.peer_closed && slaves.is_empty() {
        b.error(format!(
            "{what}: its slave was never opened, and its buffered bytes cannot be put back without opening it"
        ));
        return;
    }
    let flags = master.map_or(libc::O_RDWR, |g| b.flags(g));
    let m = b.slot();
    b.op(
        &what,
        FdOp::PtyMaster {
            slot: m,
            setup: Box::new(PtySetup {
                index: p.index,
                flags: flags & libc::O_ACCMODE,
                termios,
                winsize: Winsize {
                    rows: p.win_rows,
                    cols: p.win_cols,
                    xpixel: p.win_xpixel,
                    ypixel: p.win_ypixel,
                },
                output: p.output.clone(),
                input,
                own_slave,
                owner: slave_owner(b, p),
            }),
        },
    );
    st.master_slot.insert(p.id, m);
    if let Some(g) = master {
        b.set_fl(&what, m, flags);
        b.slot_of[g] = Some(m);
    }
    let mut first_slave = None;
    for &g in slaves {
        let (w, flags) = (b.what(g), b.flags(g));
        let s = b.slot();
        b.op(
            &w,
            FdOp::PtySlave {
                slot: s,
                master: m,
                flags: (flags & (libc::O_ACCMODE | libc::O_NONBLOCK)) | libc::O_NOCTTY,
            },
        );
        b.set_fl(&w, s, flags);
        b.slot_of[g] = Some(s);
        first_slave.get_or_insert(s);
    }
    if p.packet || p.locked || (p.slave_exclusive && first_slave.is_some()) {
        st.finish.push((
            what,
            FdOp::PtyFinish {
                master: m,
                packet: p.packet,
                locked: p.locked,
                exclusive: first_slave.filter(|_| p.slave_exclusive),
            },
        ));
    }
}

/// The ops that close each pair's setup, once every slave is open.
pub(super) fn finish(b: &mut Builder, st: State) {
    for (what, op) in st.finish {
        b.op(&what, op);
    }
}

/// A slave description of pair `pair` in a slot of its own, not placed at
/// any fd: to make the pair the controlling terminal when no fd of the
/// process holds its slave.
pub(super) fn extra_slave(b: &mut Builder, st: &State, pair: u32) -> Option<usize> {
    let &m = st.master_slot.get(&pair)?;
    let s = b.slot();
    b.op(
        "controlling terminal",
        FdOp::PtySlave {
            slot: s,
            master: m,
            flags: libc::O_RDWR | libc::O_NOCTTY,
        },
    );
    Some(s)
}

/// What `check()` says about pairs: each comes back at its saved index,
/// which must be free here (and distinct: pairs of several devpts
/// instances all go to /dev/pts); putting bytes back needs CAP_SYS_ADMIN.
pub(crate) fn check(image: &Image, has_sys_admin: bool, r: &mut Report) {
    let mut seen = std::collections::BTreeSet::new();
    for p in &image.ptys {
        if !seen.insert(p.index) {
            r.errors.push(format!(
                "pty /dev/pts/{}: two pairs of the image have that index (from two devpts instances), and both would come back in /dev/pts",
                p.index
            ));
        } else if std::path::Path::new(&format!("/dev/pts/{}", p.index)).exists() {
            r.errors.push(format!(
                "pty /dev/pts/{} ({}): that index is taken here by another terminal{}; a pair comes back at its saved index (close that terminal, or restore where the index is free)",
                p.index,
                master_holder(image, p.id),
                index_holder(p.index).map_or(String::new(), |h| format!(", {h}"))
            ));
        }
    }
    if has_sys_admin {
        return;
    }
    for p in &image.ptys {
        let bytes = p.output.len()
            + p.input_pending.len()
            + p.input_lines.iter().map(Vec::len).sum::<usize>();
        if bytes > 0 {
            r.errors.push(format!(
                "pty /dev/pts/{}: {bytes} buffered bytes go back with TIOCSTI, which needs CAP_SYS_ADMIN",
                p.index
            ));
        }
    }
}

/// Who held pair `id`'s master at the dump: "master of pid P fd F".
fn master_holder(image: &Image, id: u32) -> String {
    for p in &image.processes {
        for fd in &p.fds {
            let Some(FileKind::Tty(t)) = image.file(fd.file).map(|f| &f.kind) else {
                continue;
            };
            if t.pair == id && role(t) == TtyRole::Master {
                return format!("master of pid {} fd {}", p.pid, fd.fd);
            }
        }
    }
    format!("pair {id}")
}

/// Who holds pty `index` here: a process with its master open (fdinfo's
/// tty-index), else one with its slave open; "held by pid P (COMM)".
fn index_holder(index: u32) -> Option<String> {
    let slave = format!("/dev/pts/{index}");
    let tag = format!("tty-index:\t{index}\n");
    let mut slave_holder = None;
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let link = link.to_string_lossy();
            let named = || {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                format!("pid {pid} ({})", comm.trim())
            };
            if link.ends_with("ptmx") {
                let info = format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy());
                if std::fs::read_to_string(info).is_ok_and(|i| i.contains(&tag)) {
                    return Some(format!("whose master {} holds", named()));
                }
            } else if link == slave && slave_holder.is_none() {
                slave_holder = Some(format!("open in {}", named()));
            }
        }
    }
    slave_holder
}

/// FdOp::PtyMaster.
/// The saved mode and owner of the slave node, when they are known and
/// the owner is a user the image's processes ran as, or any user when one
/// of them ran as root (check.rs allows that only for a root requester):
/// a pty is never handed to a user its requester could not hand it to.
fn slave_owner(b: &Builder, p: &PtyPair) -> Option<(u32, u32, u32)> {
    let ours = |uid: u32| {
        b.procs
            .iter()
            .any(|q| q.creds.ruid == uid || q.creds.euid == uid)
    };
    (p.slave_mode != 0 && (ours(p.slave_uid) || ours(0))).then_some((
        p.slave_mode & 0o7777,
        p.slave_uid,
        p.slave_gid,
    ))
}

/// The mode and owner of /dev/pts/`index` as saved (grantpt and fchown
/// by the process); where the restorer may not change them, they stay.
fn set_slave_owner(index: u32, (mode, uid, gid): (u32, u32, u32)) -> ckpt_sys::Result<()> {
    let path = std::ffi::CString::new(format!("/dev/pts/{index}")).expect("no NUL");
    let r = ckpt_sys::fs::chown_nofollow(&path, uid, gid)
        .and_then(|()| ckpt_sys::fs::chmod_nofollow(&path, mode));
    match r {
        Err(e) if e.errno() == Some(libc::EPERM) => Ok(()),
        r => r,
    }
}

pub(super) fn make_master(c: &mut Child<'_>, slot: usize, s: &PtySetup) -> ckpt_sys::Result<()> {
    let m = open_at_index(s.index, s.flags)?;
    let m = c.new_fd(slot, m)?;
    if let Some(o) = s.owner {
        set_slave_owner(s.index, o)?;
    }
    tty::tcsets2(m, &s.termios)?;
    tty::set_winsize(m, &s.winsize)?;
    tty::set_pty_locked(m, false)?;
    if !s.own_slave {
        // Only output the line discipline holds: no slave needed.
        if tty::put_back_output(m, None, &s.output)? < s.output.len() {
            return Err(nospace());
        }
        return Ok(());
    }
    let own = tty::open_peer(
        m,
        libc::O_RDWR | libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC,
    )?
    .into_raw_fd();
    let r = put_back(m, own, s);
    ckpt_sys::fds::close(own)?;
    r
}

fn nospace() -> ckpt_sys::Error {
    ckpt_sys::Error::Os {
        op: "putting a pty's buffered bytes back",
        tid: 0,
        source: std::io::Error::from_raw_os_error(libc::ENOSPC),
    }
}

/// Output, then input, through the slave description `own`.
fn put_back(m: i32, own: i32, s: &PtySetup) -> ckpt_sys::Result<()> {
    if tty::put_back_output(m, Some(own), &s.output)? < s.output.len() {
        return Err(nospace());
    }
    let i = &s.input;
    let n = tty::put_back_input(m, own, &s.termios, i.termios.as_ref(), &i.sti, &i.write)?;
    if n < i.sti.len() + i.write.len() {
        return Err(nospace());
    }
    Ok(())
}

/// Open /dev/ptmx until the kernel gives pty `index`; the masters got
/// below it are held until then and closed after. An index another
/// process holds is waited for up to [`INDEX_WAIT`]; then EBUSY.
fn open_at_index(index: u32, accmode: i32) -> ckpt_sys::Result<i32> {
    let flags = accmode | libc::O_NOCTTY | libc::O_CLOEXEC;
    let t0 = Instant::now();
    loop {
        let mut fillers = [-1i32; MAX_FILLERS];
        let mut n = 0;
        let got = loop {
            let m = ckpt_sys::fds::open(c"/dev/ptmx", flags, 0)?.into_raw_fd();
            let at = match tty::pty_index(m) {
                Ok(at) => at,
                Err(e) => {
                    let _ = ckpt_sys::fds::close(m);
                    close_all(&fillers[..n]);
                    return Err(e);
                }
            };
            if at == index {
                break Some(m);
            }
            if at > index || n == MAX_FILLERS {
                let _ = ckpt_sys::fds::close(m);
                break None;
            }
            fillers[n] = m;
            n += 1;
        };
        close_all(&fillers[..n]);
        if let Some(m) = got {
            return Ok(m);
        }
        if t0.elapsed() >= INDEX_WAIT {
            return Err(ckpt_sys::Error::Os {
                op: "opening /dev/ptmx at the saved pty index",
                tid: 0,
                source: std::io::Error::from_raw_os_error(libc::EBUSY),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn close_all(fds: &[i32]) {
    for &f in fds {
        let _ = ckpt_sys::fds::close(f);
    }
}

/// FdOp::PtyHungUp: the slave of a new pair (any index: the saved one
/// is of no use to a hung-up terminal), its master closed, which hangs
/// the slave up. O_NOCTTY: it never becomes the stub's terminal.
pub(super) fn make_hung_up(c: &mut Child<'_>, slot: usize, flags: i32) -> ckpt_sys::Result<()> {
    let m = ckpt_sys::fds::open(
        c"/dev/ptmx",
        libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        0,
    )?;
    tty::set_pty_locked(m.as_raw_fd(), false)?;
    let keep = flags & (libc::O_ACCMODE | libc::O_NONBLOCK);
    let fd = tty::open_peer(m.as_raw_fd(), keep | libc::O_NOCTTY | libc::O_CLOEXEC)?.into_raw_fd();
    drop(m);
    c.new_fd(slot, fd)?;
    Ok(())
}

/// FdOp::PtySlave: a slave description, opened through its master.
pub(super) fn make_slave(
    c: &mut Child<'_>,
    slot: usize,
    master: usize,
    flags: i32,
) -> ckpt_sys::Result<()> {
    let fd =
        tty::open_peer(c.slot(master), flags | libc::O_NOCTTY | libc::O_CLOEXEC)?.into_raw_fd();
    c.new_fd(slot, fd)?;
    Ok(())
}

/// FdOp::PtyFinish.
pub(super) fn finish_pair(
    c: &mut Child<'_>,
    master: usize,
    packet: bool,
    locked: bool,
    exclusive: Option<usize>,
) -> ckpt_sys::Result<()> {
    let m = c.slot(master);
    if packet {
        tty::set_packet_mode(m, true)?;
    }
    if let Some(s) = exclusive {
        tty::set_exclusive(c.slot(s), true)?;
    }
    if locked {
        tty::set_pty_locked(m, true)?;
    }
    Ok(())
}
