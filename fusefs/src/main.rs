//! `ckptfs [--store DIR] MOUNTPOINT [-o OPTS]` and the mount helper form
//! `ckptfs STORE MOUNTPOINT -o OPTS` (what `mount -t fuse.ckptfs` runs).
#![forbid(unsafe_code)]

use anyhow::{bail, Context};
use std::io::{Read, Write};
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
  create               create the store (mode 0700) if it does not exist;
                       without it a missing store is an error
  threads=N            request threads (default 4)
  log=FILE             append the log to FILE (default: standard error,
                       which a background ckptfs does not keep)
  debug                log every request (RUST_LOG=ckptfs=debug does too)
  rw, default_permissions, dev, nodev, suid, nosuid, exec, noexec, atime,
  noatime, relatime, nodiratime, sync, async, auto, noauto, user, users,
  nouser, _netdev, nofail, defaults, fsname=, subtype=, comment=, x-*:
                       accepted and ignored
";

/// Set in the environment of the background child (see [`daemonize`]).
const CHILD_ENV: &str = "CKPTFS_BACKGROUND_CHILD";

struct Args {
    store: Option<PathBuf>,
    mountpoint: PathBuf,
    opts: ckptfs::MountOptions,
    background: bool,
    log: Option<PathBuf>,
    debug: bool,
}

struct Extra {
    store: Option<PathBuf>,
    log: Option<PathBuf>,
    debug: bool,
}

fn apply_opts(list: &str, a: &mut ckptfs::MountOptions, x: &mut Extra) -> anyhow::Result<()> {
    for o in list.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let (k, v) = match o.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (o, None),
        };
        match (k, v) {
            ("allow_other", None) => a.allow_other = true,
            ("ro", None) => a.read_only = true,
            ("rw", None) => a.read_only = false,
            ("create", None) => a.create = true,
            ("debug", None) => x.debug = true,
            ("store", Some(d)) => x.store = Some(PathBuf::from(d)),
            ("log", Some(f)) if !f.is_empty() => x.log = Some(PathBuf::from(f)),
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
    let mut x = Extra {
        store: None,
        log: None,
        debug: false,
    };
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
            "-d" => x.debug = true,
            "--store" => {
                x.store = Some(PathBuf::from(
                    it.next().context("--store needs a directory")?,
                ))
            }
            "-o" => apply_opts(&it.next().context("-o needs options")?, &mut opts, &mut x)?,
            s if s.starts_with("--store=") => x.store = Some(PathBuf::from(&s[8..])),
            s if s.starts_with("-o") => apply_opts(&s[2..], &mut opts, &mut x)?,
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
    if pos_store.is_some() && x.store.is_some() {
        bail!("the store is given twice (positional and --store/-o store=)");
    }
    Ok(Args {
        store: pos_store.or(x.store),
        mountpoint: PathBuf::from(mountpoint),
        opts,
        background: (helper_form || background) && !foreground,
        log: x.log,
        debug: x.debug,
    })
}

/// Log to standard error, or appending to `log`; `RUST_LOG` overrides the
/// level (default: info for ckptfs, warnings of the FUSE library).
fn init_logging(log: Option<&PathBuf>, debug: bool) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let default = if debug {
        "ckptfs=debug,fuser=debug"
    } else {
        "ckptfs=info,fuser=error"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let r = match log {
        Some(p) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("cannot open the log file {}", p.display()))?;
            b.with_ansi(false)
                .with_writer(std::sync::Mutex::new(f))
                .try_init()
        }
        None => b.with_writer(std::io::stderr).try_init(),
    };
    r.map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

/// Go to the background: run this program again as a child in its own
/// session (the parent keeps no thread or FUSE state, so no fork is
/// needed) with its standard output on a pipe, and wait until the child
/// reports the mount ("ok") or its error there; exit accordingly.
fn daemonize() -> ! {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    let child = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(CHILD_ENV, "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ckptfs: error: cannot start the background process: {e}");
            std::process::exit(1);
        }
    };
    let mut msg = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut msg);
    }
    if msg == "ok" {
        std::process::exit(0);
    }
    let _ = child.wait();
    if msg.is_empty() {
        msg = "ckptfs: error: the background process died before mounting".into();
    }
    eprintln!("{msg}");
    std::process::exit(1);
}

/// In the background child: tell the parent (our standard output) how the
/// mount went; on success, leave the terminal (stdio to /dev/null).
fn report(msg: &str, ok: bool) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(msg.as_bytes());
    let _ = out.flush();
    drop(out);
    if ok {
        if let Ok(null) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
        {
            let _ = nix::unistd::dup2_stdin(&null);
            let _ = nix::unistd::dup2_stdout(&null);
            let _ = nix::unistd::dup2_stderr(&null);
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
    let child = std::env::var_os(CHILD_ENV).is_some();
    if args.background && !child {
        // Check what can be checked before going to the background.
        let r = ckptfs::prepare_store(&store, args.opts.create).and_then(|_| {
            args.mountpoint
                .canonicalize()
                .with_context(|| format!("mountpoint {}", args.mountpoint.display()))
        });
        if let Err(e) = r {
            eprintln!("ckptfs: error: {}", chain(&e));
            std::process::exit(1);
        }
        daemonize();
    }
    let background = args.background && child;
    if background {
        let _ = nix::unistd::setsid();
    }
    if let Err(e) = init_logging(args.log.as_ref(), args.debug) {
        let msg = format!("ckptfs: error: {}", chain(&e));
        if background {
            report(&msg, false);
        } else {
            eprintln!("{msg}");
        }
        std::process::exit(1);
    }
    let r = ckptfs::mount_with(
        &store,
        &args.mountpoint,
        args.opts,
        Box::new(ckptfs::ops::Real),
        |mp| {
            if background {
                report("ok", true);
            } else {
                eprintln!("ckptfs: {} mounted on {}", store.display(), mp.display());
            }
            tracing::info!(store = %store.display(), mountpoint = %mp.display(), "mounted");
        },
    );
    if let Err(e) = r {
        let msg = format!("ckptfs: error: {}", chain(&e));
        tracing::error!("{}", chain(&e));
        if background {
            report(&msg, false);
        } else {
            eprintln!("{msg}");
        }
        std::process::exit(1);
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
        assert!(a.store.is_none() && !a.background && !a.opts.create);
        let a = p(&["--store", "/s", "/mnt", "-o", "allow_other,ro,create"]).unwrap();
        assert_eq!(a.store, Some(PathBuf::from("/s")));
        assert!(a.opts.allow_other && a.opts.read_only && a.opts.create);
        let a = p(&["/s", "/mnt", "-o", "rw,nosuid,nodev,relatime,x-gvfs-hide"]).unwrap();
        assert_eq!(a.store, Some(PathBuf::from("/s")));
        assert!(a.background && !a.opts.read_only);
        assert!(!p(&["/s", "/mnt", "-f"]).unwrap().background);
        let a = p(&["/mnt", "-ostore=/x,threads=2,log=/tmp/l,debug"]).unwrap();
        assert_eq!(a.store, Some(PathBuf::from("/x")));
        assert_eq!(a.opts.threads, 2);
        assert_eq!(a.log, Some(PathBuf::from("/tmp/l")));
        assert!(a.debug);
        assert!(p(&["/mnt", "-o", "bogus"]).is_err());
        assert!(p(&["/mnt", "-o", "log="]).is_err());
        assert!(p(&[]).is_err());
        assert!(p(&["a", "b", "c"]).is_err());
        assert!(p(&["/s", "/mnt", "-o", "store=/t"]).is_err());
    }
}
