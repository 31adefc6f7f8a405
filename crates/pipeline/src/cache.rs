//! The cache: what `pipeline.lock` records for each stage, a stage's fingerprint as it would
//! run now, and every reason it must run again (as `dvc status` lists them).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use rebalance_core::contract::runner::{LockedStage, PipelineLock};
use rebalance_core::hash::{sha256_file, sha256_tree};
use serde::Serialize;

use crate::plan::Task;
use crate::util::shell_words;

/// SHA-256 of a file, or of a folder's files (recursively, hidden names skipped); None if absent.
pub fn hash_path(path: &Path) -> Result<Option<String>> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if meta.is_file() {
        return sha256_file(path).map(Some);
    }
    let mut files = Vec::new();
    collect_files(path, path, &mut files)?;
    files.sort();
    let hashed = files
        .iter()
        .map(|rel| Ok((rel.clone(), sha256_file(&path.join(rel))?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(sha256_tree(
        hashed.iter().map(|(a, b)| (a.as_str(), b.as_str())),
    )))
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect_files(root, &path, out)?;
        } else {
            let rel = path.strip_prefix(root).expect("under root");
            out.push(rel.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

/// The project folder's view of its stages: where programs are, what they hash to, and what
/// `pipeline.lock` says of them.
pub struct Cache {
    /// The folder commands run in (the one holding pipeline.toml).
    pub root: PathBuf,
    pub lock_path: PathBuf,
    pub force: bool,
    /// Where sibling stage binaries are looked for first (the runner's own folder).
    pub bin_dir: Option<PathBuf>,
    hashes: HashMap<PathBuf, String>,
}

impl Cache {
    pub fn new(root: &Path, lock_path: PathBuf, force: bool) -> Self {
        let bin_dir = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf));
        Self {
            root: root.to_path_buf(),
            lock_path,
            force,
            bin_dir,
            hashes: HashMap::new(),
        }
    }

    /// A path of the manifest, made absolute against the project folder.
    pub fn abs(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.root.join(p)
        }
    }

    pub fn read_lock(&self) -> Result<PipelineLock> {
        PipelineLock::read(&self.lock_path)
    }

    pub fn write_lock(&self, lock: &PipelineLock) -> Result<()> {
        lock.write(&self.lock_path)
    }

    /// The executable for `argv[0]`: a path (relative to the project), a sibling of this
    /// binary (the stage binaries), or a program on PATH.
    pub fn resolve_program(&self, task: &Task) -> Result<PathBuf> {
        let prog = &task.argv[0];
        if prog.contains('/') {
            let p = self.abs(Path::new(prog));
            if p.is_file() {
                return Ok(p);
            }
            bail!(
                "stage `{}`: program {} does not exist",
                task.key,
                p.display()
            );
        }
        let on_path = std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
            .unwrap_or_default();
        let found = self
            .bin_dir
            .iter()
            .chain(&on_path)
            .map(|dir| dir.join(prog))
            .find(|p| p.is_file());
        found.ok_or_else(|| {
            anyhow!(
                "stage `{}`: program `{prog}` is neither next to this runner ({}) nor on PATH; build the stages with `cargo build --release --workspace` (or `just build`)",
                task.key,
                self.bin_dir
                    .as_deref()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default()
            )
        })
    }

    fn hash_cached(&mut self, path: &Path) -> Result<Option<String>> {
        if let Some(h) = self.hashes.get(path) {
            return Ok(Some(h.clone()));
        }
        let h = hash_path(path)?;
        if let Some(h) = &h {
            self.hashes.insert(path.to_path_buf(), h.clone());
        }
        Ok(h)
    }

    /// The fingerprint of a task as it would run now (outs left empty).
    pub fn fingerprint(&mut self, task: &Task, program: &Path) -> Result<LockedStage> {
        let mut prog = BTreeMap::new();
        let h = self
            .hash_cached(program)?
            .ok_or_else(|| anyhow!("{} disappeared", program.display()))?;
        prog.insert(program.display().to_string(), h);
        Ok(LockedStage {
            cmd: task.argv.clone(),
            params: task.rendered_params(),
            program: prog,
            deps: self.deps_hashes(task)?,
            outs: BTreeMap::new(),
        })
    }

    /// The task's inputs → SHA-256: declared deps (which must exist), optional deps that
    /// exist, and files named on the command line (a swapped-in script, a data file) unless
    /// they are outputs of this stage.
    fn deps_hashes(&self, task: &Task) -> Result<BTreeMap<String, String>> {
        let mut deps = BTreeMap::new();
        for d in &task.deps {
            let h = hash_path(&self.abs(d))?.ok_or_else(|| {
                anyhow!(
                    "stage `{}` needs {}, which does not exist (an earlier stage makes it: run the whole chain, or that stage with -e)",
                    task.key,
                    d.display()
                )
            })?;
            deps.insert(d.display().to_string(), h);
        }
        for d in &task.optional_deps {
            if let Some(h) = hash_path(&self.abs(d))? {
                deps.insert(d.display().to_string(), h);
            }
        }
        for a in &task.argv[1..] {
            let p = Path::new(a);
            let abs = self.abs(p);
            let is_out = task.outs.iter().any(|o| p.starts_with(o));
            if !is_out && !deps.contains_key(a) && abs.is_file() {
                if let Some(h) = hash_path(&abs)? {
                    deps.insert(a.clone(), h);
                }
            }
        }
        Ok(deps)
    }

    fn outs_hashes(&self, task: &Task) -> Result<BTreeMap<String, Option<String>>> {
        task.outs
            .iter()
            .map(|o| Ok((o.display().to_string(), hash_path(&self.abs(o))?)))
            .collect()
    }

    /// Every reason the task must run; empty when the lock says it is up to date.
    pub fn staleness(
        &self,
        task: &Task,
        now: &LockedStage,
        lock: &PipelineLock,
    ) -> Result<Vec<Stale>> {
        let mut why = Vec::new();
        if self.force {
            why.push(Stale::Forced);
        }
        let Some(old) = lock.stages.get(&task.key) else {
            why.push(Stale::NotRunBefore);
            return Ok(why);
        };
        if old.cmd != now.cmd {
            why.push(Stale::Command {
                was: shell_words(&old.cmd),
                now: shell_words(&now.cmd),
            });
        }
        let params = changed_keys(&old.params, &now.params);
        if !params.is_empty() {
            why.push(Stale::Params { names: params });
        }
        let programs = changed_keys(&old.program, &now.program);
        if !programs.is_empty() {
            why.push(Stale::Program { paths: programs });
        }
        let deps = changed_keys(&old.deps, &now.deps);
        if !deps.is_empty() {
            why.push(Stale::Deps { paths: deps });
        }
        for (out, h) in self.outs_hashes(task)? {
            match h {
                None => why.push(Stale::OutMissing { path: out }),
                Some(h) if old.outs.get(&out) != Some(&h) => {
                    why.push(Stale::OutEdited { path: out })
                }
                _ => {}
            }
        }
        Ok(why)
    }

    /// A task's fingerprint and staleness as it stands now (its program resolved).
    pub fn check(
        &mut self,
        task: &Task,
        lock: &PipelineLock,
    ) -> Result<(PathBuf, LockedStage, Vec<Stale>)> {
        let program = self.resolve_program(task)?;
        let now = self.fingerprint(task, &program)?;
        let why = self.staleness(task, &now, lock)?;
        Ok((program, now, why))
    }

    /// Each task's staleness as it stands now, without running anything (`pipeline status`,
    /// `--dry-run`). A task whose inputs do not exist yet (an earlier stage makes them) is
    /// reported as such.
    pub fn status(&mut self, tasks: &[Task]) -> Result<Vec<(String, Result<Vec<Stale>>)>> {
        let lock = self.read_lock()?;
        Ok(tasks
            .iter()
            .map(|task| {
                let why = self.check(task, &lock).map(|(_, _, why)| why);
                (task.key.clone(), why)
            })
            .collect())
    }

    /// The hashes of a finished stage's outputs; every declared output must exist.
    pub fn finished_outs(&self, task: &Task, log: &Path) -> Result<BTreeMap<String, String>> {
        let mut outs = BTreeMap::new();
        for (out, h) in self.outs_hashes(task)? {
            let h = h.ok_or_else(|| {
                anyhow!(
                    "stage `{}` exited 0 but did not write its declared output {}; its log: {}",
                    task.key,
                    out,
                    log.display()
                )
            })?;
            outs.insert(out, h);
        }
        Ok(outs)
    }
}

/// Why a stage must run: one item per kind of change, as `dvc status` lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum Stale {
    /// `--force` was given.
    Forced,
    /// `pipeline.lock` has no entry for the stage.
    NotRunBefore,
    /// The rendered command line differs.
    Command { was: String, now: String },
    /// These parameters have other values (or were added or removed).
    Params { names: Vec<String> },
    /// The program (a stage binary, a swapped-in script) was rebuilt or replaced.
    Program { paths: Vec<String> },
    /// These inputs changed, appeared or disappeared.
    Deps { paths: Vec<String> },
    /// A declared output is gone.
    OutMissing { path: String },
    /// `--executor slurm`: these earlier stages run, so this one's inputs will change.
    Upstream { stages: Vec<String> },
    /// A declared output no longer hashes as the stage left it.
    OutEdited { path: String },
}

impl std::fmt::Display for Stale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stale::Forced => f.write_str("--force"),
            Stale::NotRunBefore => f.write_str("not run before"),
            Stale::Command { was, now } => write!(f, "command changed (was `{was}`, now `{now}`)"),
            Stale::Params { names } => write!(f, "parameters changed: {}", names.join(", ")),
            Stale::Program { paths } => write!(f, "program changed: {}", paths.join(", ")),
            Stale::Deps { paths } => write!(f, "inputs changed: {}", paths.join(", ")),
            Stale::OutMissing { path } => write!(f, "output {path} is missing"),
            Stale::Upstream { stages } => write!(f, "runs after {}", stages.join(", ")),
            Stale::OutEdited { path } => write!(f, "output {path} changed since it was made"),
        }
    }
}

/// Every reason, joined for one log line.
pub fn describe(why: &[Stale]) -> String {
    why.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Keys whose values differ between two maps, or that only one of them has (sorted).
fn changed_keys(old: &BTreeMap<String, String>, now: &BTreeMap<String, String>) -> Vec<String> {
    let mut keys: Vec<String> = now
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .chain(old.keys().filter(|k| !now.contains_key(*k)).cloned())
        .collect();
    keys.sort();
    keys.dedup();
    keys
}
