//! The connection lock: netfilter rules that drop every packet of the TCP
//! connections being saved, from before their state is read until the
//! restored sockets leave repair mode, so that the kernel neither answers
//! nor loses a segment meanwhile (the peer only sees a pause and
//! retransmits). Also drops new connection attempts (SYN without ACK) to
//! the ports of listeners being saved: those clients retry and reach the
//! restored listener.
//!
//! One nf_tables table per dump, `inet ckpt_lock_<tag>`, made and removed
//! in one transaction each by the `nft` program (package nftables): two
//! sets of 4-tuples (both directions), one set of listening ports, and
//! input and output base chains at priority -150 that first accept
//! packets carrying [`LOCK_MARK`] (what a restore injects itself), then
//! drop the locked ones. Set elements expire after [`timeout_secs`]
//! (one hour, or `CKPT_TCP_LOCK_TIMEOUT` seconds; 0: never): a lock whose
//! image is never restored does not blackhole those 4-tuples for good.
//!
//! A lock outlives the dump that made it when the dumped process was
//! killed: the restore removes it ([`unlock`]). Each lock has a record in
//! [`STATE_DIR`] (written 0600, synced, renamed into place before the
//! lock exists): its tag, the dumper's pid and start time, `locking`
//! while the dump runs, `dumped` once the image is safe, and the sockets
//! the dump put in repair mode. [`cleanup_stale`] (run by every dump and
//! restore) undoes a lock whose dumper died mid-dump: those sockets leave
//! repair mode (with a window probe) and get SO_REUSEADDR back, then the
//! table and the record go. `dumped` locks stay until their restore or
//! until their elements expired.

use crate::fds::socket;
use crate::fds::tcp_repair::{self, Repair};
use crate::{Error, Result};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The SO_MARK the lock lets through ("ckpt").
pub const LOCK_MARK: u32 = 0x636b_7074;
/// Where lock records live.
pub const STATE_DIR: &str = "/run/ckpt/locks";
/// Default lifetime of a lock's elements.
const DEFAULT_TIMEOUT: u64 = 3600;

/// One connection as the wire sees it (v4-mapped addresses unwrapped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conn {
    pub local: SocketAddr,
    pub peer: SocketAddr,
}

impl Conn {
    pub fn new(local: SocketAddr, peer: SocketAddr) -> Conn {
        let w = |a: SocketAddr| SocketAddr::new(crate::segment::wire_ip(a.ip()), a.port());
        Conn {
            local: w(local),
            peer: w(peer),
        }
    }
}

/// The lifetime of a lock's elements in seconds (0: no expiry).
pub fn timeout_secs() -> u64 {
    std::env::var("CKPT_TCP_LOCK_TIMEOUT")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_TIMEOUT)
}

/// A new tag: this process's pid and the time, in hex.
pub fn new_tag() -> String {
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!("{:x}_{ns:x}", std::process::id())
}

fn table(tag: &str) -> String {
    format!("inet ckpt_lock_{tag}")
}

fn tool(what: String) -> Error {
    Error::Tool { tool: "nft", what }
}

/// Run nft with `args` and `input` on its stdin; its stdout.
fn nft(args: &[&str], input: &str) -> Result<String> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                tool("not found: live TCP connections are locked with nft (install the nftables package)".into())
            } else {
                tool(format!("cannot run it: {e}"))
            }
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| tool(format!("writing its input: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| tool(format!("waiting for it: {e}")))?;
    if !out.status.success() {
        return Err(tool(format!(
            "nft {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The nft script that makes the lock `tag` (pure).
pub fn lock_script(tag: &str, conns: &[Conn], listen_ports: &[u16], timeout: u64) -> String {
    let t = table(tag);
    let flags = if timeout > 0 { " flags timeout;" } else { "" };
    let mut s = format!("add table {t}\n");
    s += &format!(
        "add set {t} c4 {{ type ipv4_addr . inet_service . ipv4_addr . inet_service;{flags} }}\n"
    );
    s += &format!(
        "add set {t} c6 {{ type ipv6_addr . inet_service . ipv6_addr . inet_service;{flags} }}\n"
    );
    s += &format!("add set {t} lp {{ type inet_service;{flags} }}\n");
    for hook in ["input", "output"] {
        s += &format!(
            "add chain {t} {hook} {{ type filter hook {hook} priority -150; policy accept; }}\n"
        );
        s += &format!("add rule {t} {hook} meta mark {LOCK_MARK:#x} accept\n");
        s += &format!("add rule {t} {hook} ip saddr . tcp sport . ip daddr . tcp dport @c4 drop\n");
        s += &format!(
            "add rule {t} {hook} ip6 saddr . tcp sport . ip6 daddr . tcp dport @c6 drop\n"
        );
    }
    s += &format!("add rule {t} input tcp dport @lp tcp flags & (syn | ack) == syn drop\n");
    s + &elements_script(tag, conns, listen_ports, timeout)
}

/// The nft script adding `conns` and `listen_ports` to the lock `tag`.
pub fn elements_script(tag: &str, conns: &[Conn], listen_ports: &[u16], timeout: u64) -> String {
    let t = table(tag);
    let to = if timeout > 0 {
        format!(" timeout {timeout}s")
    } else {
        String::new()
    };
    let mut s = String::new();
    for p in listen_ports {
        s += &format!("add element {t} lp {{ {p}{to} }}\n");
    }
    for c in conns {
        let set = if c.local.is_ipv4() { "c4" } else { "c6" };
        let e = |a: SocketAddr, b: SocketAddr| {
            format!("{} . {} . {} . {}{to}", a.ip(), a.port(), b.ip(), b.port())
        };
        s += &format!(
            "add element {t} {set} {{ {}, {} }}\n",
            e(c.local, c.peer),
            e(c.peer, c.local)
        );
    }
    s
}

/// Lock `conns` and new connections to `listen_ports` under `tag`.
pub fn lock(tag: &str, conns: &[Conn], listen_ports: &[u16]) -> Result<()> {
    let script = lock_script(tag, conns, listen_ports, timeout_secs());
    nft(&["-f", "-"], &script).map(drop)
}

/// Add `conns` and `listen_ports` to the existing lock `tag`.
pub fn add(tag: &str, conns: &[Conn], listen_ports: &[u16]) -> Result<()> {
    if conns.is_empty() && listen_ports.is_empty() {
        return Ok(());
    }
    let script = elements_script(tag, conns, listen_ports, timeout_secs());
    nft(&["-f", "-"], &script).map(drop)
}

/// Remove the lock `tag`; a lock that is not there is no error.
pub fn unlock(tag: &str) -> Result<()> {
    if !tag.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') || tag.is_empty() {
        return Err(tool(format!("{tag:?} is not a lock tag")));
    }
    match nft(
        &["delete", "table", "inet", &format!("ckpt_lock_{tag}")],
        "",
    ) {
        Ok(_) => Ok(()),
        Err(Error::Tool { what, .. })
            if what.contains("No such file or directory") || what.contains("does not exist") =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Whether the lock `tag` exists.
pub fn exists(tag: &str) -> Result<bool> {
    let out = nft(&["list", "tables", "inet"], "")?;
    let want = format!("table inet ckpt_lock_{tag}");
    Ok(out.lines().any(|l| l.trim() == want))
}

/// A socket a dump put in repair mode (for the cleanup of a dead dumper).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repaired {
    pub pid: i32,
    pub fd: i32,
    pub inode: u64,
    pub reuseaddr: bool,
}

/// The state of one lock, kept in [`STATE_DIR`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub tag: String,
    pub dumper_pid: i32,
    /// Field 22 of /proc/PID/stat: a recycled pid is not the dumper.
    pub dumper_start: u64,
    /// "locking" while the dump runs; "dumped" once the image is safe.
    pub status: String,
    /// When the lock was made (seconds since the epoch).
    pub created: u64,
    pub sockets: Vec<Repaired>,
}

impl Record {
    /// A record of a lock this process is making.
    pub fn new(tag: &str) -> Record {
        let pid = std::process::id() as i32;
        Record {
            tag: tag.to_string(),
            dumper_pid: pid,
            dumper_start: crate::proc::start_time(pid).unwrap_or(0),
            status: "locking".into(),
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            sockets: Vec::new(),
        }
    }

    pub fn encode(&self) -> String {
        let mut s = format!(
            "tag={}\ndumper={} {}\nstatus={}\ncreated={}\n",
            self.tag, self.dumper_pid, self.dumper_start, self.status, self.created
        );
        for r in &self.sockets {
            s += &format!(
                "socket={} {} {} {}\n",
                r.pid, r.fd, r.inode, r.reuseaddr as u8
            );
        }
        s
    }

    pub fn decode(text: &str) -> Option<Record> {
        let mut r = Record {
            tag: String::new(),
            dumper_pid: 0,
            dumper_start: 0,
            status: String::new(),
            created: 0,
            sockets: Vec::new(),
        };
        for line in text.lines() {
            let (k, v) = line.split_once('=')?;
            let w: Vec<&str> = v.split_whitespace().collect();
            match k {
                "tag" => r.tag = v.to_string(),
                "dumper" => {
                    r.dumper_pid = w.first()?.parse().ok()?;
                    r.dumper_start = w.get(1)?.parse().ok()?;
                }
                "status" => r.status = v.to_string(),
                "created" => r.created = v.parse().ok()?,
                "socket" => r.sockets.push(Repaired {
                    pid: w.first()?.parse().ok()?,
                    fd: w.get(1)?.parse().ok()?,
                    inode: w.get(2)?.parse().ok()?,
                    reuseaddr: *w.get(3)? == "1",
                }),
                _ => {}
            }
        }
        (!r.tag.is_empty()).then_some(r)
    }

    fn path(&self, dir: &Path) -> PathBuf {
        dir.join(&self.tag)
    }

    /// Write it (0600, synced, renamed into place).
    pub fn write(&self, dir: &Path) -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let e = |e: std::io::Error| tool(format!("lock record in {}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(e)?;
        let tmp = dir.join(format!(".{}.tmp", self.tag));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(e)?;
        f.write_all(self.encode().as_bytes()).map_err(e)?;
        f.sync_all().map_err(e)?;
        std::fs::rename(&tmp, self.path(dir)).map_err(e)
    }

    pub fn remove(&self, dir: &Path) {
        let _ = std::fs::remove_file(self.path(dir));
    }

    fn dumper_alive(&self) -> bool {
        crate::proc::start_time(self.dumper_pid) == Some(self.dumper_start)
    }
}

/// Remove the record of lock `tag`, if any.
pub fn remove_record(dir: &Path, tag: &str) {
    if tag.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') && !tag.is_empty() {
        let _ = std::fs::remove_file(dir.join(tag));
    }
}

/// Take socket `r` out of repair mode if it is still the one the dump
/// left there.
fn release_socket(r: &Repaired) {
    let Ok(fd) = crate::proc::pidfd::fd_of(r.pid, r.fd) else {
        return; // the process or its fd is gone, and so is the socket
    };
    use std::os::fd::AsRawFd;
    let fd = fd.as_raw_fd();
    if socket::inode(fd).ok() != Some(r.inode) || !tcp_repair::in_repair(fd).unwrap_or(false) {
        return;
    }
    let _ = tcp_repair::set_repair(fd, Repair::Off);
    let _ = socket::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, r.reuseaddr as i32);
}

/// Undo the locks of dumps whose dumper died before finishing, and drop
/// `dumped` locks whose elements expired. Returns the tags removed.
pub fn cleanup_stale(dir: &Path) -> Vec<String> {
    let mut cleaned = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return cleaned;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let timeout = timeout_secs();
    for ent in entries.flatten() {
        let name = ent.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let Some(rec) = std::fs::read_to_string(ent.path())
            .ok()
            .and_then(|t| Record::decode(&t))
        else {
            continue;
        };
        let stale = match rec.status.as_str() {
            "locking" => !rec.dumper_alive(),
            _ => timeout > 0 && now > rec.created.saturating_add(timeout + 60),
        };
        if !stale {
            continue;
        }
        if rec.status == "locking" {
            for s in &rec.sockets {
                release_socket(s);
            }
        }
        if unlock(&rec.tag).is_ok() {
            rec.remove(dir);
            cleaned.push(rec.tag);
        }
    }
    cleaned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_and_records() {
        let c = Conn::new(
            "[::ffff:127.0.0.1]:80".parse().unwrap(),
            "127.0.0.1:5555".parse().unwrap(),
        );
        assert!(c.local.is_ipv4());
        let s = lock_script("t1", &[c], &[8080], 60);
        assert!(s.contains("add table inet ckpt_lock_t1\n"));
        assert!(s.contains("c4 { 127.0.0.1 . 80 . 127.0.0.1 . 5555 timeout 60s, 127.0.0.1 . 5555 . 127.0.0.1 . 80 timeout 60s }"), "{s}");
        assert!(s.contains("lp { 8080 timeout 60s }"));
        assert!(!lock_script("t1", &[], &[], 0).contains("timeout"));
        let mut r = Record::new("t1");
        r.sockets.push(Repaired {
            pid: 5,
            fd: 3,
            inode: 77,
            reuseaddr: true,
        });
        assert_eq!(Record::decode(&r.encode()), Some(r.clone()));
        assert!(r.dumper_alive());
        assert!(unlock("bad tag").is_err());
    }
}
