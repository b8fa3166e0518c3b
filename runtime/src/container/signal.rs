//! Stop signals: the image's `StopSignal` (a name such as `SIGUSR1`, `USR1`, `SIGRTMIN+3`, or a
//! number), the CRI's `ContainerConfig.stop_signal` enum (KEP-4960) that overrides it, and the
//! enum `ContainerStatus.stop_signal` reports.

use skiff_proto::cri::Signal;

/// glibc's and Go's first and last real-time signals (the kernel's 32 and 33 are libc's own).
const RTMIN: i32 = 34;
const RTMAX: i32 = 64;

/// The number of a signal named as in an image config: `SIGTERM`, `TERM`, `sigterm`, `15`,
/// `SIGRTMIN+3`, `RTMAX-2`, or the CRI enum's spellings (`SIGRTMINPLUS3`, `SIGRTMAXMINUS2`).
/// `None` for anything else, a number outside 1..=64 included.
pub fn number(name: &str) -> Option<i32> {
    let s = name.trim();
    if let Ok(n) = s.parse::<i32>() {
        return (1..=RTMAX).contains(&n).then_some(n);
    }
    let upper = s.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    let rt = |base: i32, rest: &str, sign: i32| -> Option<i32> {
        let off: i32 = if rest.is_empty() {
            0
        } else {
            rest.parse().ok()?
        };
        let n = base + sign * off;
        (RTMIN..=RTMAX).contains(&n).then_some(n)
    };
    for (prefix, base, sign) in [
        ("RTMINPLUS", RTMIN, 1),
        ("RTMIN+", RTMIN, 1),
        ("RTMAXMINUS", RTMAX, -1),
        ("RTMAX-", RTMAX, -1),
    ] {
        if let Some(rest) = bare.strip_prefix(prefix) {
            return rt(base, rest, sign);
        }
    }
    match bare {
        "RTMIN" => return Some(RTMIN),
        "RTMAX" => return Some(RTMAX),
        // Aliases nix does not parse.
        "CLD" => return Some(libc::SIGCHLD),
        "POLL" => return Some(libc::SIGIO),
        "IOT" => return Some(libc::SIGABRT),
        _ => {}
    }
    format!("SIG{bare}")
        .parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as i32)
}

/// The number of a CRI `Signal`; `None` for `RUNTIME_DEFAULT` (the image's or SIGTERM).
pub fn from_cri(s: Signal) -> Option<i32> {
    match s {
        Signal::RuntimeDefault => None,
        other => number(other.as_str_name()),
    }
}

/// The CRI enum for signal number `n` (its first name: SIGABRT, not SIGIOT); `RUNTIME_DEFAULT`
/// for a number the enum has no name for.
pub fn to_cri(n: i32) -> Signal {
    (1..=65)
        .filter_map(|v| Signal::try_from(v).ok())
        .find(|s| from_cri(*s) == Some(n))
        .unwrap_or(Signal::RuntimeDefault)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_numbers_and_real_time_signals() {
        assert_eq!(number("SIGUSR1"), Some(libc::SIGUSR1));
        assert_eq!(number("usr1"), Some(libc::SIGUSR1));
        assert_eq!(number("9"), Some(9));
        assert_eq!(number("SIGRTMIN+3"), Some(37));
        assert_eq!(number("RTMAX-2"), Some(62));
        assert_eq!(number("SIGRTMAX"), Some(64));
        assert_eq!(number("SIGRTMIN+40"), None);
        assert_eq!(number("99999"), None);
        assert_eq!(number("0"), None);
        assert_eq!(number("SIGNOPE"), None);
        assert_eq!(number(""), None);
    }

    #[test]
    fn every_cri_signal_has_a_number_and_comes_back() {
        for v in 1..=65 {
            let s = Signal::try_from(v).unwrap();
            let n = from_cri(s).unwrap_or_else(|| panic!("{s:?} has no number"));
            let back = to_cri(n);
            assert_eq!(from_cri(back), Some(n), "{s:?}");
        }
        assert_eq!(to_cri(libc::SIGTERM), Signal::Sigterm);
        assert_eq!(to_cri(libc::SIGABRT), Signal::Sigabrt);
        assert_eq!(to_cri(libc::SIGCHLD), Signal::Sigchld);
        assert_eq!(from_cri(Signal::Sigrtminplus1), Some(35));
        assert_eq!(from_cri(Signal::Sigrtmaxminus1), Some(63));
        assert_eq!(from_cri(Signal::RuntimeDefault), None);
    }
}
