//! The in-memory file system behind [`super::PowerFs`], with two views of everything: what
//! readers see now, and what a disk would still hold after losing power.
//!
//! The durability rules are the strict POSIX ones, which are what RocksDB is written
//! against (and stricter than ext4's habits):
//! - a file's contents (and size) become durable at `fsync`/`fdatasync` of that file;
//! - a directory entry (a create, rename, link or unlink in that directory) becomes durable
//!   at `fsync` of the directory, not of the file; a rename touching two directories needs
//!   both synced;
//! - nothing else is durable: [`Model::cut_power`] reverts every file to its synced bytes
//!   and every directory to its synced entries, and forgets inodes no synced entry names.
//!
//! Unsynced writes are all dropped, never partly kept: the harshest (and most common)
//! outcome for data written after the last sync. Metadata other than size (modes, times) is
//! not modelled as volatile.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::time::SystemTime;

/// Inode number of the root directory (FUSE's fixed root).
pub const ROOT: u64 = 1;

/// Largest file the model accepts: far above anything a test writes, and low enough that
/// a bogus offset cannot make the test process allocate its whole memory.
const MAX_FILE_BYTES: u64 = 1 << 32;

/// `fallocate` mode bits (linux/falloc.h); RocksDB preallocates with `KEEP_SIZE`.
pub const FALLOC_FL_KEEP_SIZE: i32 = 0x01;
pub const FALLOC_FL_PUNCH_HOLE: i32 = 0x02;

/// An errno, as the FUSE layer will return it; the values below are Linux's
/// (asm-generic/errno-base.h and errno.h).
pub type Errno = i32;
pub const ENOENT: Errno = 2;
pub const EEXIST: Errno = 17;
pub const ENOTDIR: Errno = 20;
pub const EISDIR: Errno = 21;
pub const EINVAL: Errno = 22;
pub const EFBIG: Errno = 27;
pub const ENOTEMPTY: Errno = 39;
pub const EOPNOTSUPP: Errno = 95;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
}

#[derive(Debug, Default)]
struct FileBody {
    data: Vec<u8>,
    synced: Vec<u8>,
    /// One range covering every byte that may differ from `synced` (None: nothing unsynced
    /// except perhaps the size).
    dirty: Option<(usize, usize)>,
}

#[derive(Debug, Default)]
struct DirBody {
    entries: BTreeMap<OsString, u64>,
    synced: BTreeMap<OsString, u64>,
}

#[derive(Debug)]
enum Body {
    File(FileBody),
    Dir(DirBody),
}

#[derive(Debug)]
pub struct Node {
    body: Body,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
}

impl Node {
    pub fn kind(&self) -> Kind {
        match self.body {
            Body::File(_) => Kind::File,
            Body::Dir(_) => Kind::Dir,
        }
    }

    pub fn size(&self) -> u64 {
        match &self.body {
            Body::File(f) => f.data.len() as u64,
            Body::Dir(d) => d.entries.len() as u64,
        }
    }
}

/// What a power cut threw away.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CutStats {
    /// Files whose contents or size differed from their synced state.
    pub files_reverted: u64,
    /// Unsynced bytes dropped (written or appended since the last sync of their file).
    pub bytes_dropped: u64,
    /// Directories whose entries differed from their synced entries.
    pub dirs_reverted: u64,
    /// Inodes forgotten because no synced directory entry names them.
    pub inodes_forgotten: u64,
}

#[derive(Debug)]
pub struct Model {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
}

impl Default for Model {
    fn default() -> Self {
        Self::new()
    }
}

impl Model {
    pub fn new() -> Self {
        let mut nodes = HashMap::new();
        nodes.insert(ROOT, new_node(Body::Dir(DirBody::default()), 0o755, 0, 0));
        Model {
            nodes,
            next_ino: ROOT + 1,
        }
    }

    pub fn node(&self, ino: u64) -> Result<&Node, Errno> {
        self.nodes.get(&ino).ok_or(ENOENT)
    }

    fn node_mut(&mut self, ino: u64) -> Result<&mut Node, Errno> {
        self.nodes.get_mut(&ino).ok_or(ENOENT)
    }

    fn dir(&self, ino: u64) -> Result<&DirBody, Errno> {
        match &self.node(ino)?.body {
            Body::Dir(d) => Ok(d),
            Body::File(_) => Err(ENOTDIR),
        }
    }

    fn dir_mut(&mut self, ino: u64) -> Result<&mut DirBody, Errno> {
        match &mut self.node_mut(ino)?.body {
            Body::Dir(d) => Ok(d),
            Body::File(_) => Err(ENOTDIR),
        }
    }

    fn file_mut(&mut self, ino: u64) -> Result<&mut FileBody, Errno> {
        let node = self.node_mut(ino)?;
        node.mtime = SystemTime::now();
        node.ctime = node.mtime;
        match &mut node.body {
            Body::File(f) => Ok(f),
            Body::Dir(_) => Err(EISDIR),
        }
    }

    /// chmod/chown/utimes: not modelled as volatile (see the module doc).
    pub fn set_meta(
        &mut self,
        ino: u64,
        perm: Option<u16>,
        uid: Option<u32>,
        gid: Option<u32>,
        mtime: Option<SystemTime>,
    ) -> Result<(), Errno> {
        let node = self.node_mut(ino)?;
        node.perm = perm.unwrap_or(node.perm);
        node.uid = uid.unwrap_or(node.uid);
        node.gid = gid.unwrap_or(node.gid);
        node.mtime = mtime.unwrap_or(node.mtime);
        Ok(())
    }

    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        self.dir(parent)?.entries.get(name).copied().ok_or(ENOENT)
    }

    /// Number of current directory entries naming `ino` (its link count).
    pub fn nlink(&self, ino: u64) -> u32 {
        match self.nodes.get(&ino).map(Node::kind) {
            Some(Kind::Dir) => 2,
            _ => self
                .nodes
                .values()
                .filter_map(|n| match &n.body {
                    Body::Dir(d) => Some(d.entries.values().filter(|&&i| i == ino).count()),
                    Body::File(_) => None,
                })
                .sum::<usize>() as u32,
        }
    }

    /// Creates a file or directory `name` in `parent`.
    pub fn create(
        &mut self,
        parent: u64,
        name: &OsStr,
        kind: Kind,
        perm: u16,
        uid: u32,
        gid: u32,
    ) -> Result<u64, Errno> {
        if self.dir(parent)?.entries.contains_key(name) {
            return Err(EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let body = match kind {
            Kind::File => Body::File(FileBody::default()),
            Kind::Dir => Body::Dir(DirBody::default()),
        };
        self.nodes.insert(ino, new_node(body, perm, uid, gid));
        self.dir_mut(parent)?.entries.insert(name.to_owned(), ino);
        Ok(ino)
    }

    /// Removes the entry `name` (a file unless `dir`, then an empty directory). The inode
    /// lives on until a power cut: a synced entry may still name it, and open handles
    /// may still read it.
    pub fn remove(&mut self, parent: u64, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let ino = self.lookup(parent, name)?;
        match (self.node(ino)?.kind(), dir) {
            (Kind::Dir, false) => return Err(EISDIR),
            (Kind::File, true) => return Err(ENOTDIR),
            (Kind::Dir, true) if !self.dir(ino)?.entries.is_empty() => return Err(ENOTEMPTY),
            _ => {}
        }
        self.dir_mut(parent)?.entries.remove(name);
        Ok(())
    }

    /// Moves `name` to `new_name`, replacing a file there (`no_replace`: fail instead).
    pub fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        no_replace: bool,
    ) -> Result<(), Errno> {
        let ino = self.lookup(parent, name)?;
        if let Ok(existing) = self.lookup(new_parent, new_name) {
            if no_replace {
                return Err(EEXIST);
            }
            if existing == ino {
                return Ok(());
            }
            match (self.node(ino)?.kind(), self.node(existing)?.kind()) {
                (Kind::File, Kind::Dir) => return Err(EISDIR),
                (Kind::Dir, Kind::File) => return Err(ENOTDIR),
                (Kind::Dir, Kind::Dir) if !self.dir(existing)?.entries.is_empty() => {
                    return Err(ENOTEMPTY)
                }
                _ => {}
            }
        }
        self.dir(new_parent)?;
        self.dir_mut(parent)?.entries.remove(name);
        self.dir_mut(new_parent)?
            .entries
            .insert(new_name.to_owned(), ino);
        Ok(())
    }

    /// A second name for the file `ino`.
    pub fn link(&mut self, ino: u64, new_parent: u64, new_name: &OsStr) -> Result<(), Errno> {
        if self.node(ino)?.kind() == Kind::Dir {
            return Err(EISDIR);
        }
        let dir = self.dir_mut(new_parent)?;
        if dir.entries.contains_key(new_name) {
            return Err(EEXIST);
        }
        dir.entries.insert(new_name.to_owned(), ino);
        Ok(())
    }

    /// Current entries of a directory, in name order.
    pub fn entries(&self, ino: u64) -> Result<Vec<(OsString, u64, Kind)>, Errno> {
        Ok(self
            .dir(ino)?
            .entries
            .iter()
            .filter_map(|(name, &i)| self.nodes.get(&i).map(|n| (name.clone(), i, n.kind())))
            .collect())
    }

    pub fn read(&self, ino: u64, offset: u64, size: u32) -> Result<&[u8], Errno> {
        match &self.node(ino)?.body {
            Body::File(f) => {
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(f.data.len());
                let end = start.saturating_add(size as usize).min(f.data.len());
                Ok(&f.data[start..end])
            }
            Body::Dir(_) => Err(EISDIR),
        }
    }

    pub fn write(&mut self, ino: u64, offset: u64, bytes: &[u8]) -> Result<u32, Errno> {
        let end = offset
            .checked_add(bytes.len() as u64)
            .filter(|&e| e <= MAX_FILE_BYTES)
            .ok_or(EFBIG)?;
        let (start, end) = (offset as usize, end as usize);
        let f = self.file_mut(ino)?;
        if f.data.len() < end {
            f.data.resize(end, 0);
        }
        f.data[start..end].copy_from_slice(bytes);
        f.mark(start, end);
        Ok(bytes.len() as u32)
    }

    /// Sets the size (truncate or extend with zeros).
    pub fn truncate(&mut self, ino: u64, size: u64) -> Result<(), Errno> {
        if size > MAX_FILE_BYTES {
            return Err(EFBIG);
        }
        let size = size as usize;
        let f = self.file_mut(ino)?;
        let old = f.data.len();
        f.data.resize(size, 0);
        f.mark(old.min(size), old.max(size));
        Ok(())
    }

    pub fn fallocate(&mut self, ino: u64, offset: u64, len: u64, mode: i32) -> Result<(), Errno> {
        let end = offset.checked_add(len).ok_or(EINVAL)?;
        match mode {
            // Preallocation that keeps the size changes nothing a reader can see.
            FALLOC_FL_KEEP_SIZE => {
                self.file_mut(ino)?;
                Ok(())
            }
            0 => {
                if end > self.node(ino)?.size() {
                    self.truncate(ino, end)?;
                }
                Ok(())
            }
            m if m == FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE => {
                let size = self.node(ino)?.size();
                let end = end.min(size);
                if offset < end {
                    let zeros = vec![0u8; (end - offset) as usize];
                    self.write(ino, offset, &zeros)?;
                }
                Ok(())
            }
            _ => Err(EOPNOTSUPP),
        }
    }

    /// fsync/fdatasync of a file: its bytes and size become durable. For a directory: its
    /// entries become durable.
    pub fn sync(&mut self, ino: u64) -> Result<(), Errno> {
        match &mut self.node_mut(ino)?.body {
            Body::File(f) => {
                f.synced.resize(f.data.len(), 0);
                if let Some((lo, hi)) = f.dirty.take() {
                    let hi = hi.min(f.data.len());
                    if lo < hi {
                        f.synced[lo..hi].copy_from_slice(&f.data[lo..hi]);
                    }
                }
            }
            Body::Dir(d) => d.synced = d.entries.clone(),
        }
        Ok(())
    }

    /// Power loss: everything not synced is gone.
    pub fn cut_power(&mut self) -> CutStats {
        let mut stats = CutStats::default();
        for node in self.nodes.values_mut() {
            match &mut node.body {
                Body::File(f) => {
                    if f.dirty.is_some() || f.data.len() != f.synced.len() {
                        stats.files_reverted += 1;
                        let (lo, hi) = f.dirty.take().unwrap_or((0, 0));
                        let unsynced_tail = f.data.len().saturating_sub(f.synced.len());
                        stats.bytes_dropped += (hi.saturating_sub(lo)).max(unsynced_tail) as u64;
                        f.data = f.synced.clone();
                    }
                }
                Body::Dir(d) => {
                    if d.entries != d.synced {
                        stats.dirs_reverted += 1;
                        d.entries = d.synced.clone();
                    }
                }
            }
        }
        // Keep what the root reaches through (now current = synced) entries.
        let mut reachable = HashSet::from([ROOT]);
        let mut stack = vec![ROOT];
        while let Some(ino) = stack.pop() {
            if let Some(Node {
                body: Body::Dir(d), ..
            }) = self.nodes.get(&ino)
            {
                for &child in d.entries.values() {
                    if reachable.insert(child) {
                        stack.push(child);
                    }
                }
            }
        }
        let before = self.nodes.len();
        self.nodes.retain(|ino, _| reachable.contains(ino));
        stats.inodes_forgotten = (before - self.nodes.len()) as u64;
        // Entries naming forgotten inodes cannot exist: every entry's target is reachable.
        stats
    }
}

impl FileBody {
    fn mark(&mut self, lo: usize, hi: usize) {
        self.dirty = Some(match self.dirty {
            Some((a, b)) => (a.min(lo), b.max(hi)),
            None => (lo, hi),
        });
    }
}

fn new_node(body: Body, perm: u16, uid: u32, gid: u32) -> Node {
    let now = SystemTime::now();
    Node {
        body,
        perm,
        uid,
        gid,
        mtime: now,
        ctime: now,
    }
}

#[cfg(test)]
mod tests;
