//! How much memory this process can have, so that a reader can refuse a declared array that
//! would not fit before it inflates anything (a 2 MB `.npz` can declare gigabytes of zeros).
//!
//! "Can have" is the smallest of: the memory available on the machine (`MemAvailable`), the
//! free part of the process's cgroup memory limit when it has one, and the address-space limit
//! (`ulimit -v`) when one is set.

use anyhow::{bail, Result};

/// The bytes this process can still allocate, and which limit says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    pub bytes: u64,
    pub what: &'static str,
}

/// The current budget (see the module docs).
pub fn budget() -> Budget {
    let mut limits: Vec<(u64, &'static str)> = Vec::new();
    if let Ok(mut s) = sysinfo::System::new() {
        s.refresh_memory();
        limits.push((s.available_memory(), "the machine's available memory"));
        if let Some(c) = s.cgroup_limits() {
            limits.push((c.free_memory, "the free part of the cgroup's memory limit"));
        }
    }
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given and reads nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut rl) } == 0
        && rl.rlim_cur != libc::RLIM_INFINITY
    {
        limits.push((rl.rlim_cur, "the address-space limit (ulimit -v)"));
    }
    limits
        .into_iter()
        .filter(|(b, _)| *b > 0)
        .min_by_key(|(b, _)| *b)
        .map(|(bytes, what)| Budget { bytes, what })
        .unwrap_or(Budget {
            bytes: u64::MAX,
            what: "no limit found",
        })
}

/// Refuse to read `what` when reading it would take more than this process can have: it
/// declares `declared` bytes (`shape` in words), and reading it holds about `copies` copies of
/// them at once.
pub fn ensure_fits(what: &str, shape: &str, declared: u64, copies: u64) -> Result<()> {
    let peak = declared.saturating_mul(copies.max(1));
    let b = budget();
    if peak > b.bytes {
        bail!(
            "{what}: declares {shape} = {} of data; reading it would hold about {} at once, more than the {} this process can have ({}). Refused before reading it",
            bytes_text(declared),
            bytes_text(peak),
            bytes_text(b.bytes),
            b.what
        );
    }
    Ok(())
}

/// `1.5 GiB`-style sizes for messages.
pub fn bytes_text(n: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} bytes")
    } else {
        format!("{v:.1} {} ({n} bytes)", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_declared_terabyte_is_refused_with_the_sizes_and_a_small_one_fits() {
        let b = budget();
        assert!(b.bytes > 1 << 20, "{b:?}");
        let e = ensure_fits("x.npz:x", "1024×1024×1024×1024 u8", 1 << 40, 3)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("x.npz:x: declares 1024×1024×1024×1024 u8 = 1.0 TiB"),
            "{e}"
        );
        assert!(e.contains("this process can have ("), "{e}");
        ensure_fits("small", "10", 10, 3).unwrap();
        assert_eq!(bytes_text(512), "512 bytes");
        assert_eq!(bytes_text(3 << 30), "3.0 GiB (3221225472 bytes)");
    }
}
