//! Small helpers every part of the runner uses: the clock, run ids, shell words, log tails.
//! Nothing here imports another module of the crate.

use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// `YYYYMMDD-HHMMSS-xxxx` (UTC), sortable and unique enough for one machine.
pub fn new_run_id() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let stamp = chrono::DateTime::from_timestamp(now.as_secs() as i64, 0)
        .unwrap_or_default()
        .format("%Y%m%d-%H%M%S");
    let salt = rebalance_core::hash::sha256_bytes(
        format!("{}-{}", now.as_nanos(), std::process::id()).as_bytes(),
    );
    format!("{stamp}-{}", &salt[..6])
}

/// argv as a shell line (for logs, messages and job scripts).
pub fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| sh_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A word for `sh`: single-quoted unless plain.
pub fn sh_quote(a: &str) -> String {
    if !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=,:+@%".contains(c))
    {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', r"'\''"))
    }
}

/// The last `n` lines of a log (empty when it cannot be read).
pub fn last_lines(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Append a line to a log, best effort.
pub fn append_line(path: &Path, line: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

/// Copy a file atomically.
pub fn copy_file(from: &Path, to: &Path) -> anyhow::Result<()> {
    use anyhow::Context;
    let bytes = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    rebalance_core::write_atomic(to, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_utc_stamps_with_a_salt() {
        let id = new_run_id();
        assert_eq!(id.len(), 22, "{id}");
        assert_eq!(&id[8..9], "-");
        assert_eq!(&id[15..16], "-");
        assert!(id[..8].chars().all(|c| c.is_ascii_digit()), "{id}");
        assert_ne!(new_run_id(), id);
        let year: i32 = id[..4].parse().unwrap();
        assert!(year >= 2024, "{id}");
    }

    #[test]
    fn shell_words_quote_what_the_shell_would_split() {
        let argv: Vec<String> = ["a", "b c", "", "it's"].map(String::from).to_vec();
        assert_eq!(shell_words(&argv), r"a 'b c' '' 'it'\''s'");
    }
}
