#!/usr/bin/env python3
"""interop_corrupt.py IMAGE OUTDIR: damaged copies of a ckpt image.

Works from the container layout alone (spec/format.md), with no
schema, so it applies to any image. Writes OUTDIR/<name>.ckpt for each case
and OUTDIR/manifest.json: a list of {name, expect: "ok"|"fail", code, match},
where code is the exit status a reader must give and match a regular
expression its error message must contain.
"""
import json
import os
import struct
import sys
import zlib


def crc(b):
    return zlib.crc32(b) & 0xFFFFFFFF


def records(d):
    """[(offset, kind, length)] of the valid records, in file order."""
    out, off = [], 32
    while off + 24 <= len(d):
        magic, kind, length, _pcrc, hcrc = struct.unpack_from("<4sIQII", d, off)
        if magic != b"CKRC" or crc(d[off:off + 20]) != hcrc or off + 24 + length > len(d):
            break
        out.append((off, kind, length))
        off = (off + 24 + length + 7) & ~7
    return out


def flip(d, i):
    d = bytearray(d)
    d[i] ^= 0x5A
    return bytes(d)


def main():
    src, outdir = sys.argv[1], sys.argv[2]
    d = open(src, "rb").read()
    os.makedirs(outdir, exist_ok=True)
    recs = records(d)
    commits = [r for r in recs if r[1] == 3]
    if not commits:
        sys.exit("%s: no commit record found; not a complete image" % src)
    last_commit = commits[-1][0]
    meta_off = struct.unpack_from("<Q", d, last_commit + 24)[0]
    fast = struct.unpack_from("<Q", d, last_commit + 24 + 24)[0] == len(d)
    cases = []

    def case(name, data, expect, code=0, match=""):
        with open(os.path.join(outdir, name + ".ckpt"), "wb") as f:
            f.write(data)
        cases.append(dict(name=name, expect=expect, code=code, match=match))

    case("empty", b"", "fail", 1, "too short|not a ckpt image")
    case("garbage", bytes((i * 131 + 7) & 0xFF for i in range(8192)), "fail", 1, "bad magic")
    case("bad-magic", flip(d, 3), "fail", 1, "bad magic")
    hdr = bytearray(d[:32])
    struct.pack_into("<HH", hdr, 8, 2, 0)
    struct.pack_into("<I", hdr, 28, crc(bytes(hdr[:28])))
    case("major-2", bytes(hdr) + d[32:], "fail", 2, r"version 2\.0.*major version 1")
    hdr = bytearray(d[:32])
    struct.pack_into("<H", hdr, 8, 0xFFFF)
    case("major-65535-bad-crc", bytes(hdr) + d[32:], "fail", 2, "version 65535")
    case("header-crc", flip(d, 20), "fail", 1, "header CRC")
    case("header-only", d[:32], "fail", 1, "no complete commit")
    case("metadata-crc", flip(d, meta_off + 24 + 9), "fail", 1, "metadata CRC")
    # a damaged record header ends a scan there: with no fast path (a torn
    # tail), the reader falls back to the commit before, if there is one
    case("metadata-header", flip(d, meta_off + 2),
         "fail" if fast or len(commits) == 1 else "ok", 1, "no valid record|metadata")
    # the last commit damaged: falls back to the one before, if there is one
    case("last-commit", flip(d, last_commit + 24 + 33),
         "ok" if len(commits) > 1 else "fail", 1, "no complete commit")
    case("truncated-mid-commit", d[:commits[0][0] + 30], "fail", 1, "no complete commit")
    case("truncated-tail", d[:-1], "ok" if len(commits) > 1 or not fast else "fail", 1,
         "no complete commit")
    junk = b"x" * 1000
    h = struct.pack("<4sIQI", b"CKRC", 1, len(junk), crc(junk))
    case("torn-append", d + h + struct.pack("<I", crc(h)) + junk[:300], "ok")
    case("trailing-zeros", d + bytes(100), "ok")
    if fast:
        # the commit's generation differs from the metadata's (CRCs made right)
        c = bytearray(d[last_commit:])
        gen = struct.unpack_from("<Q", c, 24 + 16)[0]
        struct.pack_into("<Q", c, 24 + 16, gen + 7)
        struct.pack_into("<I", c, 16, crc(bytes(c[24:64])))
        struct.pack_into("<I", c, 20, crc(bytes(c[:20])))
        case("generation-mismatch", d[:last_commit] + bytes(c), "fail", 1, "generation")
        # the metadata record holds more than its one message: a new
        # metadata record and commit appended (as an edit would)
        meta_len = struct.unpack_from("<Q", d, last_commit + 24 + 8)[0]
        gen = struct.unpack_from("<Q", d, last_commit + 24 + 16)[0]
        payload = d[meta_off + 24:meta_off + 24 + meta_len]
        for name, extra, match in (("metadata-trailing-bytes", bytes(8), "follow the metadata message"),
                                   ("metadata-partial-word", bytes(3), "whole number of 8-byte words")):
            p = payload + extra
            h = struct.pack("<4sIQI", b"CKRC", 2, len(p), crc(p))
            rec = h + struct.pack("<I", crc(h)) + p + bytes((8 - len(p) % 8) % 8)
            at = len(d)
            cp = struct.pack("<QQQQ8s", at, len(p), gen, at + len(rec) + 64, b"CKPTEND\0")
            ch = struct.pack("<4sIQI", b"CKRC", 3, 40, crc(cp))
            case(name, d + rec + ch + struct.pack("<I", crc(ch)) + cp, "fail", 1, match)
    # a stored page frame damaged: a fresh image (one commit) references every frame it holds
    frames = [r for r in recs if r[1] == 1]
    if frames and len(commits) == 1:
        off, _, length = frames[0]
        case("frame-crc", flip(d, off + 24 + length // 2), "fail", 1, "frame 0.*CRC")
    with open(os.path.join(outdir, "manifest.json"), "w") as f:
        json.dump(cases, f, indent=1)


if __name__ == "__main__":
    main()
