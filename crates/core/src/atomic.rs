//! Atomic writes: a stage that fails or is killed leaves the previous outputs intact.
//!
//! Single files go through a temporary file in the same folder and a rename.
//! A whole stage output folder is built in a hidden sibling folder ([`StagedDir`]) and then
//! swapped in with one `renameat2(RENAME_EXCHANGE)`, so readers see either the old folder or
//! the new one, never a mix.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Write `bytes` to `path` atomically (temporary file in the same folder, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir).with_context(|| format!("creating folder {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    // tempfile creates 0600; outputs are meant to be shared like any other file.
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o644))
        .with_context(|| format!("setting permissions of {}", path.display()))?;
    tmp.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("syncing {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("renaming into {}", path.display()))?;
    Ok(())
}

/// An output folder under construction. Files go into [`StagedDir::path`]; nothing is visible
/// at the final location until [`StagedDir::commit`]. Dropped without commit, it is removed.
pub struct StagedDir {
    staging: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl StagedDir {
    /// Start building the folder that will replace `target`.
    pub fn new(target: &Path) -> Result<Self> {
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = target
            .file_name()
            .with_context(|| format!("output path {} has no folder name", target.display()))?
            .to_string_lossy()
            .into_owned();
        fs::create_dir_all(&parent)
            .with_context(|| format!("creating folder {}", parent.display()))?;
        let staging = tempfile::Builder::new()
            .prefix(&format!(".{name}.staging-"))
            .tempdir_in(&parent)
            .with_context(|| format!("creating a staging folder in {}", parent.display()))?
            .keep();
        fs::set_permissions(&staging, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("setting permissions of {}", staging.display()))?;
        Ok(Self {
            staging,
            target: target.to_path_buf(),
            committed: false,
        })
    }

    /// Where to write the new files.
    pub fn path(&self) -> &Path {
        &self.staging
    }

    /// Write one file into the staging folder.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<PathBuf> {
        let path = self.staging.join(name);
        write_atomic(&path, bytes)?;
        Ok(path)
    }

    /// Swap the staged folder into place. The previous folder, if any, is removed afterwards.
    pub fn commit(mut self) -> Result<()> {
        swap_into(&self.staging, &self.target)?;
        self.committed = true;
        Ok(())
    }
}

/// The hidden sibling a long-running stage works in, so that a killed run can be resumed:
/// `artifacts/gan` -> `artifacts/.gan.partial`.
pub fn partial_dir(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}.partial"))
}

/// Remove a file, a folder with its contents, or a link; nothing when it does not exist.
pub fn remove_path(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(_) => return Ok(()),
    }
    .with_context(|| format!("removing {}", path.display()))
}

/// Replace `target` by the folder `src` in one step (`renameat2(RENAME_EXCHANGE)`), then
/// remove the previous `target`. Without a previous `target`, a plain rename.
pub fn swap_into(src: &Path, target: &Path) -> Result<()> {
    if let Ok(dir) = fs::File::open(src) {
        let _ = dir.sync_all();
    }
    if target.exists() {
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            src,
            rustix::fs::CWD,
            target,
            rustix::fs::RenameFlags::EXCHANGE,
        )
        .or_else(|_| {
            // Filesystems without RENAME_EXCHANGE: move the old folder aside first.
            let aside = src.with_extension("old");
            fs::rename(target, &aside)?;
            fs::rename(src, target)?;
            fs::rename(&aside, src)
        })
        .with_context(|| format!("swapping the new output into {}", target.display()))?;
        // `src` now holds the previous output.
        fs::remove_dir_all(src)
            .with_context(|| format!("removing the previous output {}", src.display()))?;
    } else {
        fs::rename(src, target)
            .with_context(|| format!("moving the new output into {}", target.display()))?;
    }
    Ok(())
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.staging);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_dir_replaces_whole_folder_and_uncommitted_leaves_old() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("out");
        let s = StagedDir::new(&target).unwrap();
        s.write("a.txt", b"one").unwrap();
        s.write("b.txt", b"one").unwrap();
        s.commit().unwrap();
        assert_eq!(fs::read(target.join("a.txt")).unwrap(), b"one");

        // A second run that fails half-way: the old folder is untouched.
        {
            let s = StagedDir::new(&target).unwrap();
            s.write("a.txt", b"two").unwrap();
        }
        assert_eq!(fs::read(target.join("a.txt")).unwrap(), b"one");
        assert_eq!(fs::read(target.join("b.txt")).unwrap(), b"one");

        // A run that commits replaces everything, stale files included.
        let s = StagedDir::new(&target).unwrap();
        s.write("a.txt", b"three").unwrap();
        s.commit().unwrap();
        assert_eq!(fs::read(target.join("a.txt")).unwrap(), b"three");
        assert!(!target.join("b.txt").exists());
        // No staging folders are left behind.
        let left: Vec<_> = fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "only the output folder remains: {left:?}");
    }

    #[test]
    fn write_atomic_overwrites() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("x.json");
        write_atomic(&p, b"1").unwrap();
        write_atomic(&p, b"22").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"22");
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
    }
}
