#!/usr/bin/env python3
"""ckpt_read.py: read a ckpt image without ckpt.

Written only from schema/ckpt.capnp (the metadata) and the container byte
layout (spec/format.md; first written from its draft), as a check that
the format can be read from another language, and as an example.

    python3 examples/python/ckpt_read.py IMAGE
    python3 examples/python/ckpt_read.py IMAGE --page 0x7ffd12345000 [--pid PID]

Needs pycapnp (and zstandard / lz4 for zstd- / LZ4-compressed page frames).
Exit status: 0 ok, 1 bad or unreadable image, 2 unsupported format major
version or bad usage.
"""

import argparse
import os
import shlex
import struct
import sys
import time
import zlib

SUPPORTED_MAJOR = 1

FILE_MAGIC = b"CKPTIMG\0"
RECORD_MAGIC = b"CKRC"
COMMIT_MAGIC = b"CKPTEND\0"
KIND_FRAME, KIND_METADATA, KIND_COMMIT = 1, 2, 3
KIND_NAMES = {KIND_FRAME: "page frame", KIND_METADATA: "metadata", KIND_COMMIT: "commit"}

# header: magic, major, minor, flags, reserved[12], crc (of bytes 0..28)
HEADER = struct.Struct("<8sHHI12sI")
# record header: magic, kind, payload length, payload crc, header crc (of bytes 0..20)
RECORD = struct.Struct("<4sIQII")
# commit payload: metadata record offset, metadata length, generation, end offset, magic
COMMIT = struct.Struct("<QQQQ8s")
assert HEADER.size == 32 and RECORD.size == 24 and COMMIT.size == 40

MAX_FRAME = 64 << 20

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SCHEMA = os.path.join(HERE, "..", "..", "schema", "ckpt.capnp")


class ImageError(Exception):
    """The image is damaged or not an image: exit 1."""
    exit_code = 1


class UsageError(ImageError):
    exit_code = 2


class UnsupportedVersion(ImageError):
    exit_code = 2


def crc32(data):
    return zlib.crc32(data) & 0xFFFFFFFF


def align8(n):
    return (n + 7) & ~7


# ---------------------------------------------------------------------------
# Container
# ---------------------------------------------------------------------------

class Container:
    """The byte layout: header, records, the last valid commit."""

    def __init__(self, path):
        self.path = path
        try:
            self.f = open(path, "rb")
            self.size = os.fstat(self.f.fileno()).st_size
        except OSError as e:
            raise ImageError("cannot open %s: %s" % (path, e.strerror or e))
        self.commit_path = None     # "fast path" or "scan"
        self.commits_seen = 0
        self._read_header()
        self._find_commit()
        self._read_metadata()

    def read_at(self, off, n):
        self.f.seek(off)
        data = self.f.read(n)
        if len(data) != n:
            raise ImageError("unexpected end of file: wanted %d bytes at offset %d, file is %d bytes"
                             % (n, off, self.size))
        return data

    def _read_header(self):
        if self.size < HEADER.size:
            raise ImageError("not a ckpt image: %d bytes is too short for the 32-byte header" % self.size)
        raw = self.read_at(0, HEADER.size)
        magic, major, minor, flags, _reserved, crc = HEADER.unpack(raw)
        if magic != FILE_MAGIC:
            raise ImageError("not a ckpt image: bad magic %r (expected %r)" % (magic, FILE_MAGIC))
        # The version is checked before the CRC: a later major version may
        # lay out (and checksum) the rest of its header differently.
        if major != SUPPORTED_MAJOR:
            raise UnsupportedVersion(
                "unsupported image format version %d.%d: this reader supports format major "
                "version %d only" % (major, minor, SUPPORTED_MAJOR))
        want = crc32(raw[:28])
        if crc != want:
            raise ImageError("file header CRC mismatch: stored 0x%08x, computed 0x%08x" % (crc, want))
        self.major, self.minor, self.flags = major, minor, flags

    def record_header(self, off):
        """The record header at off, or None if there is no valid one there."""
        if off + RECORD.size > self.size:
            return None
        raw = self.read_at(off, RECORD.size)
        magic, kind, length, pcrc, hcrc = RECORD.unpack(raw)
        if magic != RECORD_MAGIC or hcrc != crc32(raw[:20]):
            return None
        return kind, length, pcrc

    def _commit_at(self, off):
        """A valid commit record at off -> (meta_off, meta_len, generation, end), else None."""
        h = self.record_header(off)
        if h is None:
            return None
        kind, length, pcrc = h
        if kind != KIND_COMMIT or length != COMMIT.size or off + RECORD.size + length > self.size:
            return None
        payload = self.read_at(off + RECORD.size, COMMIT.size)
        if crc32(payload) != pcrc:
            return None
        meta_off, meta_len, gen, end, magic = COMMIT.unpack(payload)
        if magic != COMMIT_MAGIC or end != off + RECORD.size + COMMIT.size:
            return None
        return meta_off, meta_len, gen, end

    def _find_commit(self):
        # Fast path: the file ends with a valid commit whose end offset is the file length.
        tail = self.size - (RECORD.size + COMMIT.size)
        if tail >= HEADER.size and tail % 8 == 0:
            c = self._commit_at(tail)
            if c is not None and c[3] == self.size:
                self.commit, self.commit_offset, self.commit_path = c, tail, "fast path"
                return
        # Slow path (torn append): walk the records, keep the last valid commit.
        off, last, last_off = HEADER.size, None, None
        self.records_scanned = 0
        while True:
            h = self.record_header(off)
            if h is None:
                break
            kind, length, _ = h
            end = off + RECORD.size + length
            if end > self.size:
                break
            self.records_scanned += 1
            if kind == KIND_COMMIT:
                c = self._commit_at(off)
                if c is None:
                    break
                self.commits_seen += 1
                last, last_off = c, off
            off = align8(end)
        if last is None:
            raise ImageError("no complete commit in the image (truncated or damaged; %d bytes, "
                             "%d valid records before the damage)" % (self.size, self.records_scanned))
        self.commit, self.commit_offset, self.commit_path = last, last_off, "scan"

    def _read_metadata(self):
        meta_off, meta_len, _gen, _end = self.commit
        h = self.record_header(meta_off) if meta_off >= HEADER.size and meta_off % 8 == 0 else None
        if h is None:
            raise ImageError("commit at offset %d points at offset %d, where there is no valid record"
                             % (self.commit_offset, meta_off))
        kind, length, pcrc = h
        if kind != KIND_METADATA:
            raise ImageError("commit points at a %s record, not metadata"
                             % KIND_NAMES.get(kind, "kind %d" % kind))
        if length != meta_len:
            raise ImageError("metadata record holds %d bytes, the commit says %d" % (length, meta_len))
        if meta_off + RECORD.size + length > self.commit_offset:
            raise ImageError("metadata record overlaps its commit")
        payload = self.read_at(meta_off + RECORD.size, length)
        want = crc32(payload)
        if want != pcrc:
            raise ImageError("metadata CRC mismatch: stored 0x%08x, computed 0x%08x" % (pcrc, want))
        check_one_message(payload)
        self.metadata_offset = meta_off
        self.metadata = payload

    def frame_bytes(self, index, frame):
        """The decoded bytes of Image.frames[index], checked against both CRCs."""
        rec = frame.offset - RECORD.size
        h = self.record_header(rec) if rec >= HEADER.size else None
        if h is None:
            raise ImageError("frame %d: no valid record header before offset %d" % (index, frame.offset))
        kind, length, pcrc = h
        if kind != KIND_FRAME:
            raise ImageError("frame %d: offset %d is in a %s record" % (index, frame.offset,
                             KIND_NAMES.get(kind, "kind %d" % kind)))
        if length != frame.storedSize:
            raise ImageError("frame %d: record holds %d bytes, metadata says %d"
                             % (index, length, frame.storedSize))
        stored = self.read_at(frame.offset, length)
        got = crc32(stored)
        if got != pcrc or got != frame.crc32:
            raise ImageError("frame %d: CRC mismatch (record 0x%08x, metadata 0x%08x, computed 0x%08x)"
                             % (index, pcrc, frame.crc32, got))
        codec = str(frame.codec)
        if codec == "none":
            data = stored
        elif codec == "zstd":
            try:
                import zstandard
            except ImportError:
                raise ImageError("frame %d is zstd-compressed: the python module 'zstandard' is needed "
                                 "(pip install zstandard)" % index)
            try:
                data = zstandard.ZstdDecompressor().decompress(stored, max_output_size=frame.size)
            except zstandard.ZstdError as e:
                raise ImageError("frame %d: zstd: %s" % (index, e))
        elif codec == "lz4":
            try:
                import lz4.block
            except ImportError:
                raise ImageError("frame %d is LZ4-compressed: the python module 'lz4' is needed "
                                 "(pip install lz4)" % index)
            try:
                data = lz4.block.decompress(stored, uncompressed_size=frame.size)
            except lz4.block.LZ4BlockError as e:
                raise ImageError("frame %d: lz4: %s" % (index, e))
        else:
            raise ImageError("frame %d: unknown codec %s" % (index, codec))
        if len(data) != frame.size:
            raise ImageError("frame %d: decodes to %d bytes, metadata says %d" % (index, len(data), frame.size))
        return data


def check_one_message(payload):
    """The metadata payload is exactly one message: whole words, and as long
    as its segment table says (spec/format.md section 3)."""
    if len(payload) % 8:
        raise ImageError("the metadata payload is %d bytes, not a whole number of 8-byte words"
                         % len(payload))
    if len(payload) < 8:
        raise ImageError("the metadata payload is empty")
    count = struct.unpack_from("<I", payload, 0)[0] + 1
    header_words = count // 2 + 1
    if count > 512 or header_words * 8 > len(payload):
        raise ImageError("the metadata message's segment table (%d segments) does not fit" % count)
    sizes = struct.unpack_from("<%dI" % count, payload, 4)
    words = header_words + sum(sizes)
    if words * 8 < len(payload):
        raise ImageError("%d bytes follow the metadata message in its record" % (len(payload) - words * 8))
    if words * 8 > len(payload):
        raise ImageError("the metadata message needs %d bytes, its record holds %d"
                         % (words * 8, len(payload)))


# ---------------------------------------------------------------------------
# Metadata
# ---------------------------------------------------------------------------

def load_schema(path):
    if not os.path.isfile(path):
        raise UsageError("schema not found: %s (give it with --schema)" % path)
    try:
        import capnp
    except ImportError:
        raise ImageError("the python module 'capnp' is needed: pip install pycapnp")
    # ckpt.capnp imports /capnp/c++.capnp: pycapnp ships one, libcapnp-dev another.
    # (pycapnp aborts the process when an import is missing, so look first.)
    candidates = [os.path.dirname(os.path.dirname(os.path.abspath(capnp.__file__))),
                  "/usr/include", "/usr/local/include"]
    imports = [d for d in candidates if os.path.isfile(os.path.join(d, "capnp", "c++.capnp"))]
    if not imports:
        raise ImageError("cannot find capnp/c++.capnp (install libcapnp-dev)")
    try:
        return capnp, capnp.load(os.path.abspath(path), imports=imports)
    except Exception as e:
        raise UsageError("cannot load schema %s: %s" % (path, first_line(e)))


def first_line(e):
    s = str(e).strip()
    return s.splitlines()[0] if s else e.__class__.__name__


def text(b):
    """Data (arbitrary bytes from the kernel) for display."""
    if isinstance(b, str):
        return b
    return bytes(b).decode("utf-8", "backslashreplace")


def dev_str(dev):
    """Linux dev_t encoding -> 'MM:mm' as in /proc/PID/maps."""
    major = ((dev >> 8) & 0xFFF) | ((dev >> 32) & ~0xFFF)
    minor = (dev & 0xFF) | ((dev >> 12) & ~0xFF)
    return "%02x:%02x" % (major, minor)


def fmt_time(ns):
    if not ns:
        return "0"
    secs = ns / 1e9
    return "%s.%09d UTC" % (time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(int(secs))), ns % 1000000000)


REG_ROWS = [
    ["rip", "rsp", "rbp", "eflags"],
    ["rax", "rbx", "rcx", "rdx"],
    ["rsi", "rdi", "r8", "r9"],
    ["r10", "r11", "r12", "r13"],
    ["r14", "r15", "origRax", "fsBase"],
    ["gsBase", "cs", "ss", "ds"],
    ["es", "fs", "gs"],
]
REG_NAMES = {"origRax": "orig_rax", "fsBase": "fs_base", "gsBase": "gs_base"}


class Reader:
    def __init__(self, container, schema_path, out):
        self.c = container
        self.out = out
        self.capnp, self.schema = load_schema(schema_path)
        self._contexts = []
        self.img = self.walk()
        self.frames = list(self.img.frames)
        self.page_size = self.img.host.pageSize
        self._frame_cache = {}
        self.validate()

    def walk(self):
        """A fresh reader of the metadata for one walk of it.

        The traversal limit of spec/format.md section 9 (4 x words + 1024) is
        a budget for one walk: pycapnp charges every list or struct each time
        it is read. This reader walks the message a few times (checks, the
        summary, a page), each with a reader of its own."""
        words = len(self.c.metadata) // 8
        ctx = self.schema.Image.from_bytes(
            self.c.metadata,
            traversal_limit_in_words=4 * words + 1024,
            nesting_limit=64)
        try:
            img = ctx.__enter__()
        except Exception as e:
            raise ImageError("cannot decode the metadata message: %s" % first_line(e))
        self._contexts.append(ctx)
        return img

    def validate(self):
        """The container-level checks of spec/format.md section 8."""
        img = self.img
        if img.generation != self.c.commit[2]:
            raise ImageError("the commit record says generation %d but its metadata says %d"
                             % (self.c.commit[2], img.generation))
        if img.formatMajor != SUPPORTED_MAJOR:
            raise UnsupportedVersion("the metadata says format %d.%d: this reader supports format "
                                     "major version %d only" % (img.formatMajor, img.formatMinor,
                                                                 SUPPORTED_MAJOR))
        ps = self.page_size
        if ps < 4096 or ps > 65536 or ps & (ps - 1):
            raise ImageError("host.pageSize %d is not a power of two in 4096..65536" % ps)
        end = HEADER.size + RECORD.size
        for i, f in enumerate(self.frames):
            if f.offset < end:
                raise ImageError("frame %d at offset %d is out of file order or overlaps the one before"
                                 % (i, f.offset))
            end = f.offset + f.storedSize
            if end > self.c.metadata_offset:
                raise ImageError("frame %d (offset %d, %d bytes) does not lie before the metadata record"
                                 % (i, f.offset, f.storedSize))
            if f.storedSize > MAX_FRAME or f.size > MAX_FRAME:
                raise ImageError("frame %d is larger than 64 MiB" % i)
            if str(f.codec) == "none" and f.size != f.storedSize:
                raise ImageError("raw frame %d: size %d != storedSize %d" % (i, f.size, f.storedSize))
            end += RECORD.size      # the next frame's payload follows at least a record header
        for p in img.processes:
            self.check_runs(p)

    def p(self, *parts):
        print(*parts, file=self.out)

    def frame(self, i):
        if i >= len(self.frames):
            raise ImageError("memory run refers to frame %d, the image lists %d" % (i, len(self.frames)))
        if i not in self._frame_cache:
            self._frame_cache = {i: self.c.frame_bytes(i, self.frames[i])}
        return self._frame_cache[i]

    def blob(self, b):
        """A Blob: its frames decoded, concatenated, cut to size."""
        out = bytearray()
        last = -1
        for i in b.frames:
            if i <= last:
                raise ImageError("blob frame indices do not strictly increase")
            last = i
            out += self.frame(i)
        if len(out) < b.size:
            raise ImageError("blob of %d bytes: its frames hold only %d" % (b.size, len(out)))
        return bytes(out[:b.size])

    def verify_frames(self):
        for i, fr in enumerate(self.frames):
            self.c.frame_bytes(i, fr)

    def check_runs(self, proc):
        """Runs: page aligned, sorted, not overlapping, inside the vmas, inside their frames."""
        ps = self.page_size
        spans = []                      # the vmas, adjacent ones merged
        for v in proc.vmas:
            if v.start >= v.end or v.start % ps or v.end % ps:
                raise ImageError("pid %d: bad vma 0x%x-0x%x" % (proc.pid, v.start, v.end))
            if spans and v.start < spans[-1][1]:
                raise ImageError("pid %d: vma 0x%x-0x%x overlaps or precedes the one before"
                                 % (proc.pid, v.start, v.end))
            if spans and v.start == spans[-1][1]:
                spans[-1][1] = v.end
            else:
                spans.append([v.start, v.end])
        prev_end = 0
        for run in proc.memory:
            end = run.start + run.pages * ps
            if run.pages == 0 or run.start % ps or run.start < prev_end or end > 1 << 64:
                raise ImageError("pid %d: memory run at 0x%x (%d pages) is empty, unaligned, "
                                 "out of order or overlapping" % (proc.pid, run.start, run.pages))
            prev_end = end
            if not any(a <= run.start and end <= b for a, b in spans):
                raise ImageError("pid %d: memory run 0x%x-0x%x is not inside the vmas"
                                 % (proc.pid, run.start, end))
            if str(run.kind) == "data":
                if run.frame >= len(self.frames):
                    raise ImageError("pid %d: run at 0x%x refers to frame %d of %d"
                                     % (proc.pid, run.start, run.frame, len(self.frames)))
                if run.frameOffset + run.pages * ps > self.frames[run.frame].size:
                    raise ImageError("pid %d: run at 0x%x (%d pages) overruns frame %d"
                                     % (proc.pid, run.start, run.pages, run.frame))

    # -- summary ------------------------------------------------------------

    def print_all(self):
        c, img = self.c, self.walk()
        self.p("image       %s (%d bytes)" % (c.path, c.size))
        # The version to report: the greater minor (spec/format.md section 10).
        self.p("format      %d.%d (header %d.%d, flags 0x%x; metadata written for %d.%d)"
               % (c.major, max(c.minor, img.formatMinor), c.major, c.minor, c.flags,
                  img.formatMajor, img.formatMinor))
        self.p("commit      generation %d at offset %d (%s%s); metadata record at %d, %d bytes"
               % (c.commit[2], c.commit_offset, c.commit_path,
                  ", %d commit(s) seen" % c.commits_seen if c.commit_path == "scan" else "",
                  c.metadata_offset, len(c.metadata)))
        self.p("tool        %s" % img.toolVersion)
        self.p("created     %s" % fmt_time(img.createdNs))
        self.p("generation  %d" % img.generation)
        self.p("root pid    %d" % img.rootPid)
        self.p("frozen for  %.3f ms" % (img.freezeNs / 1e6))
        h = img.host
        self.p("host        %s, kernel %s, %s, page size %d, boot id %s"
               % (h.hostname or "?", h.kernelRelease or "?", h.arch, h.pageSize, h.bootId or "?"))
        cpu = h.cpu
        self.p("cpu         %s %s (family %d model %d stepping %d), xcr0 0x%x, xsave %d bytes, %d flags"
               % (cpu.vendor or "?", cpu.modelName or "?", cpu.family, cpu.model, cpu.stepping,
                  cpu.xcr0, cpu.xsaveSize, len(cpu.flags)))
        stored = sum(f.storedSize for f in self.frames)
        decoded = sum(f.size for f in self.frames)
        codecs = sorted(set(str(f.codec) for f in self.frames))
        self.p("frames      %d, %d bytes stored, %d bytes decoded (%s)"
               % (len(self.frames), stored, decoded, ", ".join(codecs) or "-"))
        for n in img.notes:
            self.p("note        %s = %s" % (n.key, n.value))
        files = {f.id: f for f in img.files}
        for proc in img.processes:
            self.print_process(proc, files)

    def print_process(self, proc, files):
        self.p("")
        self.p("process pid=%d ppid=%d pgid=%d sid=%d state=%s comm=%s"
               % (proc.pid, proc.ppid, proc.pgid, proc.sid, proc.state or "?", text(proc.comm)))
        if proc.exe.path:
            self.p("  exe       %s%s (dev %s inode %d)" % (text(proc.exe.path),
                   " (deleted)" if proc.exe.deleted else "", dev_str(proc.exe.dev), proc.exe.inode))
        self.p("  cmdline   %s" % " ".join(shlex.quote(text(a)) for a in proc.cmdline))
        self.p("  cwd       %s   root %s   umask %04o" % (text(proc.cwd) or "?", text(proc.root) or "?", proc.umask))
        cr = proc.creds
        self.p("  creds     uid %d/%d/%d gid %d/%d/%d"
               % (cr.ruid, cr.euid, cr.suid, cr.rgid, cr.egid, cr.sgid))
        if len(proc.children):
            self.p("  children  %s" % " ".join(str(x) for x in proc.children))
        threads = list(proc.threads)
        self.p("  threads   %d" % len(threads))
        for t in threads:
            self.print_thread(t)
        self.print_maps(proc)
        self.print_fds(proc, files)

    def print_thread(self, t):
        self.p("  thread tid=%d comm=%s state=%s" % (t.tid, text(t.comm), t.state or "?"))
        regs = t.regs
        if regs.which() == "x8664":
            r = regs.x8664
            for row in REG_ROWS:
                self.p("    " + "  ".join("%-8s 0x%016x" % (REG_NAMES.get(n, n) + "=", getattr(r, n))
                                          for n in row))
            self.p("    xsave    %d bytes, xfeatures 0x%x" % (len(r.xsave), r.xfeatures))
        else:
            self.p("    registers: %s" % regs.which())
        a = t.altstack
        self.p("    blocked  0x%016x  pending %d  altstack sp=0x%x size=%d flags=0x%x"
               % (t.blocked, len(t.pending), a.sp, a.size, a.flags))

    def vma_line(self, v):
        perms = ("r" if v.prot & 1 else "-") + ("w" if v.prot & 2 else "-") + \
                ("x" if v.prot & 4 else "-") + ("s" if v.shared else "p")
        off, dev, ino = 0, 0, 0
        b = v.backing
        kind = b.which()
        if kind == "file":
            off, dev, ino = b.file.offset, b.file.file.dev, b.file.file.inode
        elif kind == "sharedMemory":
            off, ino = b.sharedMemory.offset, b.sharedMemory.id
        name = text(v.name)
        if not name and kind == "file":
            name = text(b.file.file.path)
        return "%012x-%012x %s %08x %s %-8d %s" % (v.start, v.end, perms, off, dev_str(dev), ino, name)

    def print_maps(self, proc):
        ps = self.page_size
        vmas = list(proc.vmas)
        runs = list(proc.memory)
        self.p("  memory map (%d vmas; saved = bytes stored in frames, zero = all-zero pages not stored)" % len(vmas))
        covered = 0
        for v in vmas:
            data = zero = other = 0
            for run in runs:
                lo, hi = max(v.start, run.start), min(v.end, run.start + run.pages * ps)
                if lo < hi:
                    kind = str(run.kind)
                    if kind == "data":
                        data += hi - lo
                    elif kind == "zero":
                        zero += hi - lo
                    else:               # guard pages, pages in the parent image (1.2)
                        other += hi - lo
            covered += data + zero + other
            self.p("    %-100s saved %d zero %d" % (self.vma_line(v), data, zero))
        total = sum(r.pages * ps for r in runs)
        data_pages = sum(r.pages for r in runs if str(r.kind) == "data")
        zero_pages = sum(r.pages for r in runs if str(r.kind) == "zero")
        guard_pages = sum(r.pages for r in runs if str(r.kind) == "guard")
        parent_pages = sum(r.pages for r in runs if str(r.kind) == "parent")
        self.p("  memory runs %d: %d data pages (%d bytes), %d zero pages%s%s"
               % (len(runs), data_pages, data_pages * ps, zero_pages,
                  ", %d guard pages" % guard_pages if guard_pages else "",
                  ", %d pages in the parent image" % parent_pages if parent_pages else ""))
        if covered != total:
            self.p("  warning: %d bytes of memory runs lie outside every vma" % (total - covered))

    def print_fds(self, proc, files):
        fds = list(proc.fds)
        if not fds:
            return
        self.p("  fds %d" % len(fds))
        for fd in fds:
            f = files.get(fd.file)
            if f is None:
                self.p("    %3d -> open file %d (missing from Image.files)" % (fd.fd, fd.file))
                continue
            kind = f.kind.which()
            extra = ""
            if kind in ("pipe", "fifo"):
                pk = getattr(f.kind, kind)
                extra = " %s end, %d bytes buffered" % (pk.end, len(pk.data))
            elif kind == "eventfd":
                extra = " count %d" % f.kind.eventfd.count
            elif kind == "regular" and f.kind.regular.hasContents:
                extra = " (contents saved, %d bytes)" % f.kind.regular.contents.size
            self.p("    %3d -> %s  [%s%s, flags 0o%o, pos %d%s]"
                   % (fd.fd, text(f.path), kind, extra, f.flags, f.position,
                      ", cloexec" if fd.cloexec else ""))

    # -- one page -------------------------------------------------------------

    def find_process(self, pid):
        self.img = self.walk()
        procs = list(self.img.processes)
        if not procs:
            raise ImageError("the image holds no process")
        if pid is None:
            for p in procs:
                if p.pid == self.img.rootPid:
                    return p
            return procs[0]
        for p in procs:
            if p.pid == pid:
                return p
        raise UsageError("no process %d in the image (there are: %s)"
                         % (pid, " ".join(str(p.pid) for p in procs)))

    def page(self, proc, addr):
        """(description, bytes or None) of the page holding addr."""
        ps = self.page_size
        base = addr - addr % ps
        for run in proc.memory:
            if run.start <= base < run.start + run.pages * ps:
                kind = str(run.kind)
                if kind == "zero":
                    return "zero page (not stored)", bytes(ps)
                if kind == "guard":
                    return "guard page (MADV_GUARD_INSTALL): no contents, reading it faults", None
                if kind == "parent":
                    return ("saved in the parent image %s, not in this file"
                            % text(self.img.parent.path), None)
                if kind != "data":
                    return "run of kind %s, unknown to this reader" % kind, None
                data = self.frame(run.frame)
                off = run.frameOffset + (base - run.start)
                return ("stored in frame %d (%s) at offset %d" % (run.frame, self.frames[run.frame].codec, off),
                        data[off:off + ps])
        for v in proc.vmas:
            if v.start <= base < v.end:
                b = v.backing
                kind = b.which()
                if kind == "anonymous" or (kind == "special" and str(b.special) in ("heap", "stack")) or \
                        (kind == "sharedMemory" and str(b.sharedMemory.kind) == "anonymousShared"):
                    return "no run: zero (anonymous memory never touched, or dropped as zero)", bytes(ps)
                if kind == "file":
                    return ("no run: the bytes of %s at offset %d (not in the image)"
                            % (text(b.file.file.path), b.file.offset + (base - v.start)), None)
                if kind == "sharedMemory":
                    shm = b.sharedMemory
                    off = shm.offset + (base - v.start)
                    if str(shm.kind) == "memfd":
                        for f in self.img.files:
                            if f.kind.which() == "memfd" and f.kind.memfd.id == shm.id:
                                data = self.blob(f.kind.memfd.contents)
                                page = data[off:off + ps]
                                return ("no run: memfd %s (id %d) contents at offset %d"
                                        % (text(f.kind.memfd.name), shm.id, off),
                                        page + bytes(ps - len(page)))
                    return ("no run: %s shared memory id %d at offset %d, not in the image"
                            % (shm.kind, shm.id, off), None)
                return "no run: provided by the kernel at restore (%s), never saved" % b.special, None
        raise UsageError("0x%x is not mapped in process %d" % (addr, proc.pid))


def hexdump(data, base, out):
    last, starred = None, False
    for i in range(0, len(data), 16):
        chunk = data[i:i + 16]
        if chunk == last and i + 16 < len(data):
            if not starred:
                print("*", file=out)
                starred = True
            continue
        last, starred = chunk, False
        hx = " ".join("%02x" % b for b in chunk)
        asc = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
        print("%016x  %-48s |%s|" % (base + i, hx, asc), file=out)


def parse_addr(s):
    try:
        return int(s, 16)       # accepts an optional 0x
    except ValueError:
        raise argparse.ArgumentTypeError("not a hex address: %r" % s)


class Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        print("ckpt_read: error: %s" % message, file=sys.stderr)
        sys.exit(2)


def main(argv=None):
    ap = Parser(prog="ckpt_read.py", description="Print the contents of a ckpt image.")
    ap.add_argument("image", help="the .ckpt file")
    ap.add_argument("--schema", default=DEFAULT_SCHEMA,
                    help="schema/ckpt.capnp (default: %(default)s)")
    ap.add_argument("--page", type=parse_addr, metavar="ADDR",
                    help="hexdump the saved page holding ADDR (hex, 0x optional)")
    ap.add_argument("--pid", type=int, help="process for --page (default: the root process)")
    ap.add_argument("--raw", action="store_true", help="with --page: write the raw page bytes to stdout")
    ap.add_argument("--no-verify", action="store_true",
                    help="do not read every page frame to check its CRC")
    args = ap.parse_args(argv)

    container = Container(args.image)
    reader = Reader(container, args.schema, sys.stdout)
    if not args.no_verify:
        reader.verify_frames()
    if args.page is not None:
        proc = reader.find_process(args.pid)
        what, data = reader.page(proc, args.page)
        base = args.page - args.page % reader.page_size
        if args.raw:
            if data is None:
                raise ImageError("page 0x%x of pid %d: %s" % (base, proc.pid, what))
            sys.stdout.flush()
            sys.stdout.buffer.write(data)
            return 0
        print("pid %d page 0x%x: %s" % (proc.pid, base, what))
        if data is not None:
            hexdump(data, base, sys.stdout)
        return 0
    reader.print_all()
    return 0


def run():
    try:
        code = main()
        sys.stdout.flush()
    except ImageError as e:
        print("ckpt_read: error: %s" % e, file=sys.stderr)
        code = e.exit_code
    except BrokenPipeError:  # e.g. piped into head
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    except KeyboardInterrupt:
        code = 130
    except Exception as e:  # a damaged message the decoder refused, etc.: no traceback
        print("ckpt_read: error: cannot read the image: %s: %s" % (e.__class__.__name__, first_line(e)),
              file=sys.stderr)
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    run()
