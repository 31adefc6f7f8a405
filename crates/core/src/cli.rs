//! Flags shared by every stage (`#[command(flatten)]`), the command line of a stage whose
//! subcommand is optional ([`TrainByDefault`]), logging and progress bars.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// `--device auto|cpu|cuda|cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// CUDA device 0 when libtorch sees one, else CPU.
    #[default]
    Auto,
    Cpu,
    /// A CUDA device, by index (`cuda` = `cuda:0`).
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| format!("`{s}` is not a device; use auto, cpu, cuda or cuda:N")),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => write!(f, "auto"),
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl Serialize for DeviceSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Flags every stage takes.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct CommonArgs {
    /// Folder that holds the stage outputs (one sub-folder per stage).
    #[arg(long, default_value = "artifacts", env = "REBALANCE_ARTIFACTS")]
    pub artifacts: PathBuf,
    /// Random seed: the same seed and inputs give the same outputs.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Compute device for tensor work: auto (CUDA when available, else CPU), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: DeviceSpec,
    /// Only print warnings and errors.
    #[arg(long, short)]
    pub quiet: bool,
}

/// A subcommand of a stage binary: its flags, its name and help line, and its work.
pub trait StageCommand: clap::Args {
    /// The subcommand's name (`train`, `compare`) and its line in `--help`.
    const NAME: &'static str;
    const ABOUT: &'static str;
    /// How error messages name it (`classify`, `classify compare`), and its `--quiet`.
    fn label(&self) -> (&'static str, bool);
    /// Its work.
    fn run(&self) -> anyhow::Result<()>;
}

/// The command line of a stage binary whose subcommand is optional: without one it runs `T`
/// (`train`), whose flags then stand at the top level (`classify --epochs 3` is `classify
/// train --epochs 3`); `S` is its other subcommand. The binary's parser flattens it and sets
/// `args_conflicts_with_subcommands`.
#[derive(Debug, clap::Args)]
pub struct TrainByDefault<T: StageCommand, S: StageCommand> {
    #[command(subcommand)]
    pub command: Option<Commands<T, S>>,
    #[command(flatten)]
    pub train: T,
}

/// `train` and the binary's other subcommand.
#[derive(Debug, clap::Subcommand)]
pub enum Commands<T: StageCommand, S: StageCommand> {
    #[command(name = T::NAME, about = T::ABOUT)]
    Train(Box<T>),
    #[command(name = S::NAME, about = S::ABOUT)]
    Other(S),
}

impl<T: StageCommand, S: StageCommand> TrainByDefault<T, S> {
    /// Run the subcommand given, else `train`, with logging set up; the process's exit code.
    pub fn main(&self) -> std::process::ExitCode {
        match &self.command {
            Some(Commands::Train(t)) => run(t.as_ref()),
            Some(Commands::Other(s)) => run(s),
            None => run(&self.train),
        }
    }
}

fn run(command: &impl StageCommand) -> std::process::ExitCode {
    let (name, quiet) = command.label();
    crate::main_wrapper(name, || {
        init_logging(quiet);
        command.run()
    })
}

/// Log to stderr through `tracing`; `RUST_LOG` overrides the level.
pub fn init_logging(quiet: bool) {
    let default = if quiet { "warn" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .without_time()
        .try_init();
}

/// A progress bar on stderr. indicatif draws nothing when stderr is not a terminal.
pub fn progress(len: u64, message: &str, quiet: bool) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:>12} [{bar:40}] {pos}/{len} ({per_sec}, {eta} left)",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(message.to_string());
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_spec_parses() {
        assert_eq!("auto".parse(), Ok(DeviceSpec::Auto));
        assert_eq!("CPU".parse(), Ok(DeviceSpec::Cpu));
        assert_eq!("cuda".parse(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(DeviceSpec::Cuda(3)));
        let err = "tpu".parse::<DeviceSpec>().unwrap_err();
        assert!(err.contains("`tpu`"), "{err}");
        assert_eq!(DeviceSpec::Cuda(1).to_string(), "cuda:1");
    }
}
