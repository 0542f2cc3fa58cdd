//! open, read, write, flush and lseek.

use super::{errno, lock, CkptFs, EditBuf, Handle};
use crate::pages::{writable_prefix, PendingPages, FLUSH_BYTES};
use crate::store::{Failure, Loaded};
use crate::tree::{Kind, Node, ProcFile};
use fuser::{Errno, FopenFlags, OpenFlags, ReplyData, Request};
use std::sync::{Arc, Mutex};

thread_local! {
    static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Largest text collected for one edit of a text file.
const MAX_EDIT: usize = 16 << 20;

fn slice(b: &[u8], offset: u64, size: u32) -> &[u8] {
    let start = (offset.min(b.len() as u64)) as usize;
    let end = start.saturating_add(size as usize).min(b.len());
    &b[start..end]
}

impl CkptFs {
    pub(super) fn do_open(
        &self,
        req: &Request,
        ino: u64,
        node: Node,
        flags: OpenFlags,
    ) -> Result<(u64, FopenFlags), Errno> {
        let write = flags.0 & libc::O_ACCMODE != libc::O_RDONLY;
        if node.kind() == Kind::Dir {
            return Err(Errno::EISDIR);
        }
        if write {
            if !node.writable() {
                return Err(Errno::EACCES);
            }
            if self.cfg.read_only {
                return Err(Errno::EROFS);
            }
            if node == Node::RootCtl && !self.privileged(req.uid()) {
                return Err(Errno::EACCES);
            }
        }
        let mut h = Handle::new(node);
        let mut fopen = FopenFlags::FOPEN_DIRECT_IO;
        match node {
            Node::RootCtl | Node::ImageCtl(_) | Node::Errors(_) | Node::Scratch(..) => {}
            Node::ProcFile(_, pid, ProcFile::Mem) | Node::MapFile(_, pid, _, _) => {
                let l = self.loaded(node)?;
                if write {
                    let ps = l.image().map(|i| i.host.page_size).unwrap_or(4096);
                    h.pages = Some(Arc::new(Mutex::new(PendingPages::new(pid, ps))));
                } else if matches!(node, Node::MapFile(..)) {
                    fopen = self.cached_open(ino, &l);
                    h.loaded = Some(l);
                }
            }
            Node::FdData(..) => {
                let l = self.loaded(node)?;
                fopen = self.cached_open(ino, &l);
                h.loaded = Some(l);
            }
            n => {
                let l = self.loaded(n)?;
                h.snapshot = self.store.content(n, &l);
                if write && n.is_text_edit() {
                    h.edit = Some(EditBuf {
                        data: Vec::new(),
                        base: None,
                        dirty: false,
                    });
                }
            }
        }
        tracing::debug!(path = %self.path_of(node), write, "open");
        Ok((self.new_handle(h), fopen))
    }

    /// Open a file read through the page cache: keep what the kernel
    /// cached when it holds this very version of the image.
    fn cached_open(&self, ino: u64, l: &Loaded) -> FopenFlags {
        let mut keys = lock(&self.cache_keys);
        let same = keys.get(&ino) == Some(&l.key);
        keys.insert(ino, l.key);
        if same {
            FopenFlags::FOPEN_KEEP_CACHE
        } else {
            FopenFlags::empty()
        }
    }

    pub(super) fn do_read(&self, fh: u64, offset: u64, size: u32, reply: ReplyData) {
        let (node, snapshot, loaded, pages, answer) = match lock(&self.handles).get_mut(&fh) {
            Some(h) => (
                h.node,
                h.snapshot.clone(),
                h.loaded.clone(),
                h.pages.clone(),
                // A ctl file this handle wrote a command to: its own answer.
                h.answer.as_mut().map(|a| a.next(offset, size)),
            ),
            None => return reply.error(Errno::EBADF),
        };
        if let Some(bytes) = answer {
            return reply.data(&bytes);
        }
        match node {
            Node::RootCtl => {
                reply.data(slice(&super::ctlcmd::root_text(&self.store), offset, size))
            }
            Node::ImageCtl(id) => reply.data(slice(
                &super::ctlcmd::image_text(&self.store, id),
                offset,
                size,
            )),
            Node::Errors(id) => reply.data(slice(&self.store.errors_text(id), offset, size)),
            Node::Scratch(_, n) => match lock(&self.scratch).get(n) {
                Some(f) => reply.data(slice(&f.data, offset, size)),
                None => reply.error(Errno::ENOENT),
            },
            Node::ProcFile(_, _, ProcFile::Mem) | Node::MapFile(..) | Node::FdData(..) => {
                self.read_saved(node, loaded, pages, offset, size, reply)
            }
            _ => match snapshot {
                Some(s) => reply.data(slice(&s, offset, size)),
                None => reply.error(Errno::EIO),
            },
        }
    }

    /// Reads of `mem`, `map_files/*` and `fds/N.data`.
    fn read_saved(
        &self,
        node: Node,
        loaded: Option<Arc<Loaded>>,
        pages: Option<Arc<Mutex<PendingPages>>>,
        offset: u64,
        size: u32,
        reply: ReplyData,
    ) {
        let id = node.image().expect("saved contents belong to an image");
        let Some(l) = loaded.or_else(|| self.store.load(id)) else {
            return reply.error(Errno::ENOENT);
        };
        // (address or offset to read, how many bytes, short reads allowed)
        let (addr, len, short_ok) = match node {
            // Address 0 is never mapped: a read there is the end of the file,
            // so tools that copy `mem` from its start copy nothing.
            Node::ProcFile(..) if offset == 0 => return reply.data(&[]),
            Node::ProcFile(..) => (offset, size as u64, true),
            Node::MapFile(_, _, start, end) => {
                let len = (end - start).saturating_sub(offset).min(u64::from(size));
                (start + offset, len, false)
            }
            _ => (offset, u64::from(size), true),
        };
        if let (Node::ProcFile(_, pid, _) | Node::MapFile(_, pid, _, _), None) = (node, &pages) {
            // A read inside one saved run: straight from the decoded frame.
            if let Some((frame, off)) = self.store.in_one_frame(&l, pid, addr, len) {
                reply.data(&frame[off..off + len as usize]);
                self.store.after_read(&l, pid, addr, len);
                return;
            }
        }
        BUF.with_borrow_mut(|buf| {
            // Reused per thread: no allocation or zeroing per read.
            if buf.len() < len as usize {
                buf.resize(len as usize, 0);
            }
            let out = &mut buf[..len as usize];
            let r = match node {
                Node::FdData(_, pid, fd) => self.store.read_fd_data(&l, pid, fd, addr, out),
                Node::ProcFile(_, pid, _) | Node::MapFile(_, pid, _, _) => {
                    self.store.read_mem_into(&l, pid, addr, out, short_ok)
                }
                _ => unreachable!("saved contents"),
            };
            match r {
                Ok(n) => {
                    if let Some(p) = &pages {
                        lock(p).overlay(addr, &mut out[..n]);
                    }
                    if let Node::ProcFile(_, pid, _) | Node::MapFile(_, pid, _, _) = node {
                        // Streaming: decode the next reads' frames meanwhile.
                        self.store.after_read(&l, pid, addr, n as u64);
                    }
                    reply.data(&out[..n])
                }
                Err(f) => {
                    let what = format!("read {} at {addr:#x} ({len} bytes)", self.path_of(node));
                    reply.error(self.refuse(node, &what, &f))
                }
            }
        })
    }

    pub(super) fn do_write(
        &self,
        req: &Request,
        fh: u64,
        offset: u64,
        data: &[u8],
    ) -> Result<u32, Errno> {
        let (node, pages) = match lock(&self.handles).get(&fh) {
            Some(h) => (h.node, h.pages.clone()),
            None => return Err(Errno::EBADF),
        };
        let n = data.len() as u32;
        match node {
            Node::RootCtl | Node::ImageCtl(_) => {
                let r = match node {
                    Node::RootCtl => self.run_root_ctl(req.uid(), data),
                    Node::ImageCtl(id) => self.run_image_ctl(id, req.uid(), data),
                    _ => unreachable!(),
                };
                let answer = match &r {
                    Ok(msg) => msg.clone(),
                    Err(e) => format!("error: {}", e.msg),
                };
                match node {
                    Node::RootCtl => self.store.set_root_status(answer.clone()),
                    Node::ImageCtl(id) => self.store.set_status(id, answer.clone()),
                    _ => {}
                }
                if let Some(h) = lock(&self.handles).get_mut(&fh) {
                    h.answer = Some(super::Answer {
                        base: offset + data.len() as u64,
                        text: (answer + "\n").into_bytes(),
                        read: 0,
                    });
                }
                match r {
                    Ok(_) => Ok(n),
                    Err(e) => Err(self.refuse(node, "ctl command", &e)),
                }
            }
            Node::Scratch(_, s) => {
                let mut sc = lock(&self.scratch);
                let f = sc.get_mut(s).ok_or(Errno::ENOENT)?;
                crate::scratch::write_at(f, offset, data).map_err(|e| errno(e.errno))?;
                Ok(n)
            }
            Node::ProcFile(_, pid, ProcFile::Mem) => {
                let pages = pages.ok_or(Errno::EBADF)?;
                self.write_saved(node, pid, offset, data, None, &pages)
            }
            Node::MapFile(_, pid, start, end) => {
                let pages = pages.ok_or(Errno::EBADF)?;
                if offset >= end - start {
                    let f = Failure::new(
                        libc::EFBIG,
                        format!(
                            "the mapping is {} bytes: nothing can be written at offset {offset}",
                            end - start
                        ),
                    );
                    return Err(self.write_refused(node, offset, data.len(), &f));
                }
                self.write_saved(node, pid, start + offset, data, Some(end), &pages)
            }
            _ => self.write_text(fh, node, offset, data),
        }
    }

    fn write_refused(&self, node: Node, at: u64, len: usize, f: &Failure) -> Errno {
        let path = self.path_of(node);
        if let Some(id) = node.image() {
            self.store
                .set_edit_status(id, format!("error: edit of {path} at {at:#x}: {}", f.msg));
        }
        self.refuse(node, &format!("write {path} at {at:#x} ({len} bytes)"), f)
    }

    /// A write to `mem` or a map file: checked now (the reason of a refusal
    /// reaches the writer), kept as whole pages until close or fsync.
    fn write_saved(
        &self,
        node: Node,
        pid: i32,
        addr: u64,
        data: &[u8],
        limit: Option<u64>,
        pages: &Mutex<PendingPages>,
    ) -> Result<u32, Errno> {
        let id = node.image().expect("memory belongs to an image");
        let l = self.store.load(id).ok_or(Errno::ENOENT)?;
        let r = (|| {
            let p = l
                .image()
                .and_then(|i| i.process(pid))
                .ok_or_else(|| Failure::new(libc::ENOENT, format!("no pid {pid}")))?;
            let ps = l
                .image()
                .map(|i| u64::from(i.host.page_size))
                .unwrap_or(4096);
            let mut n = writable_prefix(p, addr, data.len() as u64, ps)?;
            if let Some(end) = limit {
                n = n.min(end - addr);
            }
            let mut pp = lock(pages);
            pp.write(addr, &data[..n as usize], |pa, page| {
                self.store
                    .read_mem_into(&l, pid, pa, page, false)
                    .map(drop)
                    .map_err(|f| {
                        Failure::new(
                            f.errno,
                            format!("the page at {pa:#x} is written in part, and its other bytes cannot be read: {}", f.msg),
                        )
                    })
            })?;
            Ok(n as u32)
        })();
        let n = r.map_err(|f| self.write_refused(node, addr, data.len(), &f))?;
        let full = lock(pages).bytes() >= FLUSH_BYTES;
        if full {
            self.commit_pages(node, pages)
                .map_err(|f| self.write_refused(node, addr, data.len(), &f))?;
        }
        Ok(n)
    }

    /// Commit the pending pages of a handle as one generation.
    fn commit_pages(&self, node: Node, pages: &Mutex<PendingPages>) -> Result<(), Failure> {
        let id = node.image().expect("memory belongs to an image");
        let (pid, ranges, written, writes, first) = {
            let mut p = lock(pages);
            if p.is_empty() {
                return Ok(());
            }
            let (w, n, f) = (p.written, p.writes, p.first.unwrap_or(0));
            (p.pid, p.take(), w, n, f)
        };
        let path = self.path_of(node);
        let t = std::time::Instant::now();
        match self.store.write_pages(id, pid, &ranges) {
            Ok((_, generation)) => {
                let many = if writes > 1 {
                    format!(" in {writes} writes")
                } else {
                    String::new()
                };
                let msg = format!(
                    "ok edit {path}: {written} bytes at {first:#x}{many} (generation {generation})"
                );
                tracing::info!(image = %self.store.name(id), ms = crate::ops::ms(t), "{}", &msg[3..]);
                self.store.set_edit_status(id, msg);
                self.changed(id);
                Ok(())
            }
            Err(e) => {
                self.store.set_edit_status(
                    id,
                    format!("error: edit of {path} at {first:#x}: {}", e.msg),
                );
                self.store.record_error(
                    id,
                    &format!("commit of {written} bytes written to {path}"),
                    &e.msg,
                );
                Err(e)
            }
        }
    }

    /// A write to a text file: collected, complete lines checked at once.
    fn write_text(&self, fh: u64, node: Node, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        let mut hs = lock(&self.handles);
        let Some(e) = hs.get_mut(&fh).and_then(|h| h.edit.as_mut()) else {
            return Err(Errno::EBADF);
        };
        let base = *e.base.get_or_insert(offset);
        let pos = offset
            .checked_sub(base)
            .map(|p| p as usize)
            .unwrap_or(e.data.len());
        if pos.saturating_add(data.len()) > MAX_EDIT {
            return Err(Errno::EFBIG);
        }
        let end = pos + data.len();
        if e.data.len() < end {
            e.data.resize(end, 0);
        }
        e.data[pos..end].copy_from_slice(data);
        e.dirty = true;
        // Check the complete lines now, so that a bad edit fails the
        // write itself (shells ignore errors of close()).
        let complete = e
            .data
            .iter()
            .rposition(|&b| b == b'\n')
            .map(|i| e.data[..=i].to_vec());
        drop(hs);
        if let Some(text) = complete {
            if let Err(f) = self.store.check_edit(node, &text) {
                if let Some(e) = lock(&self.handles)
                    .get_mut(&fh)
                    .and_then(|h| h.edit.as_mut())
                {
                    e.data.clear();
                    e.base = None;
                    e.dirty = false;
                }
                let path = self.path_of(node);
                let id = node.image().expect("edit nodes belong to an image");
                self.store
                    .set_edit_status(id, format!("error: edit of {path}: {}", f.msg));
                return Err(self.refuse(node, &format!("edit of {path}"), &f));
            }
        }
        Ok(data.len() as u32)
    }

    /// Apply a whole text as an edit of `node` (at close, or a rename onto
    /// it); one generation when it changes something.
    pub(super) fn apply_edit(&self, node: Node, data: &[u8]) -> Result<(), Failure> {
        let id = node.image().expect("edit nodes belong to an image");
        let path = self.path_of(node);
        let t = std::time::Instant::now();
        match self.store.edit(node, data) {
            Ok(Some((what, generation))) => {
                tracing::info!(image = %self.store.name(id), ms = crate::ops::ms(t), "edit {path}: {what} (generation {generation})");
                self.store.set_edit_status(
                    id,
                    format!("ok edit {path}: {what} (generation {generation})"),
                );
                self.changed(id);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => {
                self.store
                    .set_edit_status(id, format!("error: edit of {path}: {}", e.msg));
                self.store
                    .record_error(id, &format!("edit of {path}"), &e.msg);
                Err(e)
            }
        }
    }

    /// close() or fsync(): commit what the handle collected.
    pub(super) fn flush_handle(&self, fh: u64) -> Result<(), Errno> {
        let (node, text, pages) = {
            let mut hs = lock(&self.handles);
            let Some(h) = hs.get_mut(&fh) else {
                return Ok(());
            };
            let text = match h.edit.as_mut() {
                Some(e) if e.dirty => {
                    e.dirty = false;
                    e.base = None;
                    Some(std::mem::take(&mut e.data))
                }
                _ => None,
            };
            (h.node, text, h.pages.clone())
        };
        if let Some(t) = text {
            self.apply_edit(node, &t).map_err(|e| errno(e.errno))?;
        }
        if let Some(p) = pages {
            self.commit_pages(node, &p).map_err(|e| errno(e.errno))?;
        }
        Ok(())
    }

    /// SEEK_DATA and SEEK_HOLE (the kernel answers the other whences).
    pub(super) fn do_lseek(&self, fh: u64, offset: i64, whence: i32) -> Result<i64, Errno> {
        let node = lock(&self.handles)
            .get(&fh)
            .map(|h| h.node)
            .ok_or(Errno::EBADF)?;
        let off = u64::try_from(offset).map_err(|_| Errno::EINVAL)?;
        let data = match whence {
            libc::SEEK_DATA => true,
            libc::SEEK_HOLE => false,
            _ => return Err(Errno::EINVAL),
        };
        let found = match node {
            Node::ProcFile(_, pid, ProcFile::Mem) => {
                let ix = self.loaded(node)?.index(pid).ok_or(Errno::ENOENT)?;
                if data {
                    ix.next_data(off).ok_or(Errno::ENXIO)?
                } else {
                    ix.next_hole(off)
                }
            }
            Node::MapFile(_, pid, start, end) => {
                let size = end - start;
                if off >= size {
                    return Err(Errno::ENXIO);
                }
                let ix = self.loaded(node)?.index(pid).ok_or(Errno::ENOENT)?;
                let a = start + off;
                let r = if data {
                    ix.next_data(a).filter(|&d| d < end).ok_or(Errno::ENXIO)?
                } else {
                    ix.next_hole(a).min(end)
                };
                r - start
            }
            n => {
                let size = self.attr(n)?.size;
                if off >= size {
                    return Err(Errno::ENXIO);
                }
                if data {
                    off
                } else {
                    size
                }
            }
        };
        i64::try_from(found).map_err(|_| Errno::ENXIO)
    }
}
