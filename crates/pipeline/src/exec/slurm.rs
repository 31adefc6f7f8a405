//! `--executor slurm`: every stale stage submitted as one `sbatch` job (a job array plus a merge
//! job for stages that declare `array`), its upstream stages' jobs as `--dependency=afterok:…`.
//! Independent stages run at the same time when the cluster has room. The executor then
//! watches `scontrol show job` and echoes the jobs' logs; the scheduler does each finished
//! stage's bookkeeping as for the local executor. SIGINT/SIGTERM `scancel`s every job of the run.
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
use rebalance_core::contract::runs::SlurmJob;

use super::{Cancel, Ended, Executor, Launch, Outcome};
use crate::cache::describe;
use crate::guard::Stop;
use crate::plan::Task;
use crate::resources::{sbatch_options, Overrides};
use crate::spec::Resources;
use crate::util::{append_line, last_lines, sh_quote, shell_words};

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
    /// The stage's place in the plan.
    task: usize,
    key: String,
    /// The array job (when the stage is an array).
    array: Option<String>,
    /// The job whose end is the stage's end: the single job, or the merge job.
    last: String,
    log: PathBuf,
    /// Per array task, its log.
    task_logs: Vec<PathBuf>,
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

    fn ended(&self, outcome: Outcome, log: PathBuf) -> Ended {
        let wall_s = self.wall_s();
        let ids = self.job_ids();
        Ended {
            index: self.task,
            outcome,
            wall_s,
            log,
            jobs: self.records(),
            took: format!("{wall_s:.0} s (Slurm {})", ids.join(", ")),
            ids,
        }
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

/// Submits stages to Slurm (see the module doc).
pub struct Slurm {
    root: PathBuf,
    over: Overrides,
    echo: bool,
    /// Every job's `--comment`: this run of this artifacts folder.
    comment: String,
    subs: Vec<Submitted>,
    tail: Tail,
}

impl Slurm {
    /// An executor for one run of `tasks`; first cancels the jobs that earlier runs of the same
    /// artifacts folder left queued or running.
    pub fn new(
        root: &Path,
        over: Overrides,
        echo: bool,
        tasks: &[Task],
        run_id: &str,
    ) -> Result<Self> {
        let artifacts = artifacts_dir(root, tasks);
        cancel_orphans(&artifacts, run_id)?;
        Ok(Self {
            root: root.to_path_buf(),
            over,
            echo,
            comment: job_comment(&artifacts, run_id),
            subs: Vec::new(),
            tail: Tail::default(),
        })
    }

    /// `sbatch` a stage: one job, or a job array then its merge job. (array id, task logs,
    /// the last job's id).
    fn submit(
        &self,
        l: &Launch,
        after: &[String],
    ) -> Result<(Option<String>, Vec<PathBuf>, String)> {
        let task = l.task;
        let logs = l.log.parent().expect("logs folder");
        std::fs::create_dir_all(logs).with_context(|| format!("creating {}", logs.display()))?;
        let mut base = vec![
            "--parsable".to_string(),
            format!("--job-name={}", task.key),
            format!("--comment={}", self.comment),
            format!("--chdir={}", self.root.display()),
            "--kill-on-invalid-dep=yes".to_string(),
        ];
        base.extend(sbatch_options(&self.over.resolve(task)));
        let sbatch = |deps: &[String], extra: Vec<String>, argv: &[String]| {
            let mut args = base.clone();
            if !deps.is_empty() {
                args.push(format!("--dependency=afterok:{}", deps.join(":")));
            }
            args.extend(extra);
            args.extend(["--wrap".into(), job_script(l.program, argv)]);
            slurm("sbatch", &args, l.env).map(|out| job_id(&out))
        };
        let output = vec![format!("--output={}", l.log.display())];
        let Some(a) = &task.array else {
            return Ok((None, Vec::new(), sbatch(after, output, &task.argv)?));
        };
        let stem = l
            .log
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let array = vec![
            format!("--array=0-{}", a.count - 1),
            format!("--output={}/{stem}.task%a.log", logs.display()),
        ];
        let argv: Vec<String> = task.argv.iter().chain(&a.task).cloned().collect();
        let id = sbatch(after, array, &argv)?;
        let task_logs = (0..a.count)
            .map(|t| logs.join(format!("{stem}.task{t}.log")))
            .collect();
        let argv: Vec<String> = task.argv.iter().chain(&a.merge).cloned().collect();
        let merge = sbatch(std::slice::from_ref(&id), output, &argv)?;
        Ok((Some(id), task_logs, merge))
    }

    /// A stage whose last job ended: completed, or the error naming the job that failed.
    fn ended(s: &Submitted, last: &JobInfo) -> Ended {
        if last.state == "COMPLETED" {
            append_line(
                &s.log,
                &format!("[pipeline] slurm job {}: COMPLETED", s.last),
            );
            return s.ended(Outcome::Done, s.log.clone());
        }
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
        let e = anyhow!(
            "stage `{}` failed: Slurm job {} ended {} (exit code {}); earlier outputs are kept. Its log: {}\n--- last lines ---\n{}",
            s.key,
            culprit.id,
            culprit.state,
            culprit.exit_code,
            log.display(),
            last_lines(&log, 12)
        );
        s.ended(Outcome::Failed(e), log)
    }
}

impl Executor for Slurm {
    fn queues(&self) -> bool {
        true
    }

    fn idle(&self) -> Duration {
        Duration::from_millis(500)
    }

    /// Every request is checked with Slurm before anything is submitted.
    fn check(&mut self, tasks: &[&Task]) -> Result<()> {
        let mut checked = BTreeSet::new();
        for task in tasks {
            let r = self.over.resolve(task);
            if checked.insert(sbatch_options(&r)) {
                check_feasible(&task.key, &r, &self.root)?;
            }
        }
        Ok(())
    }

    fn launch(&mut self, l: &Launch) -> Result<()> {
        let after: Vec<String> = l
            .after
            .iter()
            .filter_map(|&j| {
                self.subs
                    .iter()
                    .find(|s| s.task == j)
                    .map(|s| s.last.clone())
            })
            .collect();
        let (array, task_logs, last) = self.submit(l, &after)?;
        let jobs = match &array {
            Some(a) => format!(
                "array job {a} ({} tasks), then merge job {last}",
                task_logs.len()
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
            l.index + 1,
            l.total,
            l.task.key,
            sbatch_options(&self.over.resolve(l.task)).join(" "),
            describe(l.why),
            l.log.display(),
            shell_words(&l.task.argv)
        );
        self.subs.push(Submitted {
            task: l.index,
            key: l.task.key.clone(),
            array,
            last,
            log: l.log.to_path_buf(),
            task_logs,
            seen: BTreeMap::new(),
            done: false,
        });
        Ok(())
    }

    fn poll(&mut self) -> Result<Vec<Ended>> {
        for s in self.subs.iter_mut().filter(|s| !s.done) {
            s.refresh()?;
            if self.echo {
                for l in s.task_logs.iter().chain(std::iter::once(&s.log)) {
                    self.tail.pump(&s.key, l);
                }
            }
        }
        let mut out = Vec::new();
        for s in self.subs.iter_mut().filter(|s| !s.done) {
            let Some(last) = s.seen.get(&s.last).cloned() else {
                continue;
            };
            if last.terminal() {
                s.done = true;
                out.push(Self::ended(s, &last));
            }
        }
        Ok(out)
    }

    fn cancel(&mut self, stages: &[usize], why: &Cancel) -> Result<Vec<Ended>> {
        let open: Vec<usize> = (0..self.subs.len())
            .filter(|&k| !self.subs[k].done && stages.contains(&self.subs[k].task))
            .collect();
        let ids: Vec<String> = open.iter().flat_map(|&k| self.subs[k].job_ids()).collect();
        let said = match why {
            Cancel::Interrupted(i) => {
                eprintln!("{i}: cancelling Slurm jobs {}", ids.join(" "));
                format!("{i}: slurm jobs cancelled")
            }
            Cancel::Dropped(why) => why.clone(),
        };
        scancel(&ids);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut out = Vec::new();
        for k in open {
            let s = &mut self.subs[k];
            if matches!(why, Cancel::Interrupted(_)) {
                // Wait until Slurm has stopped them, so the outputs can go back.
                loop {
                    s.refresh()?;
                    if s.seen.values().all(JobInfo::terminal) || Instant::now() > deadline {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            s.done = true;
            append_line(&s.log, &format!("[pipeline] {said}"));
            out.push(s.ended(Outcome::Stopped, s.log.clone()));
        }
        Ok(out)
    }
}

/// One job array outside a stage (`pipeline sweep --executor slurm`: one task per value).
pub struct ArrayJob {
    pub name: String,
    pub comment: String,
    /// Task i runs the shell command `scripts[i]`, logging to `<logs>/<name>.task<i>.log`.
    pub scripts: Vec<String>,
    pub resources: Resources,
    pub root: PathBuf,
    pub logs: PathBuf,
    pub env: Vec<(String, String)>,
    /// Echo the tasks' logs.
    pub echo: bool,
}

impl ArrayJob {
    /// Submit the array; its job id and each task's log.
    fn submit(&self) -> Result<(String, Vec<PathBuf>)> {
        let (name, logs) = (&self.name, &self.logs);
        check_feasible(name, &self.resources, &self.root)?;
        std::fs::create_dir_all(logs).with_context(|| format!("creating {}", logs.display()))?;
        let mut script = String::from("case \"$SLURM_ARRAY_TASK_ID\" in\n");
        for (i, s) in self.scripts.iter().enumerate() {
            script.push_str(&format!("  {i}) {s} ;;\n"));
        }
        script.push_str("  *) echo \"no task $SLURM_ARRAY_TASK_ID\" >&2; exit 2 ;;\nesac");
        let mut args = vec![
            "--parsable".to_string(),
            format!("--job-name={name}"),
            format!("--comment={}", self.comment),
            format!("--chdir={}", self.root.display()),
            format!("--array=0-{}", self.scripts.len().saturating_sub(1)),
            format!("--output={}/{name}.task%a.log", logs.display()),
        ];
        args.extend(sbatch_options(&self.resources));
        args.extend(["--wrap".to_string(), script]);
        let id = job_id(&slurm("sbatch", &args, &self.env)?);
        let task_logs = (0..self.scripts.len())
            .map(|i| logs.join(format!("{name}.task{i}.log")))
            .collect();
        eprintln!(
            "{name}: submitted as Slurm array job {id} ({} tasks, {}); logs {}/{name}.task<i>.log",
            self.scripts.len(),
            sbatch_options(&self.resources).join(" "),
            logs.display()
        );
        Ok((id, task_logs))
    }
}

/// The index of an array task's id (`<array>_<index>`).
fn task_index(id: &str) -> usize {
    id.rsplit('_')
        .next()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

/// Run a job array and wait for every task, echoing their logs; SIGINT/SIGTERM cancels them.
/// Each task's last state and log, in task order.
pub fn run_array(job: &ArrayJob, stop: &Stop) -> Result<Vec<(JobInfo, PathBuf)>> {
    let (id, task_logs) = job.submit()?;
    let mut tail = Tail::default();
    loop {
        let jobs = query(&id)?;
        if job.echo {
            for (i, l) in task_logs.iter().enumerate() {
                tail.pump(&format!("{}.{i}", job.name), l);
            }
        }
        if let Some(i) = stop.requested() {
            eprintln!("{i}: cancelling Slurm array job {id}");
            scancel(std::slice::from_ref(&id));
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline && !query(&id)?.iter().all(JobInfo::terminal) {
                std::thread::sleep(Duration::from_millis(200));
            }
            return Err(i.into());
        }
        let mut ended: Vec<(JobInfo, PathBuf)> = jobs
            .into_iter()
            .filter(|j| j.terminal() && !j.id.contains('-'))
            .map(|j| {
                let log = task_logs[task_index(&j.id).min(task_logs.len() - 1)].clone();
                (j, log)
            })
            .collect();
        if ended.len() == job.scripts.len() {
            ended.sort_by_key(|(j, _)| task_index(&j.id));
            return Ok(ended);
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
    let a = root.join(crate::plan::artifacts_of(tasks));
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

/// `scancel` these jobs (a warning when that fails).
fn scancel(ids: &[String]) {
    if ids.is_empty() {
        return;
    }
    if let Err(e) = slurm("scancel", ids, &[]) {
        eprintln!("warning: {e:#}");
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
}
