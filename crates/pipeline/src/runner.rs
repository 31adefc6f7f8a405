//! Run tasks as processes: resolve the program, skip what `pipeline.lock` says is unchanged,
//! stream output live into a per-stage log, stop at the first failure naming its log.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rebalance_core::contract::runs::StageStatus;
use rebalance_core::hash::{sha256_file, sha256_tree};
use rebalance_core::remove_path;
use serde::{Deserialize, Serialize};

use crate::guard::{Interrupted, Stop};
use crate::plan::Task;
use crate::tracking::Tracker;

/// What `pipeline.lock` records for one stage: enough to tell whether it must run again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageLock {
    pub cmd: Vec<String>,
    pub params: BTreeMap<String, String>,
    /// Resolved program path → SHA-256.
    pub program: BTreeMap<String, String>,
    /// Inputs (declared deps, and files named on the command line) → SHA-256.
    pub deps: BTreeMap<String, String>,
    /// Outputs → SHA-256 when the stage finished.
    pub outs: BTreeMap<String, String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Lock {
    pub version: u32,
    pub stages: BTreeMap<String, StageLock>,
}

impl Lock {
    pub fn read(path: &Path) -> Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "parsing {} (delete it, or run with --force, to rebuild it)",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Lock {
                version: 1,
                ..Default::default()
            }),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).expect("lock serialises");
        rebalance_core::write_atomic(path, &json)
    }
}

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

pub struct Runner {
    /// The folder commands run in (the one holding pipeline.toml).
    pub root: PathBuf,
    pub lock_path: PathBuf,
    pub force: bool,
    /// Echo stage output to the terminal (it always goes to the log).
    pub echo: bool,
    /// Where sibling stage binaries are looked for first (the runner's own folder).
    pub bin_dir: Option<PathBuf>,
    /// Set by SIGINT/SIGTERM: the running stage is stopped and the run ends KILLED.
    pub stop: Stop,
    /// `--executor slurm`: submit the stale stages as Slurm jobs, with these resource
    /// overrides; None runs them here, one after another.
    pub slurm: Option<crate::slurm::Overrides>,
    hashes: HashMap<PathBuf, String>,
}

impl Runner {
    pub fn new(root: &Path, lock_path: PathBuf, force: bool, echo: bool) -> Self {
        let bin_dir = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf));
        Self {
            root: root.to_path_buf(),
            lock_path,
            force,
            echo,
            bin_dir,
            stop: Stop::never(),
            slurm: None,
            hashes: HashMap::new(),
        }
    }

    fn abs(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.root.join(p)
        }
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
        if let Some(dir) = &self.bin_dir {
            let p = dir.join(prog);
            if p.is_file() {
                return Ok(p);
            }
        }
        if let Some(paths) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&paths) {
                let p = dir.join(prog);
                if p.is_file() {
                    return Ok(p);
                }
            }
        }
        bail!(
            "stage `{}`: program `{prog}` is neither next to this runner ({}) nor on PATH; build the stages with `cargo build --release --workspace` (or `just build`)",
            task.key,
            self.bin_dir
                .as_deref()
                .map(|d| d.display().to_string())
                .unwrap_or_default()
        )
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
    pub fn fingerprint(&mut self, task: &Task, program: &Path) -> Result<StageLock> {
        let mut prog = BTreeMap::new();
        let h = self
            .hash_cached(program)?
            .ok_or_else(|| anyhow!("{} disappeared", program.display()))?;
        prog.insert(program.display().to_string(), h);
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
        // Files named on the command line (a swapped-in script, a data file) count as inputs,
        // unless they are outputs of this stage.
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
        Ok(StageLock {
            cmd: task.argv.clone(),
            params: task.rendered_params(),
            program: prog,
            deps,
            outs: BTreeMap::new(),
        })
    }

    fn outs_hashes(&self, task: &Task) -> Result<BTreeMap<String, Option<String>>> {
        task.outs
            .iter()
            .map(|o| Ok((o.display().to_string(), hash_path(&self.abs(o))?)))
            .collect()
    }

    /// Every reason the task must run; empty when the lock says it is up to date.
    pub fn staleness(&self, task: &Task, now: &StageLock, lock: &Lock) -> Result<Vec<Stale>> {
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

    /// Each task's staleness as it stands now, without running anything (`pipeline status`,
    /// `--dry-run`). A task whose inputs do not exist yet (an earlier stage makes them) is
    /// reported as such.
    pub fn status(&mut self, tasks: &[Task]) -> Result<Vec<(String, Result<Vec<Stale>>)>> {
        let lock = Lock::read(&self.lock_path)?;
        let mut out = Vec::new();
        for task in tasks {
            let why = self
                .resolve_program(task)
                .and_then(|program| self.fingerprint(task, &program))
                .and_then(|now| self.staleness(task, &now, &lock));
            out.push((task.key.clone(), why));
        }
        Ok(out)
    }

    /// Run every task in order, recording each in the tracker.
    pub fn run_all(&mut self, tasks: &[Task], tracker: &mut Tracker) -> Result<()> {
        if let Some(over) = self.slurm.clone() {
            return self.run_all_slurm(tasks, tracker, &over);
        }
        let mut lock = Lock::read(&self.lock_path)?;
        lock.version = 1;
        for (i, task) in tasks.iter().enumerate() {
            self.stop.check()?;
            self.recover_aside(task)?;
            let program = self.resolve_program(task)?;
            let mut now = self.fingerprint(task, &program)?;
            let head = format!("[{}/{}] {}", i + 1, tasks.len(), task.key);
            let why = self.staleness(task, &now, &lock)?;
            if why.is_empty() {
                eprintln!("{head}: cached (unchanged command, parameters, program and inputs)");
                tracker.stage(task, StageStatus::Cached, 0.0, None)?;
            } else {
                eprintln!("{head}: running ({})", describe(&why));
                now.outs = self.run_one(task, &program, &head, tracker, &mut lock)?;
                lock.stages.insert(task.key.clone(), now);
                lock.write(&self.lock_path)?;
            }
            tracker.collect_metrics(task, &self.root)?;
        }
        Ok(())
    }

    /// Run one stale task with its previous outputs set aside; the hashes of its new outputs.
    /// On failure the previous outputs come back and the task leaves the lock.
    fn run_one(
        &mut self,
        task: &Task,
        program: &Path,
        head: &str,
        tracker: &mut Tracker,
        lock: &mut Lock,
    ) -> Result<BTreeMap<String, String>> {
        let log = tracker.log_path(task);
        eprintln!("  log: {}\n  $ {}", log.display(), shell_words(&task.argv));
        let started = Instant::now();
        // The previous outputs move aside while the stage runs, so nothing stale survives in
        // them (a swapped-in program may write fewer files), and come back if the stage fails.
        let aside = self.set_aside(task)?;
        let result = self
            .execute(task, program, &log, tracker.env())
            .and_then(|()| self.finished_outs(task, &log));
        let secs = started.elapsed().as_secs_f64();
        match result {
            Ok(outs) => {
                drop_aside(&aside);
                eprintln!("{head}: done in {secs:.1} s");
                tracker.stage(task, StageStatus::Ran, secs, Some(&log))?;
                Ok(outs)
            }
            Err(e) => {
                restore_aside(&aside)?;
                let status = if e.is::<Interrupted>() {
                    let back = if aside.is_empty() {
                        "it had no earlier outputs"
                    } else {
                        "its earlier outputs are back in place"
                    };
                    eprintln!("{head}: {e} after {secs:.1} s; {back}");
                    StageStatus::Killed
                } else {
                    StageStatus::Failed
                };
                tracker.stage(task, status, secs, Some(&log))?;
                lock.stages.remove(&task.key);
                lock.write(&self.lock_path)?;
                Err(e)
            }
        }
    }

    /// Where an output waits while its stage runs: `.<name>.pipeline-prev` beside it.
    fn aside_of(&self, out: &Path) -> Option<(PathBuf, PathBuf)> {
        let path = self.abs(out);
        let name = path.file_name()?.to_string_lossy().into_owned();
        let backup = path.with_file_name(format!(".{name}.pipeline-prev"));
        Some((path, backup))
    }

    /// Outputs a runner killed outright (SIGKILL, power loss) left set aside: stages write
    /// their outputs atomically, so an output that is missing while its set-aside copy exists
    /// was never replaced, and the copy goes back. Without this the next run would drop it.
    pub(crate) fn recover_aside(&self, task: &Task) -> Result<()> {
        for out in &task.outs {
            let Some((path, backup)) = self.aside_of(out) else {
                continue;
            };
            if !path.exists() && backup.exists() {
                std::fs::rename(&backup, &path).with_context(|| {
                    format!("restoring {} from {}", path.display(), backup.display())
                })?;
                eprintln!(
                    "restored {} from {}, set aside by a run that did not finish",
                    path.display(),
                    backup.display()
                );
            }
        }
        Ok(())
    }

    /// Move each existing output to a hidden sibling (`.<name>.pipeline-prev`).
    pub(crate) fn set_aside(&self, task: &Task) -> Result<Vec<(PathBuf, PathBuf)>> {
        let mut moved = Vec::new();
        for out in &task.outs {
            let Some((path, backup)) = self.aside_of(out) else {
                continue;
            };
            remove_path(&backup)?;
            if path.exists() {
                std::fs::rename(&path, &backup).with_context(|| {
                    format!("moving {} aside to {}", path.display(), backup.display())
                })?;
                moved.push((path, backup));
            }
        }
        Ok(moved)
    }

    /// The hashes of a finished stage's outputs; every declared output must exist.
    pub(crate) fn finished_outs(
        &self,
        task: &Task,
        log: &Path,
    ) -> Result<BTreeMap<String, String>> {
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

    fn execute(
        &self,
        task: &Task,
        program: &Path,
        log_path: &Path,
        env: Vec<(String, String)>,
    ) -> Result<()> {
        if let Some(dir) = log_path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut log = File::create(log_path)
            .with_context(|| format!("creating log {}", log_path.display()))?;
        writeln!(log, "$ {}", shell_words(&task.argv))?;
        let log = Arc::new(Mutex::new(log));
        let mut cmd = Command::new(program);
        cmd.args(&task.argv[1..])
            .current_dir(&self.root)
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: the runner decides what a Ctrl-C does to it, and can
            // stop it with everything it started.
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to send SIGTERM to the
        // stage when the runner dies (even by SIGKILL), so no stage outlives its runner.
        #[cfg(target_os = "linux")]
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("stage `{}`: starting {}", task.key, program.display()))?;
        let echo = self.echo;
        let pump = |mut src: Box<dyn Read + Send>, to_stdout: bool| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                loop {
                    let n = match src.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let _ = log.lock().map(|mut f| f.write_all(&buf[..n]));
                    if echo {
                        if to_stdout {
                            let _ = std::io::stdout().write_all(&buf[..n]);
                        } else {
                            let _ = std::io::stderr().write_all(&buf[..n]);
                        }
                    }
                }
            })
        };
        let out = pump(Box::new(child.stdout.take().expect("piped")), true);
        let err = pump(Box::new(child.stderr.take().expect("piped")), false);
        let (status, stopped) = self.wait(&mut child)?;
        let _ = out.join();
        let _ = err.join();
        if let Ok(mut f) = log.lock() {
            match &stopped {
                Some(i) => {
                    let _ = writeln!(f, "[pipeline] {i}: stage stopped ({status})");
                }
                None => {
                    let _ = writeln!(f, "[pipeline] exit: {status}");
                }
            }
            let _ = f.sync_all();
        }
        if let Some(i) = stopped {
            return Err(i.into());
        }
        if !status.success() {
            let tail = last_lines(log_path, 12);
            bail!(
                "stage `{}` failed ({status}); earlier outputs are kept. Its log: {}\n--- last lines ---\n{tail}",
                task.key,
                log_path.display()
            );
        }
        Ok(())
    }

    /// Wait for a stage; on SIGINT/SIGTERM to the runner, stop its process group (SIGTERM,
    /// then SIGKILL after 10 s) and say so.
    fn wait(&self, child: &mut Child) -> Result<(ExitStatus, Option<Interrupted>)> {
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok((status, None));
            }
            if let Some(i) = self.stop.requested() {
                eprintln!("{i}: stopping the running stage (pid {})", child.id());
                let group = -(child.id() as i32);
                // SAFETY: kill() on the stage's own process group.
                unsafe { libc::kill(group, libc::SIGTERM) };
                let deadline = Instant::now() + Duration::from_secs(10);
                while Instant::now() < deadline {
                    if let Some(status) = child.try_wait()? {
                        return Ok((status, Some(i)));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                // SAFETY: as above.
                unsafe { libc::kill(group, libc::SIGKILL) };
                return Ok((child.wait()?, Some(i)));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
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

pub(crate) fn drop_aside(moved: &[(PathBuf, PathBuf)]) {
    for (_, backup) in moved {
        if let Err(e) = remove_path(backup) {
            eprintln!("warning: {e:#}");
        }
    }
}

/// Put the previous outputs back after a failure (whatever the failed run left goes).
pub(crate) fn restore_aside(moved: &[(PathBuf, PathBuf)]) -> Result<()> {
    for (path, backup) in moved {
        remove_path(path)?;
        std::fs::rename(backup, path)
            .with_context(|| format!("restoring {} from {}", path.display(), backup.display()))?;
    }
    Ok(())
}

/// The last `n` lines of a log (empty when it cannot be read).
pub fn last_lines(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// argv as a shell line (for logs and messages).
pub fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=,:+@%".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
