//! How much memory this process may still use, for up-front size checks (a size that cannot
//! fit is an error with the numbers, not an allocation abort).

/// Memory available now, in bytes (`MemAvailable` of `/proc/meminfo`, capped by a cgroup v2
/// `memory.max`), or `None` where it cannot be read (then callers make no check).
pub fn available_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let avail = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())?
        .checked_mul(1024)?;
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok());
    Some(cgroup.map_or(avail, |c| c.min(avail)))
}

/// `1.5 GiB`-style text.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `Some((needed, available))` as text when `needed` bytes (`None`: over 2⁶⁴) exceed what is
/// available; `None` when it fits or nothing is known.
pub fn exceeds(needed: Option<u64>) -> Option<(String, String)> {
    let available = available_bytes();
    let too_big = match (needed, available) {
        (None, _) => true,
        (Some(n), Some(a)) => n > a,
        (Some(_), None) => false,
    };
    too_big.then(|| {
        (
            needed.map_or_else(|| "more than 16 EiB".to_string(), human),
            available.map_or_else(|| "an unknown amount".to_string(), human),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_and_compare() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(3 << 30), "3.0 GiB");
        assert!(exceeds(Some(1)).is_none());
        assert!(exceeds(None).is_some());
        if let Some(a) = available_bytes() {
            assert!(exceeds(Some(a.saturating_mul(4))).is_some());
        }
    }
}
