//! Gives the read-only pages of the shim's binary back once it is idle. A pod's shim runs
//! through a lot of its binary while it sets the pod up and starts containers, then mostly
//! sleeps; the code it ran, the constants it read and the relocation table its start-up code
//! read once stay mapped and count in its resident memory (about 2 MiB of 3). Half a second
//! after the last request, the supervisor unmaps these read-only file pages of its binary with
//! `MADV_DONTNEED`: they stay in the page cache, shared with every other shim, and the next
//! request maps back, with minor faults, the little it uses.

use std::time::Duration;

use tokio::sync::Notify;

/// Quiet time after a request before the read-only pages go.
pub const QUIET: Duration = Duration::from_millis(500);

/// Waits for activity, then for [`QUIET`] without any, then drops the read-only file pages;
/// forever.
pub async fn trim_when_idle(activity: &Notify) {
    loop {
        activity.notified().await;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(QUIET) => break,
                _ = activity.notified() => continue,
            }
        }
        drop_code_pages();
    }
}

/// Unmaps the pages of this binary's read-only mappings (code, constants, relocations) that are
/// plain file pages. A mapping holding private copies (a debugger's breakpoints; the constants
/// the start-up code relocated, made read-only after) is left alone: dropping those would lose
/// them.
pub fn drop_code_pages() {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return;
    };
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    for (start, end) in code_mappings(&smaps, &exe.to_string_lossy()) {
        let Some(len) = end.checked_sub(start) else {
            continue;
        };
        // SAFETY: [start, end) is a read-only private mapping of this binary with no private
        // (anonymous) pages, as /proc/self/smaps shows it; MADV_DONTNEED only drops the page
        // table entries, and the same file pages map back on the next access.
        unsafe {
            libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED);
        }
    }
}

/// The read-only (`r-xp`, `r--p`) mappings of `exe` in `smaps` without anonymous pages, as
/// (start, end).
fn code_mappings(smaps: &str, exe: &str) -> Vec<(usize, usize)> {
    let mut out = vec![];
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) {
                let perms = fields.next().unwrap_or("");
                let path = line.split_whitespace().nth(5).unwrap_or("");
                current = ((perms == "r-xp" || perms == "r--p") && path == exe).then_some((a, b));
                continue;
            }
        }
        if let (Some(m), Some(v)) = (current, line.strip_prefix("Anonymous:")) {
            if v.trim().trim_end_matches("kB").trim() == "0" {
                out.push(m);
            }
            current = None;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clean_read_only_pages_of_the_binary() {
        let smaps = "\
55d000000000-55d000100000 r--p 00000000 08:01 12 /bin/skiff-shim
Rss:                 100 kB
Anonymous:             0 kB
55d000100000-55d000400000 r-xp 00100000 08:01 12 /bin/skiff-shim
Rss:                2000 kB
Anonymous:             0 kB
55d000400000-55d000500000 r-xp 00400000 08:01 12 /bin/skiff-shim
Anonymous:             4 kB
55d000500000-55d000600000 r--p 00500000 08:01 12 /bin/skiff-shim
Anonymous:            16 kB
55d000600000-55d000601000 rw-p 00600000 08:01 12 /bin/skiff-shim
Anonymous:             0 kB
7f0000000000-7f0000100000 r-xp 00000000 08:01 13 /lib/libc.so.6
Anonymous:             0 kB
7f0000200000-7f0000300000 rw-p 00000000 00:00 0
Anonymous:          1024 kB
";
        assert_eq!(
            code_mappings(smaps, "/bin/skiff-shim"),
            vec![
                (0x55d000000000, 0x55d000100000),
                (0x55d000100000, 0x55d000400000)
            ]
        );
    }

    #[test]
    fn dropping_code_pages_lowers_resident_code_and_runs_on() {
        fn rss_file_kib() -> u64 {
            std::fs::read_to_string("/proc/self/status")
                .unwrap()
                .lines()
                .find_map(|l| l.strip_prefix("RssFile:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap()
        }
        // Other tests run on other threads of this process and fault code back in meanwhile:
        // the drop must show in one of a few tries.
        let mut seen = vec![];
        for _ in 0..10 {
            let before = rss_file_kib();
            drop_code_pages();
            let after = rss_file_kib();
            seen.push((before, after));
            if after < before {
                break;
            }
        }
        assert!(
            seen.iter().any(|(before, after)| after < before),
            "RssFile before -> after, kB: {seen:?}"
        );
        // Still running: the code maps back.
        assert_eq!(format!("{}", 6 * 7), "42");
    }
}
