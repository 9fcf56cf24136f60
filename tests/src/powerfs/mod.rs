//! A FUSE file system that can lose power.
//!
//! Everything lives in memory ([`model`]): reads see every write, but only what was made
//! durable the POSIX way (fsync/fdatasync of a file for its bytes, fsync of a directory for
//! its entries) survives [`PowerFs::cut_power`]. A broker whose data directory is a
//! `PowerFs` mount, killed with SIGKILL and then put through `cut_power`, finds exactly what
//! a machine that lost power would find on its disk — unlike a plain `kill -9`, which keeps
//! the page cache and so cannot tell a broker that fsyncs from one that does not.

mod fuse;
pub mod model;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};

pub use model::CutStats;
use model::Model;

/// A mounted power-loss file system.
pub struct PowerFs {
    model: Arc<Mutex<Model>>,
    mountpoint: PathBuf,
    session: Option<fuser::BackgroundSession>,
}

/// Why FUSE cannot be used on this machine, if it cannot (checked before trying to mount;
/// a failed mount is the other reason to skip).
pub fn unavailable_reason() -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some(
            "no /dev/fuse (FUSE kernel module not loaded or not in this container)".into(),
        );
    }
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| crate::procstat::status_field_kib(&s, "Uid"))
        == Some(0);
    let fusermount = ["/usr/bin/fusermount3", "/bin/fusermount3"]
        .iter()
        .any(|p| Path::new(p).exists());
    if !root && !fusermount {
        return Some("not root and no fusermount3 (Debian package fuse3)".into());
    }
    None
}

impl PowerFs {
    /// Mounts an empty file system at `mountpoint` (an existing, empty directory).
    pub fn mount(mountpoint: &Path) -> Result<PowerFs> {
        let mut fs = PowerFs {
            model: Arc::new(Mutex::new(Model::new())),
            mountpoint: mountpoint.to_path_buf(),
            session: None,
        };
        fs.attach()?;
        Ok(fs)
    }

    fn attach(&mut self) -> Result<()> {
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("strata-powerfs".into()),
            fuser::MountOption::RW,
        ];
        let fs = fuse::PowerFuse {
            model: self.model.clone(),
        };
        let session = fuser::spawn_mount(fs, &self.mountpoint, &config)
            .with_context(|| format!("mount FUSE at {}", self.mountpoint.display()))?;
        self.session = Some(session);
        Ok(())
    }

    fn detach(&mut self) -> Result<()> {
        if let Some(session) = self.session.take() {
            session
                .umount_and_join()
                .with_context(|| format!("unmount {}", self.mountpoint.display()))?;
        }
        Ok(())
    }

    /// Loses power: unmounts (nothing may be using the mount: kill the broker first), drops
    /// every unsynced write, create, rename and unlink, and mounts again with what a disk
    /// would have kept.
    pub fn cut_power(&mut self) -> Result<CutStats> {
        self.detach()?;
        let stats = self
            .model
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .cut_power();
        self.attach()?;
        Ok(stats)
    }

    pub fn path(&self) -> &Path {
        &self.mountpoint
    }
}

impl Drop for PowerFs {
    fn drop(&mut self) {
        if let Err(e) = self.detach() {
            eprintln!("powerfs: {e:#}");
        }
    }
}
