//! `--executor slurm`: the same plan, hashes and cache as the local executor, with every stale
//! stage submitted as one `sbatch` job (a job array plus a merge job for stages that declare
//! `array`), its upstream stages' jobs as `--dependency=afterok:…`. Independent stages run at
//! the same time when the cluster has room. The runner then waits on `scontrol show job`,
//! echoes the jobs' logs, and does each finished stage's bookkeeping (outputs hashed into
//! `pipeline.lock`, the run record, MLflow) as the local executor does. A failed job's
//! dependants are cancelled; SIGINT/SIGTERM `scancel`s every job of the run.
//!
//! The runner and the jobs must share the project folder (as on any cluster with a shared
//! home or scratch file system).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rebalance_core::contract::runs::{SlurmJob, StageStatus};

use crate::guard::Interrupted;
use crate::plan::Task;
use crate::runner::{describe, shell_words, Lock, Runner, Stale};
use crate::spec::{Resources, Spec};
use crate::tracking::Tracker;

/// `-P resources.<key>=…` (every stage) and `-P <entry>.resources.<key>=…` (one entry point).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    pub all: Resources,
    pub entries: BTreeMap<String, Resources>,
}

impl Overrides {
    /// Take the resource overrides out of `-P` pairs; the rest are parameters.
    pub fn split(
        spec: &Spec,
        params: &[(String, String)],
    ) -> Result<(Vec<(String, String)>, Overrides)> {
        let mut rest = Vec::new();
        let mut o = Overrides::default();
        for (k, v) in params {
            if let Some(key) = k.strip_prefix("resources.") {
                o.all.set(key, v)?;
            } else if let Some((entry, key)) = k.split_once(".resources.") {
                spec.entry(entry)
                    .with_context(|| format!("-P {k}: no such entry point"))?;
                o.entries
                    .entry(entry.to_string())
                    .or_default()
                    .set(key, v)?;
            } else {
                rest.push((k.clone(), v.clone()));
            }
        }
        Ok((rest, o))
    }

    /// What a task's job asks for: the manifest's, then these overrides; a command with
    /// `--device cuda` gets one GPU unless `gpus` is set.
    pub fn resolve(&self, task: &Task) -> Resources {
        let mut r = task.resources.overlaid(&self.all);
        if let Some(e) = self.entries.get(&task.entry) {
            r = r.overlaid(e);
        }
        if r.gpus.is_none() && asks_for_cuda(&task.argv) {
            r.gpus = Some(1);
        }
        r
    }
}

fn asks_for_cuda(argv: &[String]) -> bool {
    argv.windows(2)
        .any(|w| w[0] == "--device" && w[1].starts_with("cuda"))
        || argv.iter().any(|a| a.starts_with("--device=cuda"))
}

/// The `sbatch` options for a request.
pub fn sbatch_options(r: &Resources) -> Vec<String> {
    let mut o = Vec::new();
    if let Some(c) = r.cpus {
        o.push(format!("--cpus-per-task={c}"));
    }
    if let Some(m) = r.mem.as_deref().filter(|m| !m.is_empty()) {
        o.push(format!("--mem={m}"));
    }
    if let Some(g) = r.gpus.filter(|&g| g > 0) {
        o.push(format!("--gpus={g}"));
    }
    if let Some(t) = r.time.as_deref().filter(|t| !t.is_empty()) {
        o.push(format!("--time={t}"));
    }
    if let Some(p) = r.partition.as_deref().filter(|p| !p.is_empty()) {
        o.push(format!("--partition={p}"));
    }
    o
}

/// A word for `sh`: single-quoted unless plain.
pub fn sh_quote(a: &str) -> String {
    shell_words(std::slice::from_ref(&a.to_string()))
}

/// The job's shell command: the stage's command line in the log, the thread count from the
/// allocation (unless OMP_NUM_THREADS is set), then the program. `{task}` becomes the array
/// task's index.
fn job_script(program: &Path, argv: &[String]) -> String {
    let shown = shell_words(argv).replace('\'', "'\\''");
    let words: Vec<String> = std::iter::once(program.display().to_string())
        .chain(argv[1..].iter().cloned())
        .map(|a| sh_quote(&a).replace("{task}", "'\"$SLURM_ARRAY_TASK_ID\"'"))
        .collect();
    format!(
        "echo '$ {shown}'; export OMP_NUM_THREADS=\"${{OMP_NUM_THREADS:-${{SLURM_CPUS_PER_TASK:-1}}}}\"; exec {}",
        words.join(" ")
    )
}

/// Run a Slurm command; its stdout, or its own error message.
fn slurm(program: &str, args: &[String], env: &[(String, String)]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .envs(env.iter().cloned())
        .output()
        .with_context(|| {
            format!("starting `{program}` (is Slurm's client installed and on PATH? apt-get install slurm-client)")
        })?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
        bail!(
            "`{program} {}` failed ({}): {msg}",
            shell_words(args),
            out.status
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Ask Slurm whether it could run a request at all (`sbatch --test-only`): unknown
/// partitions, more CPUs, memory or GPUs than any node has, bad time limits fail here with
/// Slurm's own message, before anything is submitted.
pub fn check_feasible(stage: &str, r: &Resources, root: &Path) -> Result<()> {
    let mut args = vec![
        "--test-only".to_string(),
        format!("--chdir={}", root.display()),
    ];
    args.extend(sbatch_options(r));
    args.extend(["--wrap".to_string(), "true".to_string()]);
    let out = Command::new("sbatch").args(&args).output().context(
        "starting `sbatch` (is Slurm's client installed and on PATH? apt-get install slurm-client)",
    )?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr)
            .trim()
            .replace('\n', "; ");
        bail!(
            "stage `{stage}`: Slurm refuses its request ({}): {msg}. Nothing was submitted; change pipeline.toml's resources or -P {stage}.resources.<key>=…",
            sbatch_options(r).join(" ")
        );
    }
    Ok(())
}

/// What `scontrol show job -o` says about one job or array task.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobInfo {
    /// `123`, or `123_4` for an array task.
    pub id: String,
    pub state: String,
    pub start: Option<String>,
    pub end: Option<String>,
    pub node: Option<String>,
    pub exit_code: String,
    pub reason: String,
}

impl JobInfo {
    pub fn terminal(&self) -> bool {
        !matches!(
            self.state.as_str(),
            "PENDING"
                | "RUNNING"
                | "CONFIGURING"
                | "COMPLETING"
                | "SUSPENDED"
                | "REQUEUED"
                | "RESIZING"
                | "SIGNALING"
                | "STAGE_OUT"
                | "REQUEUE_HOLD"
                | "REQUEUE_FED"
                | "RESV_DEL_HOLD"
                | "STOPPED"
        )
    }
}

/// Parse `scontrol show job -o` lines (one job or array task per line, `Key=Value` words).
pub fn parse_jobs(text: &str) -> Vec<JobInfo> {
    let mut jobs = Vec::new();
    for line in text.lines().filter(|l| l.contains("JobId=")) {
        let kv: HashMap<&str, &str> = line
            .split_whitespace()
            .filter_map(|w| w.split_once('='))
            .collect();
        let get = |k: &str| kv.get(k).copied().unwrap_or_default().to_string();
        let time = |k: &str| {
            kv.get(k)
                .filter(|v| !matches!(**v, "Unknown" | "None" | "N/A" | "(null)"))
                .map(|v| v.to_string())
        };
        let id = match (kv.get("ArrayJobId"), kv.get("ArrayTaskId")) {
            (Some(a), Some(t)) => format!("{a}_{t}"),
            _ => get("JobId"),
        };
        jobs.push(JobInfo {
            id,
            state: get("JobState"),
            start: time("StartTime"),
            end: time("EndTime"),
            node: kv
                .get("NodeList")
                .filter(|v| **v != "(null)")
                .map(|v| v.to_string()),
            exit_code: get("ExitCode"),
            reason: get("Reason"),
        });
    }
    jobs
}

/// Seconds between two of Slurm's timestamps (`2026-11-24T19:39:26`).
fn seconds_between(a: &str, b: &str) -> Option<f64> {
    let p = |s: &str| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S").ok();
    Some((p(b)? - p(a)?).num_milliseconds() as f64 / 1000.0)
}

/// One stale stage as submitted.
struct Submitted {
    task: usize,
    /// The array job (when the stage is an array).
    array: Option<String>,
    /// The job whose end is the stage's end: the single job, or the merge job.
    last: String,
    log: PathBuf,
    /// Per array task, its log.
    task_logs: Vec<PathBuf>,
    aside: Vec<(PathBuf, PathBuf)>,
    /// What `scontrol` last said about each of its jobs (array tasks included).
    seen: BTreeMap<String, JobInfo>,
    done: bool,
}

impl Submitted {
    /// Ask Slurm about the stage's jobs again (an array's pending tasks, listed together as
    /// `<id>_0-3`, give way to one line per task as they start).
    fn refresh(&mut self) -> Result<()> {
        for id in self.job_ids() {
            let jobs = query(&id)?;
            let prefix = format!("{id}_");
            self.seen.retain(|k, _| k != &id && !k.starts_with(&prefix));
            for j in jobs {
                self.seen.insert(j.id.clone(), j);
            }
        }
        Ok(())
    }

    fn job_ids(&self) -> Vec<String> {
        self.array
            .iter()
            .cloned()
            .chain(std::iter::once(self.last.clone()))
            .collect()
    }

    fn records(&self) -> Vec<SlurmJob> {
        let mut out: Vec<SlurmJob> = self
            .seen
            .values()
            .map(|j| SlurmJob {
                id: j.id.clone(),
                state: j.state.clone(),
                start: j.start.clone(),
                end: j.end.clone(),
                node: j.node.clone(),
                log: Some(self.log_of(&j.id).display().to_string()),
            })
            .collect();
        // Submitted but never seen (cancelled before scontrol reported it).
        for id in self.job_ids() {
            if !out
                .iter()
                .any(|j| j.id == id || j.id.starts_with(&format!("{id}_")))
            {
                out.push(SlurmJob {
                    id: id.clone(),
                    state: "CANCELLED".into(),
                    log: Some(self.log_of(&id).display().to_string()),
                    ..Default::default()
                });
            }
        }
        out
    }

    /// The log of one of the stage's jobs.
    fn log_of(&self, id: &str) -> &Path {
        if let (Some(a), Some((head, t))) = (&self.array, id.split_once('_')) {
            if head == a {
                if let Some(p) = t.parse::<usize>().ok().and_then(|t| self.task_logs.get(t)) {
                    return p;
                }
            }
        }
        &self.log
    }

    /// Wall time from Slurm's records: first start to last end.
    fn wall_s(&self) -> f64 {
        let start = self.seen.values().filter_map(|j| j.start.clone()).min();
        let end = self.seen.values().filter_map(|j| j.end.clone()).max();
        match (start, end) {
            (Some(s), Some(e)) => seconds_between(&s, &e).unwrap_or(0.0),
            _ => 0.0,
        }
    }
}

/// The earlier tasks each task reads the outputs of (its deps, optional deps or command-line
/// paths lie in or above their outputs).
pub fn upstream(tasks: &[Task]) -> Vec<Vec<usize>> {
    let touches = |a: &Path, b: &Path| a.starts_with(b) || b.starts_with(a);
    tasks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let inputs: Vec<PathBuf> = t
                .deps
                .iter()
                .chain(&t.optional_deps)
                .cloned()
                .chain(
                    t.argv[1..]
                        .iter()
                        .filter(|a| !a.is_empty())
                        .map(PathBuf::from),
                )
                .filter(|p| !t.outs.iter().any(|o| p.starts_with(o)))
                .collect();
            (0..i)
                .filter(|&j| {
                    tasks[j]
                        .outs
                        .iter()
                        .any(|o| inputs.iter().any(|p| touches(p, o)))
                })
                .collect()
        })
        .collect()
}

/// `upstream` without the stages that are also upstream of another of the same task's
/// upstream stages: the jobs a job must wait for directly.
pub fn direct(ups: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let mut ancestors: Vec<BTreeSet<usize>> = Vec::with_capacity(ups.len());
    for u in ups {
        let mut a = BTreeSet::new();
        for &k in u {
            a.insert(k);
            a.extend(ancestors[k].iter().copied());
        }
        ancestors.push(a);
    }
    ups.iter()
        .map(|u| {
            u.iter()
                .copied()
                .filter(|&j| !u.iter().any(|&k| k != j && ancestors[k].contains(&j)))
                .collect()
        })
        .collect()
}

/// Echo new lines of the jobs' logs to the terminal, each prefixed with its stage.
#[derive(Default)]
struct Tail {
    offsets: HashMap<PathBuf, u64>,
    partial: HashMap<PathBuf, String>,
}

impl Tail {
    fn pump(&mut self, stage: &str, log: &Path) {
        let Ok(mut f) = File::open(log) else {
            return;
        };
        let off = self.offsets.entry(log.to_path_buf()).or_insert(0);
        if f.seek(SeekFrom::Start(*off)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        if f.read_to_end(&mut buf).is_err() || buf.is_empty() {
            return;
        }
        *off += buf.len() as u64;
        let text = self.partial.remove(log).unwrap_or_default() + &String::from_utf8_lossy(&buf);
        let mut lines: Vec<&str> = text.split('\n').collect();
        let rest = lines.pop().unwrap_or_default().to_string();
        let mut err = std::io::stderr().lock();
        for l in lines {
            let _ = writeln!(err, "[{stage}] {l}");
        }
        if !rest.is_empty() {
            self.partial.insert(log.to_path_buf(), rest);
        }
    }
}

impl Runner {
    /// Run the tasks on Slurm (see the module doc).
    pub(crate) fn run_all_slurm(
        &mut self,
        tasks: &[Task],
        tracker: &mut Tracker,
        over: &Overrides,
    ) -> Result<()> {
        cancel_orphans(&artifacts_dir(&self.root, tasks), tracker.id())?;
        let mut lock = Lock::read(&self.lock_path)?;
        lock.version = 1;
        let ups = upstream(tasks);
        // Which stages run: a stage downstream of one that runs runs too (its inputs will
        // change), the others as the lock says.
        let mut stale: Vec<Option<Vec<Stale>>> = Vec::with_capacity(tasks.len());
        let mut programs = Vec::with_capacity(tasks.len());
        for (i, task) in tasks.iter().enumerate() {
            self.stop.check()?;
            self.recover_aside(task)?;
            let program = self.resolve_program(task)?;
            let reruns: Vec<String> = ups[i]
                .iter()
                .filter(|&&j| stale[j].is_some())
                .map(|&j| tasks[j].key.clone())
                .collect();
            let why = if reruns.is_empty() {
                let now = self.fingerprint(task, &program)?;
                self.staleness(task, &now, &lock)?
            } else {
                vec![Stale::Upstream { stages: reruns }]
            };
            stale.push((!why.is_empty()).then_some(why));
            programs.push(program);
        }
        for (i, task) in tasks.iter().enumerate() {
            if stale[i].is_none() {
                eprintln!(
                    "[{}/{}] {}: cached (unchanged command, parameters, program and inputs)",
                    i + 1,
                    tasks.len(),
                    task.key
                );
                tracker.stage(task, StageStatus::Cached, 0.0, None)?;
                tracker.collect_metrics(task, &self.root)?;
            }
        }
        let to_run: Vec<usize> = (0..tasks.len()).filter(|&i| stale[i].is_some()).collect();
        if to_run.is_empty() {
            return Ok(());
        }
        // Every request is checked before anything is submitted.
        let mut checked = BTreeSet::new();
        for &i in &to_run {
            let r = over.resolve(&tasks[i]);
            let opts = sbatch_options(&r);
            if checked.insert(opts) {
                check_feasible(&tasks[i].key, &r, &self.root)?;
            }
        }
        let mut subs: Vec<Submitted> = Vec::new();
        // A stage downstream of a rerun one reruns too, so its direct upstream stages are
        // enough to wait for.
        let waits = direct(&ups);
        let submitted = self.submit_all(
            tasks, &to_run, &stale, &programs, &waits, over, tracker, &mut subs,
        );
        if let Err(e) = submitted {
            cancel(&subs);
            for s in &subs {
                crate::runner::restore_aside(&s.aside)?;
            }
            return Err(e);
        }
        self.wait_all(tasks, &ups, &mut subs, tracker, &mut lock)
    }

    #[allow(clippy::too_many_arguments)]
    fn submit_all(
        &mut self,
        tasks: &[Task],
        to_run: &[usize],
        stale: &[Option<Vec<Stale>>],
        programs: &[PathBuf],
        ups: &[Vec<usize>],
        over: &Overrides,
        tracker: &Tracker,
        subs: &mut Vec<Submitted>,
    ) -> Result<()> {
        let env = tracker.env();
        let comment = job_comment(&artifacts_dir(&self.root, tasks), tracker.id());
        for &i in to_run {
            let task = &tasks[i];
            let r = over.resolve(task);
            let log = tracker.log_path(task);
            let logs = log.parent().expect("logs folder");
            std::fs::create_dir_all(logs)
                .with_context(|| format!("creating {}", logs.display()))?;
            let after: Vec<String> = ups[i]
                .iter()
                .filter_map(|&j| subs.iter().find(|s| s.task == j).map(|s| s.last.clone()))
                .collect();
            let mut base = vec![
                "--parsable".to_string(),
                format!("--job-name={}", task.key),
                format!("--comment={comment}"),
                format!("--chdir={}", self.root.display()),
                "--kill-on-invalid-dep=yes".to_string(),
            ];
            base.extend(sbatch_options(&r));
            let with_deps = |mut args: Vec<String>, deps: &[String]| {
                if !deps.is_empty() {
                    args.push(format!("--dependency=afterok:{}", deps.join(":")));
                }
                args
            };
            let aside = self.set_aside(task)?;
            let stem = log
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let (array, task_logs, last) = match &task.array {
                Some(a) => {
                    let mut args = with_deps(base.clone(), &after);
                    args.push(format!("--array=0-{}", a.count - 1));
                    args.push(format!("--output={}/{stem}.task%a.log", logs.display()));
                    let argv: Vec<String> = task.argv.iter().chain(&a.task).cloned().collect();
                    args.extend(["--wrap".into(), job_script(&programs[i], &argv)]);
                    let id = job_id(&slurm("sbatch", &args, &env)?);
                    let task_logs = (0..a.count)
                        .map(|t| logs.join(format!("{stem}.task{t}.log")))
                        .collect();
                    let mut args = with_deps(base.clone(), std::slice::from_ref(&id));
                    args.push(format!("--output={}", log.display()));
                    let argv: Vec<String> = task.argv.iter().chain(&a.merge).cloned().collect();
                    args.extend(["--wrap".into(), job_script(&programs[i], &argv)]);
                    let merge = job_id(&slurm("sbatch", &args, &env)?);
                    (Some(id), task_logs, merge)
                }
                None => {
                    let mut args = with_deps(base, &after);
                    args.push(format!("--output={}", log.display()));
                    args.extend(["--wrap".into(), job_script(&programs[i], &task.argv)]);
                    (None, Vec::new(), job_id(&slurm("sbatch", &args, &env)?))
                }
            };
            let why = stale[i].as_deref().unwrap_or_default();
            let jobs = match &array {
                Some(a) => format!(
                    "array job {a} ({} tasks), then merge job {last}",
                    task.array.as_ref().map_or(0, |x| x.count)
                ),
                None => format!("job {last}"),
            };
            let waits = if after.is_empty() {
                String::new()
            } else {
                format!(", after {}", after.join(", "))
            };
            eprintln!(
                "[{}/{}] {}: submitted as Slurm {jobs}{waits} ({}) — {}\n  log: {}\n  $ {}",
                i + 1,
                tasks.len(),
                task.key,
                sbatch_options(&r).join(" "),
                describe(why),
                log.display(),
                shell_words(&task.argv)
            );
            subs.push(Submitted {
                task: i,
                array,
                last,
                log,
                task_logs,
                aside,
                seen: BTreeMap::new(),
                done: false,
            });
        }
        Ok(())
    }

    fn wait_all(
        &mut self,
        tasks: &[Task],
        ups: &[Vec<usize>],
        subs: &mut [Submitted],
        tracker: &mut Tracker,
        lock: &mut Lock,
    ) -> Result<()> {
        let mut tail = Tail::default();
        let mut failure: Option<anyhow::Error> = None;
        let poll = Duration::from_millis(500);
        loop {
            if let Some(i) = self.stop.requested() {
                return self.interrupted(i, tasks, subs, tracker);
            }
            for s in subs.iter_mut().filter(|s| !s.done) {
                s.refresh()?;
                if self.echo {
                    let key = &tasks[s.task].key;
                    for l in s.task_logs.iter().chain(std::iter::once(&s.log)) {
                        tail.pump(key, l);
                    }
                }
            }
            let mut progressed = false;
            for k in 0..subs.len() {
                if subs[k].done {
                    continue;
                }
                let Some(last) = subs[k].seen.get(&subs[k].last).cloned() else {
                    continue;
                };
                if !last.terminal() {
                    continue;
                }
                progressed = true;
                subs[k].done = true;
                let task = &tasks[subs[k].task];
                let outcome = if last.state == "COMPLETED" {
                    self.finish_stage(task, &subs[k], tracker, lock)
                } else {
                    Err(self.failed_stage(task, &subs[k], &last, tracker, lock)?)
                };
                if let Err(e) = outcome {
                    let dropped = cancel_dependants(subs[k].task, ups, subs)?;
                    let cancelled = if dropped.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "\nCancelled, as they depend on it (their earlier outputs are kept): {}",
                            dropped
                                .iter()
                                .map(|(t, ids)| format!("{} (job {ids})", tasks[*t].key))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    };
                    let open = subs.iter().filter(|s| !s.done).count();
                    eprintln!(
                        "{}: failed{}",
                        task.key,
                        if open > 0 {
                            format!("; waiting for the {open} stage(s) that do not depend on it")
                        } else {
                            String::new()
                        }
                    );
                    failure.get_or_insert(anyhow!("{e:#}{cancelled}"));
                }
            }
            if subs.iter().all(|s| s.done) {
                break;
            }
            if !progressed {
                std::thread::sleep(poll);
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// A stage whose last job completed: hash its outputs into the lock, as the local executor.
    fn finish_stage(
        &mut self,
        task: &Task,
        s: &Submitted,
        tracker: &mut Tracker,
        lock: &mut Lock,
    ) -> Result<()> {
        append_line(
            &s.log,
            &format!("[pipeline] slurm job {}: COMPLETED", s.last),
        );
        let result = self
            .resolve_program(task)
            .and_then(|p| self.fingerprint(task, &p))
            .and_then(|now| Ok((now, self.finished_outs(task, &s.log)?)));
        let secs = s.wall_s();
        match result {
            Ok((mut now, outs)) => {
                now.outs = outs;
                crate::runner::drop_aside(&s.aside);
                eprintln!(
                    "{}: done in {secs:.0} s (Slurm {})",
                    task.key,
                    s.job_ids().join(", ")
                );
                tracker.stage_jobs(task, StageStatus::Ran, secs, Some(&s.log), s.records())?;
                lock.stages.insert(task.key.clone(), now);
                lock.write(&self.lock_path)?;
                tracker.collect_metrics(task, &self.root)?;
                Ok(())
            }
            Err(e) => {
                crate::runner::restore_aside(&s.aside)?;
                tracker.stage_jobs(task, StageStatus::Failed, secs, Some(&s.log), s.records())?;
                lock.stages.remove(&task.key);
                lock.write(&self.lock_path)?;
                Err(e)
            }
        }
    }

    /// A stage whose last job did not complete: the earlier outputs back, the error naming the
    /// job that failed and its log.
    fn failed_stage(
        &mut self,
        task: &Task,
        s: &Submitted,
        last: &JobInfo,
        tracker: &mut Tracker,
        lock: &mut Lock,
    ) -> Result<anyhow::Error> {
        // The job that failed: an array task that did not complete, else the last job.
        let culprit = s
            .seen
            .values()
            .find(|j| j.id != s.last && j.terminal() && j.state != "COMPLETED")
            .unwrap_or(last)
            .clone();
        let log = s.log_of(&culprit.id).to_path_buf();
        append_line(
            &log,
            &format!(
                "[pipeline] slurm job {}: {} (exit code {}, reason {})",
                culprit.id, culprit.state, culprit.exit_code, culprit.reason
            ),
        );
        crate::runner::restore_aside(&s.aside)?;
        tracker.stage_jobs(
            task,
            StageStatus::Failed,
            s.wall_s(),
            Some(&log),
            s.records(),
        )?;
        lock.stages.remove(&task.key);
        lock.write(&self.lock_path)?;
        let tail = crate::runner::last_lines(&log, 12);
        Ok(anyhow!(
            "stage `{}` failed: Slurm job {} ended {} (exit code {}); earlier outputs are kept. Its log: {}\n--- last lines ---\n{tail}",
            task.key,
            culprit.id,
            culprit.state,
            culprit.exit_code,
            log.display()
        ))
    }

    /// SIGINT/SIGTERM: cancel every job of the run, wait until Slurm has stopped them, put
    /// back the set-aside outputs of every stage that did not finish, record them KILLED.
    fn interrupted(
        &mut self,
        i: Interrupted,
        tasks: &[Task],
        subs: &mut [Submitted],
        tracker: &mut Tracker,
    ) -> Result<()> {
        let open: Vec<usize> = (0..subs.len()).filter(|&k| !subs[k].done).collect();
        let ids: Vec<String> = open.iter().flat_map(|&k| subs[k].job_ids()).collect();
        eprintln!("{i}: cancelling Slurm jobs {}", ids.join(" "));
        cancel(&subs.iter().filter(|s| !s.done).collect::<Vec<_>>());
        let deadline = Instant::now() + Duration::from_secs(60);
        for &k in &open {
            loop {
                subs[k].refresh()?;
                let all_ended = subs[k].seen.values().all(JobInfo::terminal);
                if all_ended || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            let s = &subs[k];
            crate::runner::restore_aside(&s.aside)?;
            append_line(&s.log, &format!("[pipeline] {i}: slurm jobs cancelled"));
            tracker.stage_jobs(
                &tasks[s.task],
                StageStatus::Killed,
                s.wall_s(),
                Some(&s.log),
                s.records(),
            )?;
        }
        Err(i.into())
    }
}

/// One job array outside a stage (`pipeline sweep --executor slurm`: one task per value):
/// task i runs the shell command `scripts[i]`, logging to `<logs>/<name>.task<i>.log`. Waits for
/// every task, echoing their logs; SIGINT/SIGTERM cancels them. Each task's last state and log.
#[allow(clippy::too_many_arguments)]
pub fn run_array(
    name: &str,
    comment: &str,
    scripts: &[String],
    r: &Resources,
    root: &Path,
    logs: &Path,
    env: &[(String, String)],
    stop: &crate::guard::Stop,
    echo: bool,
) -> Result<Vec<(JobInfo, PathBuf)>> {
    check_feasible(name, r, root)?;
    std::fs::create_dir_all(logs).with_context(|| format!("creating {}", logs.display()))?;
    let mut script = String::from("case \"$SLURM_ARRAY_TASK_ID\" in\n");
    for (i, s) in scripts.iter().enumerate() {
        script.push_str(&format!("  {i}) {s} ;;\n"));
    }
    script.push_str("  *) echo \"no task $SLURM_ARRAY_TASK_ID\" >&2; exit 2 ;;\nesac");
    let mut args = vec![
        "--parsable".to_string(),
        format!("--job-name={name}"),
        format!("--comment={comment}"),
        format!("--chdir={}", root.display()),
        format!("--array=0-{}", scripts.len().saturating_sub(1)),
        format!("--output={}/{name}.task%a.log", logs.display()),
    ];
    args.extend(sbatch_options(r));
    args.extend(["--wrap".to_string(), script]);
    let id = job_id(&slurm("sbatch", &args, env)?);
    let task_logs: Vec<PathBuf> = (0..scripts.len())
        .map(|i| logs.join(format!("{name}.task{i}.log")))
        .collect();
    eprintln!(
        "{name}: submitted as Slurm array job {id} ({} tasks, {}); logs {}/{name}.task<i>.log",
        scripts.len(),
        sbatch_options(r).join(" "),
        logs.display()
    );
    let mut tail = Tail::default();
    loop {
        let jobs = query(&id)?;
        if echo {
            for (i, l) in task_logs.iter().enumerate() {
                tail.pump(&format!("{name}.{i}"), l);
            }
        }
        if let Some(i) = stop.requested() {
            eprintln!("{i}: cancelling Slurm array job {id}");
            if let Err(e) = slurm("scancel", std::slice::from_ref(&id), &[]) {
                eprintln!("warning: {e:#}");
            }
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline && !query(&id)?.iter().all(JobInfo::terminal) {
                std::thread::sleep(Duration::from_millis(200));
            }
            return Err(i.into());
        }
        let ended: Vec<JobInfo> = jobs
            .iter()
            .filter(|j| j.terminal() && !j.id.contains('-'))
            .cloned()
            .collect();
        if ended.len() == scripts.len() {
            let mut out: Vec<(JobInfo, PathBuf)> = ended
                .into_iter()
                .map(|j| {
                    let t: usize =
                        j.id.rsplit('_')
                            .next()
                            .and_then(|t| t.parse().ok())
                            .unwrap_or(0);
                    (j, task_logs[t.min(task_logs.len() - 1)].clone())
                })
                .collect();
            out.sort_by_key(|(j, _)| {
                j.id.rsplit('_')
                    .next()
                    .and_then(|t| t.parse::<usize>().ok())
                    .unwrap_or(0)
            });
            return Ok(out);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `sbatch --parsable` prints `id` or `id;cluster`.
/// The comment of every job a run submits: `rebalance:<artifacts folder>:<run id>`, so that
/// the next run of the same folder can find jobs an earlier runner left behind.
pub fn job_comment(artifacts: &Path, run_id: &str) -> String {
    format!("rebalance:{}:{run_id}", artifacts.display())
}

/// The absolute artifacts folder of a run's tasks.
fn artifacts_dir(root: &Path, tasks: &[Task]) -> PathBuf {
    let a = root.join(
        tasks
            .iter()
            .find_map(|t| t.params.get("artifacts").map(|v| v.render()))
            .unwrap_or_else(|| "artifacts".to_string()),
    );
    a.canonicalize().unwrap_or(a)
}

/// Cancel the jobs that other runs of this artifacts folder left queued or running: this run
/// holds the folder's lock, so their runners are gone (killed outright, say, before they could
/// cancel). Says which jobs, of which run.
pub fn cancel_orphans(artifacts: &Path, run_id: &str) -> Result<Vec<String>> {
    let listed = slurm(
        "squeue",
        &["--noheader".to_string(), "--format=%i|%k".to_string()],
        &[],
    )?;
    let prefix = job_comment(artifacts, "");
    let mut ids: Vec<String> = Vec::new();
    let mut runs: BTreeSet<String> = BTreeSet::new();
    for line in listed.lines() {
        let Some((id, comment)) = line.trim().split_once('|') else {
            continue;
        };
        let Some(run) = comment.strip_prefix(&prefix) else {
            continue;
        };
        if run == run_id {
            continue;
        }
        let job = id.split('_').next().unwrap_or(id).to_string();
        if !ids.contains(&job) {
            ids.push(job);
        }
        runs.insert(run.to_string());
    }
    if ids.is_empty() {
        return Ok(ids);
    }
    slurm("scancel", &ids, &[])?;
    eprintln!(
        "cancelled {} Slurm job(s) that run {} of {} left queued or running (its runner ended without cancelling them): {}",
        ids.len(),
        runs.into_iter().collect::<Vec<_>>().join(", "),
        artifacts.display(),
        ids.join(", ")
    );
    Ok(ids)
}

fn job_id(out: &str) -> String {
    out.lines()
        .last()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// What Slurm says about a job (an array's tasks each on its own line). A job the controller
/// has already forgotten (MinJobAge) is looked up in `sacct`, when accounting is on.
fn query(id: &str) -> Result<Vec<JobInfo>> {
    let out = Command::new("scontrol")
        .args(["show", "job", "-o", id])
        .output()
        .context("starting `scontrol` (is Slurm's client installed and on PATH?)")?;
    if out.status.success() {
        return Ok(parse_jobs(&String::from_utf8_lossy(&out.stdout)));
    }
    let acct = Command::new("sacct")
        .args([
            "-n",
            "-P",
            "-X",
            "-j",
            id,
            "-o",
            "JobID,State,Start,End,NodeList,ExitCode",
        ])
        .output();
    if let Some(a) = acct.ok().filter(|a| a.status.success()) {
        let jobs: Vec<JobInfo> = String::from_utf8_lossy(&a.stdout)
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split('|').collect();
                (f.len() == 6).then(|| JobInfo {
                    id: f[0].to_string(),
                    state: f[1]
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                    start: Some(f[2].to_string()),
                    end: Some(f[3].to_string()),
                    node: Some(f[4].to_string()),
                    exit_code: f[5].to_string(),
                    reason: String::new(),
                })
            })
            .collect();
        if !jobs.is_empty() {
            return Ok(jobs);
        }
    }
    bail!(
        "Slurm no longer knows job {id} ({}); the run cannot tell how it ended",
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

fn cancel<S: std::borrow::Borrow<Submitted>>(subs: &[S]) {
    let ids: Vec<String> = subs.iter().flat_map(|s| s.borrow().job_ids()).collect();
    if ids.is_empty() {
        return;
    }
    if let Err(e) = slurm("scancel", &ids, &[]) {
        eprintln!("warning: {e:#}");
    }
}

/// Cancel every not-yet-finished stage downstream of `failed`, putting its set-aside outputs
/// back; the stages and their job ids.
fn cancel_dependants(
    failed: usize,
    ups: &[Vec<usize>],
    subs: &mut [Submitted],
) -> Result<Vec<(usize, String)>> {
    let mut down: BTreeSet<usize> = BTreeSet::from([failed]);
    for (t, u) in ups.iter().enumerate() {
        if u.iter().any(|j| down.contains(j)) {
            down.insert(t);
        }
    }
    let mut dropped = Vec::new();
    for s in subs.iter_mut() {
        if s.done || s.task == failed || !down.contains(&s.task) {
            continue;
        }
        cancel(std::slice::from_ref(&&*s));
        s.done = true;
        crate::runner::restore_aside(&s.aside)?;
        append_line(&s.log, "[pipeline] cancelled: an upstream stage failed");
        dropped.push((s.task, s.job_ids().join(",")));
    }
    Ok(dropped)
}

fn append_line(path: &Path, line: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scontrol_lines_parse_with_array_ids_and_times() {
        let text = "JobId=7 ArrayJobId=6 ArrayTaskId=1 JobName=classify JobState=COMPLETED Reason=None ExitCode=0:0 StartTime=2026-11-24T19:39:26 EndTime=2026-11-24T19:39:29 NodeList=vm\n\
                    JobId=8 JobName=report JobState=PENDING Reason=Dependency ExitCode=0:0 StartTime=Unknown EndTime=Unknown NodeList=(null)\n";
        let jobs = parse_jobs(text);
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].id, "6_1");
        assert!(jobs[0].terminal());
        assert_eq!(jobs[0].start.as_deref(), Some("2026-11-24T19:39:26"));
        assert_eq!(jobs[0].node.as_deref(), Some("vm"));
        assert_eq!(jobs[1].id, "8");
        assert!(!jobs[1].terminal());
        assert_eq!(jobs[1].start, None);
        assert_eq!(jobs[1].node, None);
        assert_eq!(
            seconds_between("2026-11-24T23:59:58", "2026-11-25T00:00:01"),
            Some(3.0)
        );
    }

    #[test]
    fn stages_depend_on_the_stages_whose_outputs_they_read() {
        let spec = Spec::parse(
            r#"
name = "t"
[entry_points.a]
command = ["p", "--out", "{artifacts}/a"]
outs = ["{artifacts}/a"]
[entry_points.a.parameters]
artifacts = { type = "path", default = "art" }
[entry_points.b]
command = ["p", "--empty", "", "--out", "{artifacts}/b"]
outs = ["{artifacts}/b"]
[entry_points.b.parameters]
artifacts = { type = "path", default = "art" }
[entry_points.c]
command = ["p", "--in", "{artifacts}/a/x.bin", "--out", "{artifacts}/c"]
deps = ["{artifacts}/b"]
outs = ["{artifacts}/c"]
[entry_points.c.parameters]
artifacts = { type = "path", default = "art" }
[entry_points.main]
steps = ["a", "b", "c"]
"#,
        )
        .unwrap();
        let b = crate::spec::Bindings::new(&spec, "main", &[]).unwrap();
        let tasks = crate::plan::plan(&spec, "main", &b).unwrap();
        // b's empty argument is no path: b does not wait for a.
        assert_eq!(upstream(&tasks), vec![vec![], vec![], vec![0, 1]]);
    }

    #[test]
    fn jobs_wait_only_for_their_direct_upstream_stages() {
        // 0 → 1 → 2, 0 → 2, 0 → 3
        let ups = vec![vec![], vec![0], vec![0, 1], vec![0]];
        assert_eq!(direct(&ups), vec![vec![], vec![0], vec![1], vec![0]]);
    }

    #[test]
    fn the_job_script_quotes_words_and_puts_the_task_index_in() {
        let argv: Vec<String> = ["classify", "--out", "a b", "--seed-task", "{task}"]
            .map(String::from)
            .to_vec();
        let s = job_script(Path::new("/x/classify"), &argv);
        assert!(
            s.contains("exec /x/classify --out 'a b' --seed-task ''\"$SLURM_ARRAY_TASK_ID\"''"),
            "{s}"
        );
        assert!(
            s.starts_with("echo '$ classify --out '\\''a b'\\'' --seed-task '\\''{task}'\\'''"),
            "{s}"
        );
        assert_eq!(job_id("123;cluster\n"), "123");
    }

    #[test]
    fn resource_overrides_are_split_from_parameters_and_layered() {
        let spec = Spec::parse(
            r#"
name = "t"
[resources]
cpus = 1
mem = "1G"
[entry_points.a]
command = ["prog", "--device", "{device}"]
[entry_points.a.parameters]
device = { type = "string", default = "cuda" }
[entry_points.a.resources]
cpus = 2
"#,
        )
        .unwrap();
        let params = vec![
            ("resources.mem".to_string(), "2G".to_string()),
            ("a.resources.time".to_string(), "01:00:00".to_string()),
            ("device".to_string(), "cuda".to_string()),
        ];
        let (rest, o) = Overrides::split(&spec, &params).unwrap();
        assert_eq!(rest, vec![("device".to_string(), "cuda".to_string())]);
        let b = crate::spec::Bindings::new(&spec, "a", &rest).unwrap();
        let tasks = crate::plan::plan(&spec, "a", &b).unwrap();
        let r = o.resolve(&tasks[0]);
        assert_eq!(r.cpus, Some(2));
        assert_eq!(r.mem.as_deref(), Some("2G"));
        assert_eq!(r.time.as_deref(), Some("01:00:00"));
        assert_eq!(r.gpus, Some(1), "--device cuda asks for a GPU");
        assert_eq!(
            sbatch_options(&r),
            [
                "--cpus-per-task=2",
                "--mem=2G",
                "--gpus=1",
                "--time=01:00:00"
            ]
        );
        let err = Overrides::split(&spec, &[("resources.cores".into(), "2".into())]).unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown resource `cores`"),
            "{err:#}"
        );
        let err = Overrides::split(&spec, &[("resources.cpus".into(), "two".into())]).unwrap_err();
        assert!(format!("{err:#}").contains("whole number"), "{err:#}");
        let err = Overrides::split(&spec, &[("b.resources.cpus".into(), "2".into())]).unwrap_err();
        assert!(format!("{err:#}").contains("no entry point `b`"), "{err:#}");
    }
}
