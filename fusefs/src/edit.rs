//! Parsing and applying edits written to the text files of an image (pure).
//!
//! Every parser validates the whole text first and only then changes the
//! model, so a rejected edit leaves the image untouched. The grammars are
//! documented in spec/fusefs.md.

use crate::render;
use crate::tree::{Node, ProcFile, TaskFile};
use ckpt_image::signal;
use ckpt_image::{FileKind, Image, OpenFile, Process, Registers, X8664_GPR_NAMES};

/// Apply the text written to `node` to `img`. Returns a short description
/// of what changed, `Ok(None)` when the text holds no edit at all (e.g. only
/// a truncation), or the reason the edit is rejected.
pub fn apply(node: Node, img: &mut Image, data: &[u8]) -> Result<Option<String>, String> {
    let text = std::str::from_utf8(data).map_err(|_| "the text is not UTF-8".to_string());
    match node {
        Node::ProcFile(_, pid, ProcFile::Regs) => {
            let tid = img
                .process(pid)
                .and_then(|p| p.threads.first())
                .map(|t| t.tid)
                .ok_or("no main thread")?;
            regs(img, pid, tid, text?)
        }
        Node::TaskFile(_, pid, tid, TaskFile::Regs) => regs(img, pid, tid, text?),
        Node::ProcFile(_, pid, ProcFile::Signals) => signals(img, pid, text?),
        Node::ProcFile(_, pid, ProcFile::Cwd) => cwd(img, pid, data),
        Node::Fd(_, pid, fd) => fd_edit(img, pid, fd, text?),
        _ => Err("this file cannot be edited".into()),
    }
}

/// A number: `0x` hex, `0o` octal, `0b` binary, or decimal; a leading `-`
/// gives the two's complement (so `orig_rax -1` works).
pub fn parse_u64(s: &str) -> Result<u64, String> {
    let bad = || format!("bad number '{s}'");
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let body = body.replace('_', "");
    let v = if let Some(h) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        u64::from_str_radix(h, 16)
    } else if let Some(o) = body.strip_prefix("0o") {
        u64::from_str_radix(o, 8)
    } else if let Some(b) = body.strip_prefix("0b") {
        u64::from_str_radix(b, 2)
    } else {
        body.parse::<u64>()
    }
    .map_err(|_| bad())?;
    if body.is_empty() {
        return Err(bad());
    }
    Ok(if neg { v.wrapping_neg() } else { v })
}

/// Lines that carry something: trimmed, without blank lines and `#` comments.
fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

fn regs(img: &mut Image, pid: i32, tid: i32, text: &str) -> Result<Option<String>, String> {
    let mut changes: Vec<(&'static str, u64)> = Vec::new();
    for (n, l) in lines(text) {
        let mut it = l.splitn(2, |c: char| c.is_whitespace() || c == ':' || c == '=');
        let name = it.next().unwrap_or_default();
        let value = it
            .next()
            .map(|v| v.trim_start_matches([':', '=']).trim())
            .unwrap_or_default();
        let Some(&reg) = X8664_GPR_NAMES.iter().find(|r| **r == name) else {
            return Err(format!(
                "line {n}: unknown register '{name}' (known: {})",
                X8664_GPR_NAMES.join(" ")
            ));
        };
        if value.is_empty() {
            return Err(format!("line {n}: no value for {reg}"));
        }
        let v = parse_u64(value).map_err(|e| format!("line {n}: {reg}: {e}"))?;
        changes.push((reg, v));
    }
    if changes.is_empty() {
        return Ok(None);
    }
    let t = img
        .process_mut(pid)
        .and_then(|p| p.threads.iter_mut().find(|t| t.tid == tid))
        .ok_or_else(|| format!("no thread {tid} in pid {pid}"))?;
    let Registers::X8664(x) = &mut t.regs else {
        return Err(format!("thread {tid} has no x86_64 registers"));
    };
    let mut changed = Vec::new();
    for (reg, v) in changes {
        if x.get(reg) != Some(v) {
            x.set(reg, v);
            changed.push(format!("{reg}={v:#x}"));
        }
    }
    Ok(Some(format!(
        "regs of tid {tid}: {}",
        if changed.is_empty() {
            "unchanged".to_string()
        } else {
            changed.join(" ")
        }
    )))
}

enum SigEdit {
    Action {
        signo: i32,
        handler: Option<u64>,
        flags: Option<u64>,
        mask: Option<u64>,
        restorer: Option<u64>,
    },
    Blocked {
        tid: Option<i32>,
        mask: u64,
    },
}

fn signals(img: &mut Image, pid: i32, text: &str) -> Result<Option<String>, String> {
    let edits = parse_signals(text)?;
    if edits.is_empty() {
        return Ok(None);
    }
    let p = img
        .process_mut(pid)
        .ok_or_else(|| format!("no process {pid}"))?;
    // Validate thread ids before changing anything.
    for e in &edits {
        if let SigEdit::Blocked { tid: Some(tid), .. } = e {
            if !p.threads.iter().any(|t| t.tid == *tid) {
                return Err(format!("no thread {tid} in pid {pid}"));
            }
        }
    }
    if p.sigactions.len() < 64 {
        p.sigactions.resize(64, Default::default());
    }
    let changed = apply_signals(p, edits)?;
    Ok(Some(format!(
        "signals of pid {pid}: {}",
        if changed.is_empty() {
            "unchanged".to_string()
        } else {
            changed.join(" ")
        }
    )))
}

/// The edits of a written `signals` file, in order.
fn parse_signals(text: &str) -> Result<Vec<SigEdit>, String> {
    let mut edits = Vec::new();
    for (n, l) in lines(text) {
        let words: Vec<&str> = l.split_whitespace().collect();
        match words[0] {
            "pending" => continue, // read-only, accepted so the file can be written back whole
            "blocked" => {
                let (tid, mask) = match words.len() {
                    2 => (None, words[1]),
                    3 => (
                        Some(
                            words[1]
                                .parse::<i32>()
                                .map_err(|_| format!("line {n}: bad tid '{}'", words[1]))?,
                        ),
                        words[2],
                    ),
                    _ => return Err(format!("line {n}: expected 'blocked [TID] MASK'")),
                };
                let mask = parse_u64(mask).map_err(|e| format!("line {n}: {e}"))?;
                edits.push(SigEdit::Blocked { tid, mask });
            }
            name => edits.push(parse_action(n, name, &words)?),
        }
    }
    Ok(edits)
}

/// A line `NAME [handler H] [flags F] [mask M] [restorer R]` (line `n`).
fn parse_action(n: usize, name: &str, words: &[&str]) -> Result<SigEdit, String> {
    let signo = signal::parse(name)
        .ok_or_else(|| format!("line {n}: unknown signal or keyword '{name}'"))?;
    if words.len() % 2 != 1 || words.len() < 3 {
        return Err(format!(
            "line {n}: expected '{name} [handler H] [flags F] [mask M] [restorer R]'"
        ));
    }
    let (mut handler, mut flags, mut mask, mut restorer) = (None, None, None, None);
    for kv in words[1..].chunks(2) {
        let v = parse_u64(kv[1]).map_err(|e| format!("line {n}: {}: {e}", kv[0]))?;
        match kv[0] {
            "handler" => handler = Some(v),
            "flags" => flags = Some(v),
            "mask" => mask = Some(v),
            "restorer" => restorer = Some(v),
            k => {
                return Err(format!(
                    "line {n}: unknown field '{k}' (handler, flags, mask, restorer)"
                ))
            }
        }
    }
    if (signo == 9 || signo == 19) && handler.is_some_and(|h| h != 0) {
        return Err(format!(
            "line {n}: the action of {} cannot be changed",
            signal::name(signo)
        ));
    }
    Ok(SigEdit::Action {
        signo,
        handler,
        flags,
        mask,
        restorer,
    })
}

/// Apply `edits` to `p`; what changed.
fn apply_signals(p: &mut Process, edits: Vec<SigEdit>) -> Result<Vec<String>, String> {
    let mut changed = Vec::new();
    for e in edits {
        match e {
            SigEdit::Action {
                signo,
                handler,
                flags,
                mask,
                restorer,
            } => {
                let a = &mut p.sigactions[(signo - 1) as usize];
                let before = *a;
                a.handler = handler.unwrap_or(a.handler);
                a.flags = flags.unwrap_or(a.flags);
                a.mask = mask.unwrap_or(a.mask);
                a.restorer = restorer.unwrap_or(a.restorer);
                if *a != before {
                    changed.push(signal::name(signo));
                }
            }
            SigEdit::Blocked { tid, mask } => {
                // SIGKILL and SIGSTOP cannot be blocked.
                let mask = mask & !((1 << 8) | (1 << 18));
                let t = match tid {
                    None => p.threads.first_mut().ok_or("no main thread")?,
                    Some(tid) => p
                        .threads
                        .iter_mut()
                        .find(|t| t.tid == tid)
                        .ok_or("no such thread")?,
                };
                if t.blocked != mask {
                    t.blocked = mask;
                    changed.push(format!("blocked of tid {}", t.tid));
                }
            }
        }
    }
    Ok(changed)
}

fn cwd(img: &mut Image, pid: i32, data: &[u8]) -> Result<Option<String>, String> {
    let path = data.strip_suffix(b"\n").unwrap_or(data);
    if path.is_empty() {
        return Ok(None);
    }
    if path[0] != b'/' {
        return Err("cwd must be an absolute path".into());
    }
    if path.contains(&0) || path.contains(&b'\n') {
        return Err("cwd must be one line without NUL bytes".into());
    }
    let p = img
        .process_mut(pid)
        .ok_or_else(|| format!("no process {pid}"))?;
    p.cwd = path.to_vec();
    Ok(Some(format!(
        "cwd of pid {pid}: {}",
        String::from_utf8_lossy(path)
    )))
}

fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "yes" | "y" | "true" | "1" | "on" => Some(true),
        "no" | "n" | "false" | "0" | "off" => Some(false),
        _ => None,
    }
}

fn fd_edit(img: &mut Image, pid: i32, fd: i32, text: &str) -> Result<Option<String>, String> {
    let p = img
        .process(pid)
        .ok_or_else(|| format!("no process {pid}"))?;
    let entry = *p
        .fds
        .iter()
        .find(|f| f.fd == fd)
        .ok_or_else(|| format!("no fd {fd} in pid {pid}"))?;
    let current = render::fd_text(img, &entry);
    let e = parse_fd_edits(text, &current)?;
    if e.path.is_none() && e.offset.is_none() && e.flags.is_none() && e.cloexec.is_none() {
        return Ok(None);
    }
    let mut changed = Vec::new();
    if let Some(c) = e.cloexec {
        let p = img.process_mut(pid).ok_or("no process")?;
        let f = p.fds.iter_mut().find(|f| f.fd == fd).ok_or("no fd")?;
        if f.cloexec != c {
            f.cloexec = c;
            changed.push(format!("cloexec={}", if c { "yes" } else { "no" }));
        }
    }
    if e.path.is_some() || e.offset.is_some() || e.flags.is_some() {
        let file = img
            .files
            .iter_mut()
            .find(|f| f.id == entry.file)
            .ok_or_else(|| {
                format!(
                    "fd {fd} refers to open file {} which is not in the image",
                    entry.file
                )
            })?;
        edit_open_file(file, e, &mut changed);
    }
    Ok(Some(format!(
        "fd {fd} of pid {pid}: {}",
        if changed.is_empty() {
            "unchanged".to_string()
        } else {
            changed.join(" ")
        }
    )))
}

/// What a written `fds/N` file changes (None: unchanged).
#[derive(Default)]
struct FdEdits {
    path: Option<Vec<u8>>,
    offset: Option<u64>,
    flags: Option<u32>,
    cloexec: Option<bool>,
}

/// The edits of a written `fds/N` file whose text is now `current` (a
/// line as shown now changes nothing).
fn parse_fd_edits(text: &str, current: &str) -> Result<FdEdits, String> {
    let mut edits = FdEdits::default();
    for (n, l) in text.lines().enumerate() {
        let n = n + 1;
        if l.trim().is_empty() || l.starts_with('#') {
            continue;
        }
        // A line as the file shows it now changes nothing (so the file can
        // be written back whole, even where it shows a path lossily or an
        // empty one).
        if current.lines().any(|c| c.trim_end() == l.trim_end()) {
            continue;
        }
        let Some((key, value)) = l.split_once(':') else {
            return Err(format!("line {n}: expected 'key: value'"));
        };
        let key = key.trim();
        // One space after the colon belongs to the syntax; the rest of a
        // path is kept verbatim.
        let raw = value.strip_prefix(' ').unwrap_or(value);
        let value = value.trim();
        match key {
            "path" => {
                if raw.is_empty() {
                    return Err(format!("line {n}: empty path"));
                }
                if !raw.starts_with('/') {
                    return Err(format!("line {n}: the path must be absolute"));
                }
                if raw.contains('\0') {
                    return Err(format!("line {n}: the path has a NUL byte"));
                }
                edits.path = Some(raw.as_bytes().to_vec());
            }
            "offset" => {
                edits.offset = Some(parse_u64(value).map_err(|e| format!("line {n}: offset: {e}"))?)
            }
            "flags" => {
                let v = parse_u64(value).map_err(|e| format!("line {n}: flags: {e}"))?;
                edits.flags = Some(
                    u32::try_from(v)
                        .map_err(|_| format!("line {n}: flags {value} out of range"))?,
                );
            }
            "cloexec" => {
                edits.cloexec = Some(
                    parse_bool(value)
                        .ok_or_else(|| format!("line {n}: cloexec: expected yes or no"))?,
                )
            }
            _ => {
                return Err(format!(
                    "line {n}: '{key}' is read-only (editable: path, offset, flags, cloexec)"
                ));
            }
        }
    }
    Ok(edits)
}

/// Set the path, offset and flags of `e` on `file`, noting what changed.
fn edit_open_file(file: &mut OpenFile, e: FdEdits, changed: &mut Vec<String>) {
    if let Some(pth) = e.path {
        if file.path != pth {
            match &mut file.kind {
                FileKind::Regular(r) => r.file.path = pth.clone(),
                FileKind::Directory(d) => d.path = pth.clone(),
                _ => {}
            }
            changed.push(format!("path={}", String::from_utf8_lossy(&pth)));
            file.path = pth;
        }
    }
    if let Some(o) = e.offset {
        if file.position != o {
            file.position = o;
            changed.push(format!("offset={o}"));
        }
    }
    if let Some(fl) = e.flags {
        if file.flags != fl {
            file.flags = fl;
            changed.push(format!("flags={fl:#o}"));
        }
    }
}

/// The bodies of the `edit` fuzz target (fuzz/) and of the stable
/// mutation test below.
#[doc(hidden)]
pub mod fuzzing {
    use super::apply;
    use crate::render::render;
    use crate::tree::{ImgId, Node, ProcFile, TaskFile};
    use ckpt_image::{FileKind, Image, RegularFile};

    /// The image edits are tried on: the image crate's sample (pid 7) with a
    /// second thread (tid 8) and an fd 1 on a named file.
    pub fn base() -> &'static Image {
        static BASE: std::sync::OnceLock<Image> = std::sync::OnceLock::new();
        BASE.get_or_init(|| {
            let bytes = ckpt_image::fuzzing::sample_image();
            let mut img = ckpt_image::ImageReader::new(bytes)
                .expect("the sample image reads")
                .image()
                .clone();
            let p = &mut img.processes[0];
            let mut t = p.threads[0].clone();
            t.tid = 8;
            p.threads.push(t);
            p.fds.push(ckpt_image::Fd {
                fd: 1,
                cloexec: true,
                file: 2,
            });
            p.cwd = b"/tmp".to_vec();
            let mut rf = RegularFile::default();
            rf.file.path = b"/var/log/x.log".to_vec();
            img.files.push(ckpt_image::OpenFile {
                id: 2,
                flags: 0o2001,
                position: 77,
                path: b"/var/log/x.log".to_vec(),
                kind: FileKind::Regular(rf),
                owner: Default::default(),
            });
            img
        })
    }

    /// The editable files, selected by the first input byte.
    pub const NODES: [Node; 7] = [
        Node::ProcFile(ImgId(0), 7, ProcFile::Regs),
        Node::TaskFile(ImgId(0), 7, 8, TaskFile::Regs),
        Node::ProcFile(ImgId(0), 7, ProcFile::Signals),
        Node::Fd(ImgId(0), 7, 0),
        Node::Fd(ImgId(0), 7, 1),
        Node::ProcFile(ImgId(0), 7, ProcFile::Cwd),
        Node::ProcFile(ImgId(0), 7, ProcFile::Maps),
    ];

    /// `data[0]` picks a file, the rest is written to it. Must never panic;
    /// a rejected (or empty) edit leaves the image as it was; an accepted
    /// one leaves an image that still validates and whose re-rendered file,
    /// written back, changes nothing.
    pub fn edit_body(data: &[u8]) {
        let Some((&sel, text)) = data.split_first() else {
            return;
        };
        let node = NODES[sel as usize % NODES.len()];
        let base = base();
        let mut img = base.clone();
        match apply(node, &mut img, text) {
            Err(e) => {
                assert!(!e.is_empty());
                assert!(img == *base, "a rejected edit changed the image: {e}");
            }
            Ok(None) => assert!(img == *base, "an empty edit changed the image"),
            Ok(Some(_)) => {
                if let Err(e) = ckpt_image::validate(&img, u64::MAX) {
                    panic!("an accepted edit left an invalid image: {e}");
                }
                let shown = render(node, &img).expect("an edited file renders");
                let mut again = img.clone();
                match apply(node, &mut again, &shown) {
                    Ok(_) => assert!(again == img, "writing the file back changed the image"),
                    Err(e) => panic!("the file as shown cannot be written back: {e}"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{render, tests::sample};
    use crate::tree::ImgId;

    const I: ImgId = ImgId(0);

    #[test]
    fn numbers() {
        assert_eq!(parse_u64("0x10"), Ok(16));
        assert_eq!(parse_u64("0o17"), Ok(15));
        assert_eq!(parse_u64("42"), Ok(42));
        assert_eq!(parse_u64("-1"), Ok(u64::MAX));
        assert_eq!(parse_u64("0x_ff"), Ok(255));
        assert!(parse_u64("0x").is_err());
        assert!(parse_u64("12a").is_err());
        assert!(parse_u64("").is_err());
        assert!(parse_u64("0x1ffffffffffffffff").is_err());
    }

    fn get(img: &Image, reg: &str) -> u64 {
        let Registers::X8664(x) = &img.processes[0].threads[0].regs else {
            panic!()
        };
        x.get(reg).unwrap()
    }

    #[test]
    fn regs_lines_and_whole_file() {
        let mut img = sample();
        let node = Node::ProcFile(I, 100, ProcFile::Regs);
        assert!(apply(node, &mut img, b"rax 5\nrip 0x401010\n")
            .unwrap()
            .is_some());
        assert_eq!(get(&img, "rax"), 5);
        assert_eq!(get(&img, "rip"), 0x401010);
        // Writing the rendered file back is a no-op.
        let before = img.clone();
        let whole = render(node, &img).unwrap();
        apply(node, &mut img, &whole).unwrap();
        assert_eq!(img, before);
        // A whole file with one change.
        let edited = String::from_utf8(whole)
            .unwrap()
            .replace("rbx 0x0000000000000000", "rbx 0x77");
        apply(node, &mut img, edited.as_bytes()).unwrap();
        assert_eq!(get(&img, "rbx"), 0x77);
        assert_eq!(apply(node, &mut img, b"").unwrap(), None);
        assert_eq!(apply(node, &mut img, b"\n\n").unwrap(), None);
        apply(
            Node::TaskFile(I, 100, 100, TaskFile::Regs),
            &mut img,
            b"r12=-2",
        )
        .unwrap();
        assert_eq!(get(&img, "r12"), u64::MAX - 1);
    }

    #[test]
    fn bad_regs_change_nothing() {
        let mut img = sample();
        let before = img.clone();
        let node = Node::ProcFile(I, 100, ProcFile::Regs);
        let e = apply(node, &mut img, b"rax 5\nfoo 1\n").unwrap_err();
        assert!(e.contains("unknown register 'foo'"), "{e}");
        assert!(apply(node, &mut img, b"rax 5\nrbx 0xzz\n")
            .unwrap_err()
            .contains("bad number"));
        assert!(apply(node, &mut img, b"rax\n")
            .unwrap_err()
            .contains("no value"));
        assert!(apply(node, &mut img, b"rax 1 2\n").is_err());
        assert!(apply(
            Node::TaskFile(I, 100, 555, TaskFile::Regs),
            &mut img,
            b"rax 1"
        )
        .is_err());
        assert_eq!(img, before);
    }

    #[test]
    fn signals_grammar() {
        let mut img = sample();
        let node = Node::ProcFile(I, 100, ProcFile::Signals);
        let before = img.clone();
        let whole = render(node, &img).unwrap();
        apply(node, &mut img, &whole).unwrap();
        assert_eq!(img, before);
        apply(
            node,
            &mut img,
            b"SIGUSR2 handler 0x1 flags 0x4\nusr1 mask 0x400\nblocked 0x2\n",
        )
        .unwrap();
        let p = &img.processes[0];
        assert_eq!(p.sigactions[11].handler, 1);
        assert_eq!(p.sigactions[11].flags, 4);
        assert_eq!(p.sigactions[9].mask, 0x400);
        assert_eq!(p.sigactions[9].handler, 0x401234);
        assert_eq!(p.threads[0].blocked, 2);
        apply(node, &mut img, b"blocked 100 0xffffffffffffffff").unwrap();
        assert_eq!(
            img.processes[0].threads[0].blocked,
            !((1u64 << 8) | (1 << 18))
        );
        let before = img.clone();
        for bad in [
            &b"SIGFOO handler 0"[..],
            b"SIGUSR1 handler",
            b"SIGUSR1 color 3",
            b"SIGKILL handler 0x1234",
            b"blocked 999 0x1",
            b"blocked",
            b"SIGUSR1 handler 0x1\nSIGUSR2 mask zz",
        ] {
            assert!(
                apply(node, &mut img, bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(img, before);
    }

    #[test]
    fn fd_and_cwd() {
        let mut img = sample();
        let node = Node::Fd(I, 100, 1);
        let before = img.clone();
        let whole = render(node, &img).unwrap();
        apply(node, &mut img, &whole).unwrap();
        assert_eq!(img, before);
        apply(
            node,
            &mut img,
            b"offset: 7\npath: /tmp/other file\nflags: 0o2\ncloexec: yes\n",
        )
        .unwrap();
        assert_eq!(img.files[0].position, 7);
        assert_eq!(img.files[0].path, b"/tmp/other file");
        assert_eq!(img.files[0].flags, 2);
        assert!(img.processes[0].fds[0].cloexec);
        let before = img.clone();
        assert!(apply(node, &mut img, b"kind: pipe\n")
            .unwrap_err()
            .contains("read-only"));
        assert!(apply(node, &mut img, b"offset: x\n").is_err());
        assert!(apply(node, &mut img, b"garbage\n").is_err());
        assert!(apply(node, &mut img, b"flags: 0x1ffffffff\n").is_err());
        assert_eq!(img, before);

        let cwd = Node::ProcFile(I, 100, ProcFile::Cwd);
        apply(cwd, &mut img, b"/var/tmp\n").unwrap();
        assert_eq!(img.processes[0].cwd, b"/var/tmp");
        assert!(apply(cwd, &mut img, b"relative\n").is_err());
        assert!(apply(cwd, &mut img, b"/a\n/b\n").is_err());
        assert_eq!(apply(cwd, &mut img, b"").unwrap(), None);
    }

    #[test]
    fn read_only_files_reject_edits() {
        let mut img = sample();
        assert!(apply(Node::ProcFile(I, 100, ProcFile::Maps), &mut img, b"x").is_err());
    }
}

/// Stable-Rust stand-in for the `edit` fuzz target: mutations of the files
/// as rendered and of grammar snippets, for `CKPT_FUZZ_SECS` seconds
/// (default 2). Inputs it once crashed on are kept in `REGRESSIONS`.
#[cfg(test)]
pub(crate) mod mutation_support {
    pub(crate) use super::mutation::{budget, mutate, Rng};
}

#[cfg(test)]
mod mutation {
    use super::fuzzing::{base, edit_body, NODES};
    use crate::render::render;

    /// Inputs fuzzing found bugs with (first byte: the file, see NODES).
    const REGRESSIONS: &[&[u8]] = &[
        // fd 0 of the sample has an empty path: its file as shown could not be written back.
        b"\x03offset: 5\n",
        // A relative path and one with a NUL were accepted.
        b"\x04path: tmp/x\n",
        b"\x04path: /tmp/\x00x\n",
    ];

    pub(crate) struct Rng(pub u64);
    impl Rng {
        pub fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        pub fn below(&mut self, n: usize) -> usize {
            if n == 0 {
                0
            } else {
                (self.next() % n as u64) as usize
            }
        }
    }

    /// Byte-level and token-level mutations.
    pub(crate) fn mutate(rng: &mut Rng, input: &[u8], dict: &[&[u8]]) -> Vec<u8> {
        let mut b = input.to_vec();
        for _ in 0..1 + rng.below(4) {
            if b.is_empty() {
                b.push(b'a');
            }
            let i = rng.below(b.len());
            match rng.below(8) {
                0 => b[i] ^= 1 << rng.below(8),
                1 => b[i] = rng.next() as u8,
                2 => {
                    let n = rng.below(b.len() - i + 1);
                    b.drain(i..i + n.min(b.len() - i));
                }
                3 => {
                    let t = dict[rng.below(dict.len())];
                    b.splice(i..i, t.iter().copied());
                }
                4 => {
                    // replace a token (up to the next space or newline)
                    let end = b[i..]
                        .iter()
                        .position(|&c| c == b' ' || c == b'\n')
                        .map_or(b.len(), |p| i + p);
                    let t = dict[rng.below(dict.len())];
                    b.splice(i..end, t.iter().copied());
                }
                5 => {
                    // duplicate a slice
                    let n = rng.below(64).min(b.len() - i);
                    let s: Vec<u8> = b[i..i + n].to_vec();
                    let j = rng.below(b.len() + 1);
                    b.splice(j..j, s);
                }
                6 => b.truncate(i),
                _ => {
                    let digits = format!("{}", rng.next() >> rng.below(64));
                    b.splice(i..i, digits.bytes());
                }
            }
        }
        b
    }

    pub(crate) fn budget() -> std::time::Duration {
        let secs = std::env::var("CKPT_FUZZ_SECS")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(2.0);
        std::time::Duration::from_secs_f64(secs)
    }

    const DICT: &[&[u8]] = &[
        b" ",
        b"\n",
        b":",
        b"=",
        b"-",
        b"#",
        b"0x",
        b"0o",
        b"0b",
        b"_",
        b"-1",
        b"18446744073709551615",
        b"18446744073709551616",
        b"4294967296",
        b"2147483648",
        b"rax",
        b"rip",
        b"orig_rax",
        b"fs_base",
        b"eflags",
        b"blocked",
        b"pending",
        b"handler",
        b"flags",
        b"mask",
        b"restorer",
        b"SIGKILL",
        b"SIGSTOP",
        b"SIGRTMAX",
        b"64",
        b"65",
        b"0",
        b"9",
        b"19",
        b"kill",
        b"usr1",
        b"path: ",
        b"offset: ",
        b"flags: ",
        b"cloexec: ",
        b"yes",
        b"no",
        b"kind: pipe",
        b"/",
        b"/..",
        b"\x00",
        b"\xc3\xa9",
        b"\xff",
        b"\r",
        b"\t",
        b"8",
        b"7",
        b"9999",
    ];

    #[test]
    fn edit_parsers_under_mutation() {
        for r in REGRESSIONS {
            edit_body(r);
        }
        let mut seeds: Vec<Vec<u8>> = Vec::new();
        for (i, node) in NODES.iter().enumerate() {
            let mut s = vec![i as u8];
            s.extend(render(*node, base()).unwrap_or_default());
            seeds.push(s);
        }
        for snippet in [
            &b"\x00rax 5\nrip 0x401010\n"[..],
            b"\x01r12=-2\n",
            b"\x02SIGUSR2 handler 0x1 flags 0x4\nusr1 mask 0x400\nblocked 0x2\nblocked 8 0x3\n",
            b"\x04offset: 7\npath: /tmp/other file\nflags: 0o2\ncloexec: yes\n",
            b"\x05/var/tmp\n",
        ] {
            seeds.push(snippet.to_vec());
        }
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        let t = std::time::Instant::now();
        let mut n = 0u64;
        while t.elapsed() < budget() {
            let seed = &seeds[rng.below(seeds.len())];
            let input = mutate(&mut rng, seed, DICT);
            edit_body(&input);
            n += 1;
        }
        eprintln!(
            "edit_parsers_under_mutation: {n} inputs in {:?}",
            t.elapsed()
        );
    }
}
