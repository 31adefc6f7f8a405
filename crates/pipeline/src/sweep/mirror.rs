//! The folders that stand in for the project folder while a sweep's values run side by side
//! as Slurm job array tasks.

use std::path::Path;

use anyhow::{bail, Context, Result};
use rebalance_core::contract::layout::RUNS;
use rebalance_core::contract::runner::{PIPELINE_LOCK, SWEEPS};

use crate::util::copy_file as copy;

/// A folder that stands in for the project folder `root` while one value of a sweep runs in a
/// Slurm job (`pipeline sweep --executor slurm`): the manifest and `pipeline.lock` copied, the
/// artifacts folder a hard-linked copy without its run records and sweeps (stages replace
/// their outputs by rename, so nothing is written through a link), every other entry a
/// symlink. The value's run then finds cached every stage that its parameter does not touch,
/// and runs the others beside the other values' jobs. Built afresh each time.
pub fn mirror(
    root: &Path,
    manifest: &Path,
    lock: &Path,
    artifacts: &Path,
    dest: &Path,
) -> Result<()> {
    if artifacts.is_absolute()
        || artifacts
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        bail!(
            "a sweep on Slurm needs the artifacts folder inside the project folder, as a plain relative path (not {})",
            artifacts.display()
        );
    }
    if dest.exists() {
        std::fs::remove_dir_all(dest).with_context(|| format!("clearing {}", dest.display()))?;
    }
    let rest: Vec<std::ffi::OsString> = artifacts
        .components()
        .map(|c| c.as_os_str().to_os_string())
        .collect();
    let manifest_name = manifest.file_name().unwrap_or_default();
    mirror_level(root, dest, &rest, &|name| name == manifest_name)?;
    copy(manifest, &dest.join(manifest_name))?;
    if lock.is_file() {
        copy(lock, &dest.join(PIPELINE_LOCK))?;
    }
    Ok(())
}

fn mirror_level(
    src: &Path,
    dst: &Path,
    rest: &[std::ffi::OsString],
    skip: &dyn Fn(&std::ffi::OsStr) -> bool,
) -> Result<()> {
    std::fs::create_dir_all(dst).with_context(|| format!("creating {}", dst.display()))?;
    for entry in std::fs::read_dir(src).with_context(|| format!("listing {}", src.display()))? {
        let name = entry?.file_name();
        if skip(&name) || name == PIPELINE_LOCK {
            continue;
        }
        let (from, to) = (src.join(&name), dst.join(&name));
        if Some(&name) == rest.first() {
            if rest.len() == 1 {
                link_tree(&from, &to, true)?;
            } else {
                mirror_level(&from, &to, &rest[1..], &|_| false)?;
            }
        } else {
            std::os::unix::fs::symlink(&from, &to)
                .with_context(|| format!("linking {} to {}", to.display(), from.display()))?;
        }
    }
    Ok(())
}

/// A copy of the folder `src` whose files are hard links (copies where a link fails); at the
/// top, without `runs/`, `sweeps/` and hidden entries (the lock, work folders).
fn link_tree(src: &Path, dst: &Path, top: bool) -> Result<()> {
    std::fs::create_dir_all(dst).with_context(|| format!("creating {}", dst.display()))?;
    for entry in std::fs::read_dir(src).with_context(|| format!("listing {}", src.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        let n = name.to_string_lossy();
        if top && (n == RUNS || n == SWEEPS || n.starts_with('.')) {
            continue;
        }
        let (from, to) = (entry.path(), dst.join(&name));
        if entry.file_type()?.is_dir() {
            link_tree(&from, &to, false)?;
        } else if std::fs::hard_link(&from, &to).is_err() {
            copy(&from, &to)?;
        }
    }
    Ok(())
}
