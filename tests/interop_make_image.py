#!/usr/bin/env python3
"""interop_make_image.py: write a small, valid ckpt image from Python.

Written only from schema/ckpt.capnp and the container layout
(spec/format.md), with pycapnp, zlib.crc32 and zstandard: it shows
the format can be written from another language, and gives tests/interop.sh
an image to read even before `ckpt dump` works.

    python3 tests/interop_make_image.py OUT.ckpt [--raw-only] [--edit] [--torn]

The image: one process (pid 4242, two threads) with a code mapping, a data
mapping of three pages (two stored in a raw frame, one an all-zero run) and
a stack page (stored in a zstd frame; raw with --raw-only), three fds.
  --edit  appends an edit as a second generation: a new frame with a changed
          stack page, new metadata (generation 1), a new commit.
  --torn  then appends half a record, as a writer killed mid-append leaves
          it: readers must fall back to scanning and still find the last commit.
Also writes OUT.expect.json: the facts a reader should print, and the
SHA-256 of each saved page.
"""

import argparse
import hashlib
import json
import os
import struct
import sys
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMA = os.path.join(HERE, "..", "schema", "ckpt.capnp")

PAGE = 4096
PID = 4242
TIDS = [4242, 4243]
CODE = 0x400000
DATA = 0x600000
STACK = 0x7FFD00000000
RIP = [0x401020, 0x401080]
RSP = [STACK + 0xF00, 0x7F0000001000]
RAX = [0x2A, 0xCA]


def crc32(b):
    return zlib.crc32(b) & 0xFFFFFFFF


class Writer:
    def __init__(self, f, major=1, minor=0):
        self.f = f
        hdr = struct.pack("<8sHHI12s", b"CKPTIMG\0", major, minor, 0, bytes(12))
        f.write(hdr + struct.pack("<I", crc32(hdr)))
        self.off = 32

    def record(self, kind, payload):
        """Writes one record; returns the offset of its header."""
        start = self.off
        h = struct.pack("<4sIQI", b"CKRC", kind, len(payload), crc32(payload))
        h += struct.pack("<I", crc32(h))
        pad = (-len(payload)) % 8
        self.f.write(h + payload + bytes(pad))
        self.off += len(h) + len(payload) + pad
        return start

    def frame(self, data, codec):
        if codec == "zstd":
            import zstandard
            stored = zstandard.ZstdCompressor(level=3).compress(data)
        else:
            stored = data
        rec = self.record(1, stored)
        return dict(offset=rec + 24, storedSize=len(stored), size=len(data), codec=codec, crc32=crc32(stored))

    def metadata(self, msg):
        return self.record(2, msg)

    def commit(self, meta_off, meta_len, generation):
        end = self.off + 24 + 40
        payload = struct.pack("<QQQQ8s", meta_off, meta_len, generation, end, b"CKPTEND\0")
        self.record(3, payload)
        assert self.off == end


def page_text(label):
    line = ("ckpt-interop %s\n" % label).encode()
    return (line * (PAGE // len(line) + 1))[:PAGE]


def load_schema(path):
    import capnp
    imports = [d for d in (os.path.dirname(os.path.dirname(os.path.abspath(capnp.__file__))),
                           "/usr/include", "/usr/local/include")
               if os.path.isfile(os.path.join(d, "capnp", "c++.capnp"))]
    return capnp.load(os.path.abspath(path), imports=imports)


def identity(fi, path, dev, inode, size, mode):
    fi.path = path
    fi.dev = dev
    fi.inode = inode
    fi.size = size
    fi.mtimeNs = 1700000000000000000
    fi.mode = mode


def build_image(s, frames, stack_frame, generation, notes):
    img = s.Image.new_message()
    img.formatMajor = 1
    img.formatMinor = 0
    img.toolVersion = "interop_make_image.py 1"
    img.createdNs = 1700000000123456789
    img.rootPid = PID
    img.freezeNs = 1234567
    img.generation = generation
    ns = img.init("notes", len(notes))
    for n, (k, v) in zip(ns, notes):
        n.key, n.value = k, v

    h = img.host
    h.hostname = "interop-host"
    h.kernelRelease = "6.18.0-interop"
    h.arch = "x8664"
    h.pageSize = PAGE
    h.bootId = "00000000-0000-4000-8000-000000004242"
    cpu = h.cpu
    cpu.vendor = "GenuineIntel"
    cpu.modelName = "Interop Virtual CPU"
    cpu.family, cpu.model, cpu.stepping = 6, 85, 7
    fl = cpu.init("flags", 3)
    fl[0], fl[1], fl[2] = "fpu", "sse2", "avx"
    cpu.xcr0 = 0x7
    cpu.xsaveSize = 832

    fr = img.init("frames", len(frames))
    for dst, src in zip(fr, frames):
        for k, v in src.items():
            setattr(dst, k, v)

    p = img.init("processes", 1)[0]
    p.pid, p.ppid, p.pgid, p.sid = PID, 1, PID, PID
    p.state = "S"
    p.comm = b"interop"
    identity(p.exe, b"/usr/bin/interop", (8 << 8) | 1, 1234, 8192, 0o100755)
    args = [b"interop", b"--flag", b"arg with space"]
    cl = p.init("cmdline", len(args))
    for i, a in enumerate(args):
        cl[i] = a
    env = p.init("environ", 2)
    env[0], env[1] = b"PATH=/usr/bin", b"LANG=C"
    p.cwd = b"/tmp"
    p.root = b"/"
    p.umask = 0o22
    c = p.creds
    c.groups = [0]
    c.capBounding = (1 << 41) - 1
    p.exitSignal = 17
    p.dumpable = True
    mm = p.mm
    mm.startCode, mm.endCode = CODE, CODE + PAGE
    mm.startData, mm.endData = DATA, DATA + PAGE
    mm.startBrk = mm.brk = DATA + 3 * PAGE
    mm.startStack = STACK + 0xFF0
    aux = mm.init("auxv", 2)
    aux[0].key, aux[0].value = 6, PAGE      # AT_PAGESZ
    aux[1].key, aux[1].value = 0, 0         # AT_NULL

    vmas = p.init("vmas", 3)
    v = vmas[0]
    v.start, v.end, v.prot = CODE, CODE + PAGE, 5
    fm = v.backing.init("file")
    identity(fm.file, b"/usr/bin/interop", (8 << 8) | 1, 1234, 8192, 0o100755)
    fm.offset = 0
    v.name = b"/usr/bin/interop"
    v = vmas[1]
    v.start, v.end, v.prot = DATA, DATA + 3 * PAGE, 3
    v.backing.anonymous = None
    vf = v.init("vmFlags", 4)
    vf[0], vf[1], vf[2], vf[3] = "rd", "wr", "mr", "mw"
    v = vmas[2]
    v.start, v.end, v.prot = STACK, STACK + PAGE, 3
    v.growsDown = True
    v.backing.special = "stack"
    v.name = b"[stack]"

    runs = p.init("memory", 3)
    r = runs[0]
    r.start, r.pages, r.kind, r.frame, r.frameOffset = DATA, 2, "data", 0, 0
    r = runs[1]
    r.start, r.pages, r.kind = DATA + 2 * PAGE, 1, "zero"
    r = runs[2]
    r.start, r.pages, r.kind, r.frame, r.frameOffset = STACK, 1, "data", stack_frame, 0

    sa = p.init("sigactions", 64)
    sa[9].handler = 0x401100          # SIGUSR1
    sa[9].flags = 0x04000004          # SA_RESTORER | SA_SIGINFO
    sa[9].restorer = 0x401200

    th = p.init("threads", 2)
    for i, t in enumerate(th):
        t.tid = TIDS[i]
        t.comm = b"interop" if i == 0 else b"worker"
        t.state = "S"
        x = t.regs.init("x8664")
        x.rip, x.rsp, x.rax = RIP[i], RSP[i], RAX[i]
        x.rbx, x.rcx, x.rdx = 0x1111 + i, 0x2222 + i, 0x3333 + i
        x.rsi, x.rdi, x.rbp = 0x4444 + i, 0x5555 + i, 0
        x.r8, x.r9, x.r10, x.r11 = 8, 9, 10, 0x246
        x.r12, x.r13, x.r14, x.r15 = 12, 13, 14, 15
        x.origRax = 0xFFFFFFFFFFFFFFFF
        x.cs, x.ss, x.eflags = 0x33, 0x2B, 0x246
        x.fsBase = 0x7F0000000740 + i * 0x1000
        x.xsave = bytes(576)
        x.xfeatures = 0x3
        t.blocked = 1 << 11               # SIGUSR2 (12) blocked
        t.altstack.flags = 2              # SS_DISABLE
        t.cpuAffinity = [0x3]

    files = img.init("files", 3)
    f = files[0]
    f.id, f.flags, f.path = 0, 0o2, b"/dev/pts/0"
    f.kind.init("tty").index = 0
    f = files[1]
    f.id, f.flags, f.position, f.path = 1, 0o2001, 1234, b"/tmp/interop.log"
    identity(f.kind.init("regular").file, b"/tmp/interop.log", (8 << 8) | 1, 99, 1234, 0o100644)
    f = files[2]
    f.id, f.flags, f.path = 2, 0, b"pipe:[777]"
    pk = f.kind.init("pipe")
    pk.id, pk.end, pk.data, pk.capacity = 777, "read", b"buffered", 65536
    fds = p.init("fds", 4)
    for d, (n, fid) in zip(fds, [(0, 0), (1, 1), (2, 1), (3, 2)]):
        d.fd, d.file = n, fid
    fds[3].cloexec = True
    return img.to_bytes()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--schema", default=SCHEMA)
    ap.add_argument("--raw-only", action="store_true", help="no zstd frame")
    ap.add_argument("--edit", action="store_true", help="append a generation-1 edit")
    ap.add_argument("--torn", action="store_true", help="end with half an appended record")
    a = ap.parse_args()

    s = load_schema(a.schema)
    codec = "none" if a.raw_only else "zstd"
    data_pages = page_text("data page 0") + bytes(range(256)) * (PAGE // 256)
    stack_page = page_text("stack page, generation 0")
    pages = {DATA: data_pages[:PAGE], DATA + PAGE: data_pages[PAGE:], DATA + 2 * PAGE: bytes(PAGE),
             STACK: stack_page}
    with open(a.out, "wb") as f:
        w = Writer(f)
        frames = [w.frame(data_pages, "none"), w.frame(stack_page, codec)]
        meta = build_image(s, frames, 1, 0, [("made-by", "tests/interop_make_image.py")])
        moff = w.metadata(meta)
        w.commit(moff, len(meta), 0)
        generation = 0
        if a.edit:
            stack_page = page_text("stack page, generation 1")
            pages[STACK] = stack_page
            frames.append(w.frame(stack_page, "none"))
            meta = build_image(s, frames, 2, 1, [("made-by", "tests/interop_make_image.py"),
                                                 ("edited", "stack page replaced")])
            moff = w.metadata(meta)
            w.commit(moff, len(meta), 1)
            generation = 1
        if a.torn:
            junk = page_text("torn")
            h = struct.pack("<4sIQI", b"CKRC", 1, len(junk), crc32(junk))
            f.write(h + struct.pack("<I", crc32(h)) + junk[:len(junk) // 2])
    expect = {
        "pid": PID, "tids": TIDS, "comm": "interop", "cmdline": "interop --flag 'arg with space'",
        "rip": ["0x%016x" % x for x in RIP], "rsp": ["0x%016x" % x for x in RSP],
        "generation": generation, "frames": len(frames),
        "maps": ["%012x-%012x r-xp" % (CODE, CODE + PAGE), "%012x-%012x rw-p" % (DATA, DATA + 3 * PAGE),
                 "%012x-%012x rw-p" % (STACK, STACK + PAGE)],
        "pages": {"0x%x" % k: hashlib.sha256(v).hexdigest() for k, v in pages.items()},
        "stack_text": "stack page, generation %d" % generation,
    }
    with open(a.out + ".expect.json", "w") as f:
        json.dump(expect, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
