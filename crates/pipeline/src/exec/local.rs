//! The local executor: one stage at a time, as a child process in its own process group, its
//! output streamed live into its log (and to the terminal unless `--quiet`).

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::{Cancel, Ended, Executor, Launch, Outcome};
use crate::util::{last_lines, shell_words};

/// The stage that runs.
struct Running {
    index: usize,
    key: String,
    child: Child,
    log: Arc<Mutex<File>>,
    log_path: PathBuf,
    pumps: Vec<JoinHandle<()>>,
    started: Instant,
}

impl Running {
    /// Wait for the output to drain, then close the log with `last`.
    fn close(&mut self, last: &str) {
        for p in self.pumps.drain(..) {
            let _ = p.join();
        }
        if let Ok(mut f) = self.log.lock() {
            let _ = writeln!(f, "{last}");
            let _ = f.sync_all();
        }
    }

    fn ended(&self, outcome: Outcome) -> Ended {
        let secs = self.started.elapsed().as_secs_f64();
        Ended {
            index: self.index,
            outcome,
            wall_s: secs,
            log: self.log_path.clone(),
            jobs: Vec::new(),
            ids: Vec::new(),
            took: format!("{secs:.1} s"),
        }
    }
}

/// Runs stages here, in the project folder.
pub struct Local {
    root: PathBuf,
    echo: bool,
    running: Option<Running>,
}

impl Local {
    /// `echo`: stage output to the terminal too (it always goes to the log).
    pub fn new(root: &Path, echo: bool) -> Self {
        Self {
            root: root.to_path_buf(),
            echo,
            running: None,
        }
    }
}

/// Copy a stage's output into its log (and to the terminal with `echo`) until it closes.
fn pump(
    mut src: Box<dyn Read + Send>,
    log: Arc<Mutex<File>>,
    echo: bool,
    to_stdout: bool,
) -> JoinHandle<()> {
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
}

impl Executor for Local {
    fn queues(&self) -> bool {
        false
    }

    fn launch(&mut self, l: &Launch) -> Result<()> {
        if self.running.is_some() {
            bail!("the local executor runs one stage at a time");
        }
        let task = l.task;
        eprintln!(
            "  log: {}\n  $ {}",
            l.log.display(),
            shell_words(&task.argv)
        );
        if let Some(dir) = l.log.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut log =
            File::create(l.log).with_context(|| format!("creating log {}", l.log.display()))?;
        writeln!(log, "$ {}", shell_words(&task.argv))?;
        let log = Arc::new(Mutex::new(log));
        let mut cmd = Command::new(l.program);
        cmd.args(&task.argv[1..])
            .current_dir(&self.root)
            .envs(l.env.iter().cloned())
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
            .with_context(|| format!("stage `{}`: starting {}", task.key, l.program.display()))?;
        let out = child.stdout.take().expect("piped");
        let err = child.stderr.take().expect("piped");
        let pumps = vec![
            pump(Box::new(out), Arc::clone(&log), self.echo, true),
            pump(Box::new(err), Arc::clone(&log), self.echo, false),
        ];
        self.running = Some(Running {
            index: l.index,
            key: task.key.clone(),
            child,
            log,
            log_path: l.log.to_path_buf(),
            pumps,
            started: Instant::now(),
        });
        Ok(())
    }

    fn poll(&mut self) -> Result<Vec<Ended>> {
        let Some(r) = self.running.as_mut() else {
            return Ok(Vec::new());
        };
        let Some(status) = r.child.try_wait()? else {
            return Ok(Vec::new());
        };
        let mut r = self.running.take().expect("running");
        r.close(&format!("[pipeline] exit: {status}"));
        let outcome = if status.success() {
            Outcome::Done
        } else {
            Outcome::Failed(failure(&r.key, status, &r.log_path))
        };
        Ok(vec![r.ended(outcome)])
    }

    /// Stop the running stage's process group: SIGTERM, then SIGKILL after 10 s.
    fn cancel(&mut self, stages: &[usize], why: &Cancel) -> Result<Vec<Ended>> {
        let Some(mut r) = self.running.take_if(|r| stages.contains(&r.index)) else {
            return Ok(Vec::new());
        };
        let said = match why {
            Cancel::Interrupted(i) => i.clone(),
            Cancel::Dropped(why) => why.clone(),
        };
        eprintln!("{said}: stopping the running stage (pid {})", r.child.id());
        let status = stop_group(&mut r.child)?;
        r.close(&format!("[pipeline] {said}: stage stopped ({status})"));
        Ok(vec![r.ended(Outcome::Stopped)])
    }
}

/// SIGTERM to the child's process group, SIGKILL if it is still there 10 s later.
fn stop_group(child: &mut Child) -> Result<ExitStatus> {
    let group = -(child.id() as i32);
    // SAFETY: kill() on the stage's own process group.
    unsafe { libc::kill(group, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: as above.
    unsafe { libc::kill(group, libc::SIGKILL) };
    Ok(child.wait()?)
}

/// The error of a stage that exited non-zero, with the end of its log.
fn failure(key: &str, status: ExitStatus, log: &Path) -> anyhow::Error {
    let tail = last_lines(log, 12);
    anyhow!(
        "stage `{key}` failed ({status}); earlier outputs are kept. Its log: {}\n--- last lines ---\n{tail}",
        log.display()
    )
}
