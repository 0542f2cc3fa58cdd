//! ckpt-sys's terminal calls on the running kernel: the pty facts capture
//! and restore rely on.

use ckpt_sys::fds::{self, tty};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

fn ptmx() -> OwnedFd {
    fds::open(
        c"/dev/ptmx",
        libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC | libc::O_NONBLOCK,
        0,
    )
    .expect("open /dev/ptmx")
}

fn peer(m: &OwnedFd) -> OwnedFd {
    tty::open_peer(
        m.as_raw_fd(),
        libc::O_RDWR | libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC,
    )
    .unwrap()
}

#[test]
fn a_pair_index_lock_peer_and_settings() {
    let m = ptmx();
    let n = tty::pty_index(m.as_fd()).unwrap();
    // A new pair is locked until unlocked; the peer cannot be opened then.
    assert!(tty::pty_locked(m.as_fd()).unwrap());
    assert_eq!(
        tty::open_peer(m.as_fd(), libc::O_RDWR | libc::O_NOCTTY)
            .unwrap_err()
            .errno(),
        Some(libc::EIO)
    );
    tty::set_pty_locked(m.as_fd(), false).unwrap();
    let s = peer(&m);
    let md = std::fs::metadata(format!("/proc/self/fd/{}", s.as_raw_fd())).unwrap();
    let (ma, mi) = (libc::major(md.rdev()), libc::minor(md.rdev()));
    assert_eq!((ma - 136) * 256 + mi, n);
    assert_eq!(tty::real_device(m.as_fd()).unwrap(), md.rdev());
    // TIOCGPTN is a master call.
    assert_eq!(
        tty::pty_index(s.as_fd()).unwrap_err().errno(),
        Some(libc::ENOTTY)
    );
    // Settings set on the master are the slave's.
    let mut t = tty::tcgets2(s.as_fd()).unwrap();
    t.lflag &= !(libc::ICANON | libc::ECHO);
    tty::tcsets2(m.as_fd(), &t).unwrap();
    assert_eq!(tty::tcgets2(s.as_fd()).unwrap(), t);
    let w = tty::Winsize {
        rows: 33,
        cols: 101,
        xpixel: 7,
        ypixel: 9,
    };
    tty::set_winsize(m.as_fd(), &w).unwrap();
    assert_eq!(tty::winsize(s.as_fd()).unwrap(), w);
    assert!(!tty::packet_mode(m.as_fd()).unwrap());
    tty::set_packet_mode(m.as_fd(), true).unwrap();
    assert!(tty::packet_mode(m.as_fd()).unwrap());
    assert_eq!(tty::line_discipline(s.as_fd()).unwrap(), 0);
    assert!(!tty::has_locked_termios(s.as_fd()).unwrap());
    assert!(!tty::exclusive(s.as_fd()).unwrap());
    tty::set_exclusive(s.as_fd(), true).unwrap();
    assert!(tty::exclusive(s.as_fd()).unwrap());
    // No session has it.
    assert_eq!(
        tty::session(m.as_fd()).unwrap_err().errno(),
        Some(libc::ENOTTY)
    );
    assert_eq!(tty::foreground(m.as_fd()).unwrap(), 0);
}

#[test]
fn pushed_input_and_written_output_are_read_back() {
    let m = ptmx();
    tty::set_pty_locked(m.as_fd(), false).unwrap();
    let s = peer(&m);
    let mut t = tty::tcgets2(s.as_fd()).unwrap();
    t.lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG);
    t.iflag &= !libc::ICRNL;
    t.cc[libc::VMIN] = 0;
    t.cc[libc::VTIME] = 0;
    tty::tcsets2(s.as_fd(), &t).unwrap();
    // TIOCSTI on the slave: input the slave reads.
    tty::push_input(s.as_fd(), b"in\r").unwrap();
    let mut b = [0u8; 16];
    assert!(tty::poll_one(s.as_fd(), libc::POLLIN, 1000).unwrap() & libc::POLLIN != 0);
    assert_eq!(tty::read_now(s.as_fd(), &mut b).unwrap(), Some(3));
    assert_eq!(&b[..3], b"in\r");
    // VMIN = VTIME = 0: an empty read says 0 rather than EAGAIN.
    assert_eq!(tty::read_now(s.as_fd(), &mut b).unwrap(), Some(0));
    // TIOCSTI on the master: output the master reads, untouched.
    tty::push_input(m.as_fd(), b"out\n").unwrap();
    assert!(tty::poll_one(m.as_fd(), libc::POLLIN, 1000).unwrap() & libc::POLLIN != 0);
    assert_eq!(tty::read_now(m.as_fd(), &mut b).unwrap(), Some(4));
    assert_eq!(&b[..4], b"out\n");
    assert_eq!(tty::write_waiting(s.as_fd(), b"xy", 100).unwrap(), 2);
    assert!(tty::poll_one(m.as_fd(), libc::POLLIN, 1000).unwrap() & libc::POLLIN != 0);
    assert_eq!(tty::read_now(m.as_fd(), &mut b).unwrap(), Some(2));
    // Every slave description closed: the master sees a hang-up.
    drop(s);
    assert!(tty::poll_one(m.as_fd(), libc::POLLIN, 0).unwrap() & libc::POLLHUP != 0);
}
