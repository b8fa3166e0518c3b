//! What skiffd (dumps) and the shim (restores) share about CRIU: reading its logs.

use std::path::Path;

/// The error lines of a CRIU log (the last few), or its last lines when it has none: what a
/// failed dump or restore reports instead of just "criu failed".
pub fn log_errors(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let errors: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains("Error"))
        // Noise where skiffd lacks CAP_SYS_RESOURCE; never why a dump or restore failed.
        .filter(|l| !l.contains("Can't setup RLIMIT_NOFILE"))
        .collect();
    let pick: Vec<&str> = if errors.is_empty() {
        lines.iter().rev().take(5).rev().copied().collect()
    } else {
        errors.iter().rev().take(5).rev().copied().collect()
    };
    if pick.is_empty() {
        format!("no log at {}", log.display())
    } else {
        pick.join(" | ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_picked_from_the_log() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("restore.log");
        std::fs::write(
            &log,
            "(00.01) a\n(00.02) Error (criu/util.c:1533): rlimit: Can't setup RLIMIT_NOFILE for self\n\
             (00.03) b\n(00.04) Error (criu/mount.c:1): No mapping for 12:(null) mountpoint\n(00.05) c\n",
        )
        .unwrap();
        assert_eq!(
            log_errors(&log),
            "(00.04) Error (criu/mount.c:1): No mapping for 12:(null) mountpoint"
        );
        std::fs::write(&log, "1\n2\n3\n4\n5\n6\n").unwrap();
        assert_eq!(log_errors(&log), "2 | 3 | 4 | 5 | 6");
        assert!(log_errors(&d.path().join("none")).contains("no log at"));
    }
}
