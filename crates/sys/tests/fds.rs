//! ckpt-sys's fd calls on the running kernel: what restore's stub and
//! capture rely on, byte for byte.

use ckpt_sys::fds::{self, epoll, eventfd, inet, memfd, pipe, timerfd, unix};
use ckpt_sys::sock_diag;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

fn inode(fd: &OwnedFd) -> u64 {
    std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .unwrap()
        .ino()
}

#[test]
fn a_negative_fd_is_ebadf_not_a_panic() {
    assert_eq!(fds::get_fl(-1).unwrap_err().errno(), Some(libc::EBADF));
    assert_eq!(pipe::pipe_size(-1).unwrap_err().errno(), Some(libc::EBADF));
    assert!(!fds::tty::isatty(-1));
}

#[test]
fn pipes_by_number_and_borrowed() {
    let (r, w) = pipe::pipe2(libc::O_CLOEXEC | libc::O_NONBLOCK).unwrap();
    let cap = pipe::pipe_size(w.as_fd()).unwrap();
    assert_eq!(pipe::pipe_size(w.as_raw_fd()).unwrap(), cap);
    assert!(pipe::set_pipe_size(w.as_raw_fd(), 2 * cap).unwrap() >= 2 * cap);
    fds::write_fd(w.as_raw_fd(), b"hello").unwrap();
    assert_eq!(pipe::bytes_readable(r.as_fd()).unwrap(), 5);
    // tee copies without taking.
    let (r2, w2) = pipe::pipe2(libc::O_CLOEXEC | libc::O_NONBLOCK).unwrap();
    assert_eq!(pipe::tee(r.as_fd(), w2.as_fd(), 100).unwrap(), 5);
    assert_eq!(pipe::tee(r2.as_fd(), w.as_fd(), 0).unwrap(), 0);
    let mut buf = [0u8; 16];
    assert_eq!(fds::read(r.as_raw_fd(), &mut buf).unwrap(), 5);
    assert_eq!(fds::read(r2.as_raw_fd(), &mut buf).unwrap(), 5);
    // Empty and non-blocking: tee says 0.
    assert_eq!(pipe::tee(r.as_fd(), w2.as_fd(), 100).unwrap(), 0);
    let fl = fds::get_fl(r.as_raw_fd()).unwrap();
    assert_ne!(fl & libc::O_NONBLOCK, 0);
    fds::set_fl(r.as_raw_fd(), fl & !libc::O_NONBLOCK).unwrap();
    assert_eq!(fds::get_fl(r.as_raw_fd()).unwrap() & libc::O_NONBLOCK, 0);
}

#[test]
fn dup_places_by_number() {
    let (r, _w) = pipe::pipe2(libc::O_CLOEXEC).unwrap();
    let d = fds::dup_at_least(r.as_raw_fd(), 500).unwrap();
    assert!(d.as_raw_fd() >= 500);
    let n = d.as_raw_fd() + 1;
    fds::dup3(d.as_raw_fd(), n, false).unwrap();
    assert_eq!(inode(&r), {
        let m = std::fs::metadata(format!("/proc/self/fd/{n}")).unwrap();
        m.ino()
    });
    fds::close(n).unwrap();
    assert_eq!(fds::close(n).unwrap_err().errno(), Some(libc::EBADF));
}

#[test]
fn timerfd_is_armed_with_its_ticks() {
    let t = timerfd::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_CLOEXEC).unwrap();
    timerfd::timerfd_settime(t.as_raw_fd(), 0, 3_600_000_000_000, 1_500_000_000).unwrap();
    timerfd::timerfd_set_ticks(t.as_raw_fd(), 3).unwrap();
    let mut b = [0u8; 8];
    assert_eq!(fds::read(t.as_raw_fd(), &mut b).unwrap(), 8);
    assert_eq!(u64::from_ne_bytes(b), 3);
    let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", t.as_raw_fd())).unwrap();
    assert!(fdinfo.contains("it_interval: (1, 500000000)"), "{fdinfo}");
    let e = timerfd::timerfd_create(12345, 0).unwrap_err();
    assert_eq!(e.errno(), Some(libc::EINVAL));
}

#[test]
fn eventfd_epoll_and_memfd() {
    let e = eventfd::eventfd(libc::EFD_CLOEXEC).unwrap();
    fds::write_fd(e.as_raw_fd(), &7u64.to_ne_bytes()).unwrap();
    let ep = epoll::epoll_create1(libc::EPOLL_CLOEXEC).unwrap();
    epoll::epoll_add(ep.as_raw_fd(), e.as_raw_fd(), libc::EPOLLIN as u32, 42).unwrap();
    let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", ep.as_raw_fd())).unwrap();
    let words: Vec<&str> = fdinfo.split_whitespace().collect();
    let data = words
        .iter()
        .position(|w| *w == "data:")
        .expect("a watched fd");
    assert_eq!(words[data + 1], "2a", "{fdinfo}");

    let m = memfd::memfd_create(c"ckpt-test", libc::MFD_ALLOW_SEALING).unwrap();
    fds::regular::ftruncate(m.as_raw_fd(), 8192).unwrap();
    fds::regular::pwrite_all(m.as_raw_fd(), b"abc", 4096).unwrap();
    memfd::add_seals(m.as_raw_fd(), libc::F_SEAL_SHRINK as u32).unwrap();
    assert_eq!(
        memfd::get_seals(m.as_fd()).unwrap(),
        libc::F_SEAL_SHRINK as u32
    );
    assert_eq!(
        fds::regular::seek_data_or_hole(m.as_fd(), 0, false).unwrap(),
        Some(4096)
    );
    assert_eq!(
        fds::regular::seek_data_or_hole(m.as_fd(), 8192, false).unwrap(),
        None
    );
}

#[test]
fn unix_sockets_keep_their_names_byte_for_byte() {
    // Abstract, and a path the kernel reports with its trailing NUL.
    let abs = format!("\0ckpt-sys-test-{}", std::process::id()).into_bytes();
    let s = unix::unix_socket(libc::SOCK_STREAM, &abs, 7).unwrap();
    let d = sock_diag::unix_diag(inode(&s)).unwrap();
    assert_eq!((d.name.as_slice(), d.state), (abs.as_slice(), 10));
    assert_eq!(d.wqueue, 7);

    let dir = std::env::temp_dir().join(format!("ckpt-sys-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut path = dir.join("s").into_os_string().into_encoded_bytes();
    path.push(0);
    let s = unix::unix_socket(libc::SOCK_DGRAM, &path, 0).unwrap();
    let d = sock_diag::unix_diag(inode(&s)).unwrap();
    assert_eq!(d.name, path);
    drop(s);
    let cpath = std::ffi::CString::from_vec_with_nul(path.clone()).unwrap();
    unix::clear_stale_socket(&cpath).unwrap();
    unix::clear_stale_socket(&cpath).unwrap();
    std::fs::remove_dir(&dir).unwrap();

    let too_long = vec![b'x'; 109];
    let e = unix::unix_socket(libc::SOCK_STREAM, &too_long, 0).unwrap_err();
    assert_eq!(e.errno(), Some(libc::ENAMETOOLONG));

    let (a, b) = unix::socketpair(libc::SOCK_STREAM).unwrap();
    fds::write_fd(a.as_raw_fd(), b"peek").unwrap();
    assert_eq!(fds::socket::peek_stream(b.as_fd(), 64).unwrap(), b"peek");
    assert_eq!(fds::socket::peek_stream(a.as_fd(), 64).unwrap(), b"");
}

#[test]
fn tcp_listeners_are_found_by_sock_diag() {
    let s = inet::tcp_listen(&[127, 0, 0, 1], 0, 5, libc::SOCK_CLOEXEC).unwrap();
    let ls = sock_diag::tcp_listeners(libc::AF_INET).unwrap();
    let l = ls.iter().find(|l| l.inode == inode(&s)).expect("listed");
    assert_eq!((l.addr.as_slice(), l.backlog), (&[127, 0, 0, 1][..], 5));
    // The same address and port again: SO_REUSEADDR does not allow two
    // listeners.
    let e = inet::tcp_listen(&[127, 0, 0, 1], l.port, 5, 0).unwrap_err();
    assert_eq!(e.errno(), Some(libc::EADDRINUSE));

    let s6 = inet::tcp_listen(&std::net::Ipv6Addr::LOCALHOST.octets(), 0, 3, 0).unwrap();
    let ls = sock_diag::tcp_listeners(libc::AF_INET6).unwrap();
    assert!(ls.iter().any(|l| l.inode == inode(&s6) && l.backlog == 3));
    let e = inet::tcp_listen(&[1, 2, 3], 0, 1, 0).unwrap_err();
    assert_eq!(e.errno(), Some(libc::EAFNOSUPPORT));
}
