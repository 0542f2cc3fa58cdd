//! The human-readable text of `ckpt show`.

use crate::model::*;
use std::fmt::Write;

/// Bytes as text: valid UTF-8 as is, control characters and invalid bytes
/// escaped (`\n`, `\x00`, `\xff`).
pub fn bytes_str(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
                c => out.push(c),
            }
        }
        for x in chunk.invalid() {
            out.push_str(&format!("\\x{x:02x}"));
        }
    }
    out
}

/// Time in ns since the epoch as UTC ISO-8601 (`2024-01-02T03:04:05.123456789Z`).
pub fn iso8601_utc(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let frac = ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (hh, mm, ss) = (tod / 3600, (tod / 60) % 60, tod % 60);
    if frac == 0 {
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
    } else {
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{frac:09}Z")
    }
}

/// Human-readable size: "12.3 MiB".
pub fn human_bytes(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// Saved and stored bytes of a process's memory: (bytes in Data runs, bytes
/// in Zero runs, stored bytes of the frames its runs use, prorated).
pub fn memory_sizes(image: &Image, p: &Process) -> (u64, u64, u64) {
    let ps = u64::from(image.host.page_size);
    let (mut data, mut zero, mut stored) = (0u64, 0u64, 0f64);
    for r in &p.memory {
        let n = u64::from(r.pages).saturating_mul(ps);
        match r.kind {
            RunKind::Zero => zero = zero.saturating_add(n),
            RunKind::Guard | RunKind::Parent => {}
            RunKind::Data => {
                data = data.saturating_add(n);
                if let Some(f) = image.frames.get(r.frame as usize) {
                    if f.size > 0 {
                        stored += n as f64 * f64::from(f.stored_size) / f64::from(f.size);
                    }
                }
            }
        }
    }
    (data, zero, stored as u64)
}

/// What `ckpt show` knows about the file an image was read from, beyond
/// its metadata.
#[derive(Clone, Copy, Debug)]
pub struct FileFacts {
    /// (major, minor) of the file header.
    pub header_version: (u16, u16),
    /// How the file's bytes are used.
    pub usage: crate::compact::Usage,
}

/// The format version to report: the header's major, and the greater of
/// the header's minor and `Image.formatMinor` (spec/format.md section 10).
pub fn reported_version(image: &Image, header: (u16, u16)) -> (u16, u16) {
    (header.0, header.1.max(image.format_minor))
}

/// The [`FileFacts`] of an image read from a file (or any source).
pub fn file_facts<R: crate::ReadAt>(r: &crate::ImageReader<R>) -> crate::Result<FileFacts> {
    Ok(FileFacts {
        header_version: r.format_version(),
        usage: crate::compact::usage(r)?,
    })
}

/// A readable multi-line summary of an image (its metadata only).
pub fn render(image: &Image) -> String {
    render_with(image, None)
}

/// [`render`] of an image read from a file: the reported version, and how
/// much of the file is dead space.
pub fn render_file(image: &Image, facts: &FileFacts) -> String {
    render_with(image, Some(facts))
}

fn render_with(image: &Image, facts: Option<&FileFacts>) -> String {
    let mut s = header(image, facts);
    for p in &image.processes {
        process(&mut s, image, p);
    }
    s
}

/// The lines about the image as a whole.
fn header(image: &Image, facts: Option<&FileFacts>) -> String {
    let mut s = String::new();
    let h = &image.host;
    let (major, minor) = match facts {
        Some(f) => reported_version(image, f.header_version),
        None => (image.format_major, image.format_minor),
    };
    let _ = writeln!(
        s,
        "ckpt image, format {major}.{minor}, generation {}",
        image.generation
    );
    if let Some(f) = facts {
        let u = &f.usage;
        let _ = write!(s, "  file:      {}", human_bytes(u.file_len));
        if u.dead() == 0 {
            let _ = writeln!(s, ", no dead space");
        } else {
            let _ = writeln!(
                s,
                ", of which {} ({:.0}%) dead space from earlier generations (`ckpt compact` removes it)",
                human_bytes(u.dead()),
                u.dead() as f64 * 100.0 / u.file_len.max(1) as f64
            );
        }
    }
    let _ = writeln!(s, "  tool:      {}", image.tool_version);
    let _ = writeln!(s, "  created:   {}", iso8601_utc(image.created_ns));
    let _ = writeln!(s, "  frozen:    {:.3} ms", image.freeze_ns as f64 / 1e6);
    let _ = writeln!(s, "  host:      {} ({:?})", h.hostname, h.arch);
    let _ = writeln!(s, "  kernel:    {}", h.kernel_release);
    let _ = writeln!(
        s,
        "  cpu:       {} {} (family {} model {} stepping {}), xcr0 {:#x}, xsave {} bytes",
        h.cpu.vendor,
        h.cpu.model_name,
        h.cpu.family,
        h.cpu.model,
        h.cpu.stepping,
        h.cpu.xcr0,
        h.cpu.xsave_size
    );
    let _ = writeln!(s, "  page size: {}", h.page_size);
    let stored: u64 = image.frames.iter().map(|f| u64::from(f.stored_size)).sum();
    let size: u64 = image.frames.iter().map(|f| u64::from(f.size)).sum();
    let _ = writeln!(
        s,
        "  frames:    {} ({} decoded, {} stored)",
        image.frames.len(),
        human_bytes(size),
        human_bytes(stored)
    );
    let _ = writeln!(s, "  root pid:  {}", image.root_pid);
    if !image.image_id.is_empty() {
        let _ = writeln!(s, "  image id:  {}", crate::chain::id_hex(&image.image_id));
    }
    if !image.parent.image_id.is_empty() {
        let _ = writeln!(
            s,
            "  parent:    {} (at {}, created {}): incremental",
            crate::chain::id_hex(&image.parent.image_id),
            bytes_str(&image.parent.path),
            iso8601_utc(image.parent.created_ns)
        );
    }
    for n in &image.notes {
        let _ = writeln!(s, "  note:      {} = {}", n.key, n.value);
    }
    s
}

/// The lines about one process.
fn process(s: &mut String, image: &Image, p: &Process) {
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "process {} (ppid {}, pgid {}, sid {}) \"{}\" state {}",
        p.pid,
        p.ppid,
        p.pgid,
        p.sid,
        bytes_str(&p.comm),
        p.state
    );
    let _ = writeln!(
        s,
        "  exe:     {}{}",
        bytes_str(&p.exe.path),
        if p.exe.deleted { " (deleted)" } else { "" }
    );
    let argv: Vec<String> = p
        .cmdline
        .iter()
        .map(|a| {
            let t = bytes_str(a);
            if t.is_empty() || t.contains([' ', '\'', '"']) {
                format!("'{}'", t.replace('\'', "\\'"))
            } else {
                t
            }
        })
        .collect();
    let _ = writeln!(s, "  cmdline: {}", argv.join(" "));
    let _ = writeln!(s, "  cwd:     {}", bytes_str(&p.cwd));
    let _ = writeln!(
        s,
        "  creds:   uid {}/{} gid {}/{}",
        p.creds.ruid, p.creds.euid, p.creds.rgid, p.creds.egid
    );
    threads(s, p);
    memory(s, image, p);
    fds(s, image, p);
    signals(s, p);
}

/// The threads of `p`, with their registers and pending signals.
fn threads(s: &mut String, p: &Process) {
    let _ = writeln!(s, "  threads: {}", p.threads.len());
    for t in &p.threads {
        let (rip, rsp) = match &t.regs {
            Registers::X8664(r) => (format!("{:#018x}", r.rip), format!("{:#018x}", r.rsp)),
            Registers::None => ("-".into(), "-".into()),
        };
        let _ = writeln!(
            s,
            "    tid {:<8} {:<16} state {} rip {} rsp {}",
            t.tid,
            format!("\"{}\"", bytes_str(&t.comm)),
            t.state,
            rip,
            rsp
        );
        for si in &t.pending {
            let _ = writeln!(
                s,
                "      pending {} (code {})",
                crate::signal::name(si.signo),
                si.code
            );
        }
    }
}

/// The memory line of `p`: mappings, runs, sizes.
fn memory(s: &mut String, image: &Image, p: &Process) {
    let (data, zero, stored) = memory_sizes(image, p);
    let vm: u64 = p.vmas.iter().map(|v| v.end.saturating_sub(v.start)).sum();
    let in_parent: u64 = p
        .memory
        .iter()
        .filter(|r| r.kind == RunKind::Parent)
        .map(|r| u64::from(r.pages).saturating_mul(u64::from(image.host.page_size)))
        .sum();
    let _ = writeln!(
        s,
        "  memory:  {} vmas ({} mapped), {} runs, {} saved + {} zero, {} stored{}",
        p.vmas.len(),
        human_bytes(vm),
        p.memory.len(),
        human_bytes(data),
        human_bytes(zero),
        human_bytes(stored),
        if in_parent > 0 {
            format!(", {} in the parent image", human_bytes(in_parent))
        } else {
            String::new()
        }
    );
}

/// The fds of `p`, one line each.
fn fds(s: &mut String, image: &Image, p: &Process) {
    let _ = writeln!(s, "  fds:     {}", p.fds.len());
    for fd in &p.fds {
        match image.file(fd.file) {
            Some(f) => {
                let what = match &f.kind {
                    crate::FileKind::InetSocket(n) => n.summary(),
                    crate::FileKind::NetlinkSocket(n) => format!(
                        "protocol {}, port id {}, groups {:?}",
                        n.protocol, n.port_id, n.groups
                    ),
                    crate::FileKind::UnixSocket(u) if !u.local_path.is_empty() => format!(
                        "{}{}",
                        bytes_str(&u.local_path).replace('\0', "@"),
                        if u.listening { " (listening)" } else { "" }
                    ),
                    crate::FileKind::Tty(t) if t.pair != 0 => {
                        format!("{} (pty {} of the image)", bytes_str(&f.path), t.index)
                    }
                    _ => bytes_str(&f.path),
                };
                let _ = writeln!(
                    s,
                    "    {:>4}  {:<12} {}  offset {}{}",
                    fd.fd,
                    f.kind.name(),
                    what,
                    f.position,
                    if fd.cloexec { "  cloexec" } else { "" }
                );
            }
            None => {
                let _ = writeln!(s, "    {:>4}  <unknown file id {}>", fd.fd, fd.file);
            }
        }
    }
}

/// The signal handlers of `p` and its process-wide pending signals.
fn signals(s: &mut String, p: &Process) {
    let handled: Vec<String> = p
        .sigactions
        .iter()
        .enumerate()
        .filter(|(_, a)| a.handler != 0)
        .map(|(i, a)| {
            let signo = i as i32 + 1;
            match a.handler {
                1 => format!("{} ignored", crate::signal::name(signo)),
                h => format!("{} handler {h:#x}", crate::signal::name(signo)),
            }
        })
        .collect();
    let _ = writeln!(
        s,
        "  signals:{}",
        if handled.is_empty() {
            " all default"
        } else {
            ""
        }
    );
    for h in handled {
        let _ = writeln!(s, "    {h}");
    }
    for si in &p.shared_pending {
        let _ = writeln!(
            s,
            "    pending {} (code {}, process-wide)",
            crate::signal::name(si.signo),
            si.code
        );
    }
}

/// [`render`] of the image of `r`, then [`chain_lines`].
pub fn render_reader<R: crate::ReadAt>(r: &crate::ImageReader<R>) -> String {
    let mut s = render(r.image());
    s.push_str(&chain_lines(r));
    s
}

/// For an incremental image, its chain of parents: each image found (its
/// path is not known here: its id and creation time), or why the chain
/// stops. Empty for a full image.
pub fn chain_lines<R: crate::ReadAt>(r: &crate::ImageReader<R>) -> String {
    let mut s = String::new();
    if r.image().parent.image_id.is_empty() {
        return s;
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "chain: {} image{} found{}",
        r.ancestors().len() + 1,
        if r.ancestors().is_empty() { "" } else { "s" },
        if r.chain_error().is_none() {
            " (complete)"
        } else {
            ""
        }
    );
    for (i, a) in r.ancestors().iter().enumerate() {
        let img = a.image();
        let ps = u64::from(img.host.page_size);
        let data: u64 = img
            .processes
            .iter()
            .flat_map(|p| &p.memory)
            .filter(|m| m.kind == RunKind::Data)
            .map(|m| u64::from(m.pages).saturating_mul(ps))
            .sum();
        let _ = writeln!(
            s,
            "  {}: image {} created {}, {} saved{}",
            i + 1,
            crate::chain::id_hex(&img.image_id),
            iso8601_utc(img.created_ns),
            human_bytes(data),
            if img.parent.image_id.is_empty() {
                " (full dump)"
            } else {
                " (incremental)"
            }
        );
    }
    if let Some(e) = r.chain_error() {
        let _ = writeln!(s, "  incomplete: {e}");
    }
    s
}
