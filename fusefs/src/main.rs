//! `ckptfs [--store DIR] MOUNTPOINT [-o OPTS]` and the mount helper form
//! `ckptfs STORE MOUNTPOINT -o OPTS` (what `mount -t fuse.ckptfs` runs).

use anyhow::{bail, Context};
use std::path::PathBuf;

const USAGE: &str = "\
usage: ckptfs [--store DIR] MOUNTPOINT [-o OPTIONS] [-f | --background]
       ckptfs STORE MOUNTPOINT [-o OPTIONS] [-f]

Mount a store of ckpt images (DIR/NAME.ckpt) as a filesystem: one directory
per image with its processes' state as files; see spec/fusefs.md.

The first form runs in the foreground until SIGINT/SIGTERM/SIGHUP or umount.
The second form is the one mount(8) uses (mount -t fuse.ckptfs STORE MNT):
it goes to the background once mounted, unless -f is given.

options (-o, comma separated):
  allow_other          let other users in (file modes follow the images')
  ro                   read-only: no edits, no ctl commands
  store=DIR            the store (default: /var/lib/ckpt for root, else
                       $XDG_DATA_HOME/ckpt or ~/.local/share/ckpt)
  threads=N            request threads (default 4)
  rw, default_permissions, dev, nodev, suid, nosuid, exec, noexec, atime,
  noatime, relatime, nodiratime, sync, async, auto, noauto, user, users,
  nouser, _netdev, nofail, defaults, fsname=, subtype=, comment=, x-*:
                       accepted and ignored
";

struct Args {
    store: Option<PathBuf>,
    mountpoint: PathBuf,
    opts: ckptfs::MountOptions,
    background: bool,
}

fn apply_opts(
    list: &str,
    a: &mut ckptfs::MountOptions,
    store: &mut Option<PathBuf>,
) -> anyhow::Result<()> {
    for o in list.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let (k, v) = match o.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (o, None),
        };
        match (k, v) {
            ("allow_other", None) => a.allow_other = true,
            ("ro", None) => a.read_only = true,
            ("rw", None) => a.read_only = false,
            ("store", Some(d)) => *store = Some(PathBuf::from(d)),
            ("threads", Some(n)) => {
                a.threads = n
                    .parse()
                    .ok()
                    .filter(|&n| (1..=64).contains(&n))
                    .context("threads=N: 1 to 64")?
            }
            (
                "default_permissions"
                | "dev"
                | "nodev"
                | "suid"
                | "nosuid"
                | "exec"
                | "noexec"
                | "atime"
                | "noatime"
                | "relatime"
                | "strictatime"
                | "nodiratime"
                | "diratime"
                | "sync"
                | "async"
                | "dirsync"
                | "auto"
                | "noauto"
                | "user"
                | "users"
                | "nouser"
                | "owner"
                | "group"
                | "_netdev"
                | "nofail"
                | "defaults"
                | "lazytime"
                | "nolazytime"
                | "silent"
                | "loud",
                None,
            ) => {}
            ("fsname" | "subtype" | "comment" | "source", Some(_)) => {}
            (k, _) if k.starts_with("x-") => {}
            _ => bail!("unknown option '{o}'\n\n{USAGE}"),
        }
    }
    Ok(())
}

fn parse(args: Vec<String>) -> anyhow::Result<Args> {
    let mut opts = ckptfs::MountOptions::default();
    let mut store = None;
    let mut positional = Vec::new();
    let mut foreground = false;
    let mut background = false;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            "-V" | "--version" => {
                println!("ckptfs {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            "-f" | "--foreground" => foreground = true,
            "--background" => background = true,
            "-s" => {} // libfuse's single-threaded flag: meaningless here
            "--store" => {
                store = Some(PathBuf::from(
                    it.next().context("--store needs a directory")?,
                ))
            }
            "-o" => apply_opts(
                &it.next().context("-o needs options")?,
                &mut opts,
                &mut store,
            )?,
            s if s.starts_with("--store=") => store = Some(PathBuf::from(&s[8..])),
            s if s.starts_with("-o") => apply_opts(&s[2..], &mut opts, &mut store)?,
            s if s.starts_with('-') && s.len() > 1 => bail!("unknown argument '{s}'\n\n{USAGE}"),
            _ => positional.push(a),
        }
    }
    let (pos_store, mountpoint, helper_form) = match positional.len() {
        1 => (None, positional.remove(0), false),
        2 => {
            let mp = positional.remove(1);
            (Some(PathBuf::from(positional.remove(0))), mp, true)
        }
        0 => bail!("no mountpoint given\n\n{USAGE}"),
        _ => bail!("too many arguments\n\n{USAGE}"),
    };
    if pos_store.is_some() && store.is_some() {
        bail!("the store is given twice (positional and --store/-o store=)");
    }
    Ok(Args {
        store: pos_store.or(store),
        mountpoint: PathBuf::from(mountpoint),
        opts,
        background: (helper_form || background) && !foreground,
    })
}

/// Fork: the parent waits until the child reports the mount (or its
/// failure) through a pipe and exits accordingly; the child returns the
/// pipe's write end. Must run before any thread is started.
fn daemonize() -> anyhow::Result<i32> {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("pipe");
    }
    // SAFETY: single-threaded here (no thread started yet).
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()).context("fork"),
        0 => {
            // SAFETY: plain syscalls on our own fds.
            unsafe {
                libc::close(fds[0]);
                libc::setsid();
            }
            Ok(fds[1])
        }
        _ => {
            // SAFETY: closing our copy of the write end.
            unsafe { libc::close(fds[1]) };
            use std::io::Read;
            use std::os::fd::FromRawFd;
            // SAFETY: fds[0] is an open fd that nothing else owns.
            let mut f = unsafe { std::fs::File::from_raw_fd(fds[0]) };
            let mut msg = String::new();
            let _ = f.read_to_string(&mut msg);
            if msg == "ok" {
                std::process::exit(0);
            }
            if msg.is_empty() {
                msg = "ckptfs: error: the background process died before mounting".into();
            }
            eprintln!("{msg}");
            std::process::exit(1);
        }
    }
}

fn report(fd: i32, msg: &str) {
    // SAFETY: fd is the pipe's write end owned by us.
    unsafe {
        libc::write(fd, msg.as_ptr().cast(), msg.len());
        libc::close(fd);
    }
}

/// Point stdin/stdout/stderr at /dev/null (a daemon keeps no terminal).
fn detach_stdio() {
    let null = c"/dev/null";
    // SAFETY: plain syscalls; dup2 onto 0..2 is what a daemon does.
    unsafe {
        let fd = libc::open(null.as_ptr(), libc::O_RDWR);
        if fd >= 0 {
            libc::dup2(fd, 0);
            libc::dup2(fd, 1);
            libc::dup2(fd, 2);
            if fd > 2 {
                libc::close(fd);
            }
        }
    }
}

fn chain(e: &anyhow::Error) -> String {
    ckpt_image::chain(e.chain())
}

fn main() {
    let args = match parse(std::env::args().skip(1).collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ckptfs: error: {}", chain(&e));
            std::process::exit(2);
        }
    };
    let store = args.store.clone().unwrap_or_else(ckptfs::default_store);
    let notify = if args.background {
        // Resolve paths before the child leaves the working directory.
        let r = ckptfs::prepare_store(&store).and_then(|s| {
            let mp = args
                .mountpoint
                .canonicalize()
                .with_context(|| format!("mountpoint {}", args.mountpoint.display()))?;
            Ok((s, mp))
        });
        match r {
            Ok(_) => {}
            Err(e) => {
                eprintln!("ckptfs: error: {}", chain(&e));
                std::process::exit(1);
            }
        }
        match daemonize() {
            Ok(fd) => Some(fd),
            Err(e) => {
                eprintln!("ckptfs: error: {}", chain(&e));
                std::process::exit(1);
            }
        }
    } else {
        None
    };
    let r = ckptfs::mount_with(
        &store,
        &args.mountpoint,
        args.opts,
        Box::new(ckptfs::ops::Real),
        |mp| match notify {
            Some(fd) => {
                report(fd, "ok");
                detach_stdio();
            }
            None => eprintln!("ckptfs: {} mounted on {}", store.display(), mp.display()),
        },
    );
    match r {
        Ok(()) => {}
        Err(e) => {
            let msg = format!("ckptfs: error: {}", chain(&e));
            match notify {
                Some(fd) => report(fd, &msg),
                None => eprintln!("{msg}"),
            }
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &[&str]) -> anyhow::Result<Args> {
        parse(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn forms() {
        let a = p(&["/mnt"]).unwrap();
        assert_eq!(a.mountpoint, PathBuf::from("/mnt"));
        assert!(a.store.is_none() && !a.background);
        let a = p(&["--store", "/s", "/mnt", "-o", "allow_other,ro"]).unwrap();
        assert_eq!(a.store, Some(PathBuf::from("/s")));
        assert!(a.opts.allow_other && a.opts.read_only);
        let a = p(&["/s", "/mnt", "-o", "rw,nosuid,nodev,relatime,x-gvfs-hide"]).unwrap();
        assert_eq!(a.store, Some(PathBuf::from("/s")));
        assert!(a.background && !a.opts.read_only);
        assert!(!p(&["/s", "/mnt", "-f"]).unwrap().background);
        let a = p(&["/mnt", "-ostore=/x,threads=2"]).unwrap();
        assert_eq!(a.store, Some(PathBuf::from("/x")));
        assert_eq!(a.opts.threads, 2);
        assert!(p(&["/mnt", "-o", "bogus"]).is_err());
        assert!(p(&[]).is_err());
        assert!(p(&["a", "b", "c"]).is_err());
        assert!(p(&["/s", "/mnt", "-o", "store=/t"]).is_err());
    }
}
