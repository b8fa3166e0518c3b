//! The device cgroup of cgroup v2: an eBPF program of type `BPF_PROG_TYPE_CGROUP_DEVICE`
//! attached to the container's cgroup, which the kernel asks on every open and mknod of a device
//! node, as runc and crun do. The program allows exactly the rules given (`c 1:3 rwm`,
//! `b *:* m`, `a` …) and denies everything else.
//!
//! The program reads `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`,
//! where `access_type` is `(access << 16) | type`: type 1 block, 2 char; access 1 mknod,
//! 2 read, 4 write.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// One allow rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// 1 block, 2 char; `None` for both (`a`).
    pub kind: Option<u32>,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// Bits: 1 mknod, 2 read, 4 write.
    pub access: u32,
}

impl Rule {
    /// Parses a devices-cgroup rule: `TYPE MAJOR:MINOR ACCESS` (`*` for any number), or `a`.
    pub fn parse(s: &str) -> Result<Rule, String> {
        let parts: Vec<&str> = s.split_whitespace().collect();
        let kind = match parts.first().copied() {
            Some("a") => None,
            Some("b") => Some(1),
            Some("c") => Some(2),
            _ => return Err(format!("device rule {s:?}: type must be a, b or c")),
        };
        if kind.is_none() && parts.len() == 1 {
            return Ok(Rule {
                kind: None,
                major: None,
                minor: None,
                access: 7,
            });
        }
        let (Some(nums), Some(acc)) = (parts.get(1), parts.get(2)) else {
            return Err(format!("device rule {s:?}: want TYPE MAJOR:MINOR ACCESS"));
        };
        let (maj, min) = nums
            .split_once(':')
            .ok_or_else(|| format!("device rule {s:?}: want MAJOR:MINOR"))?;
        let num = |v: &str| -> Result<Option<u32>, String> {
            if v == "*" {
                Ok(None)
            } else {
                v.parse()
                    .map(Some)
                    .map_err(|_| format!("device rule {s:?}: {v:?} is not a number"))
            }
        };
        let mut access = 0;
        for c in acc.chars() {
            access |= match c {
                'm' => 1,
                'r' => 2,
                'w' => 4,
                _ => return Err(format!("device rule {s:?}: access {c:?} is not r, w or m")),
            };
        }
        Ok(Rule {
            kind,
            major: num(maj)?,
            minor: num(min)?,
            access,
        })
    }
}

/// `struct bpf_insn`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | (dst & 0xf),
        off,
        imm,
    }
}

const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const AND_K: u8 = 0x57; // BPF_ALU64 | BPF_AND | BPF_K
const RSH_K: u8 = 0x77; // BPF_ALU64 | BPF_RSH | BPF_K
const MOV_X: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
const MOV_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

/// The program allowing exactly `rules`.
pub fn program(rules: &[Rule]) -> Vec<Insn> {
    // r2 = type, r3 = access, r4 = major, r5 = minor.
    let mut p = vec![
        insn(LDX_W, 2, 1, 0, 0),
        insn(AND_K, 2, 0, 0, 0xffff),
        insn(LDX_W, 3, 1, 0, 0),
        insn(RSH_K, 3, 0, 0, 16),
        insn(LDX_W, 4, 1, 4, 0),
        insn(LDX_W, 5, 1, 8, 0),
    ];
    for r in rules {
        // A block per rule: each failed test jumps past the block's end (to the next rule).
        let mut body = vec![];
        let mut jumps = vec![];
        let mut check = |body: &mut Vec<Insn>, reg: u8, val: i32| {
            jumps.push(body.len());
            body.push(insn(JNE_K, reg, 0, 0, val));
        };
        if let Some(k) = r.kind {
            check(&mut body, 2, k as i32);
        }
        // The access asked for must be within the rule's: (access & !allowed) == 0.
        body.push(insn(MOV_X, 1, 3, 0, 0));
        body.push(insn(AND_K, 1, 0, 0, (!r.access & 7) as i32));
        check(&mut body, 1, 0);
        if let Some(m) = r.major {
            check(&mut body, 4, m as i32);
        }
        if let Some(m) = r.minor {
            check(&mut body, 5, m as i32);
        }
        body.push(insn(MOV_K, 0, 0, 0, 1));
        body.push(insn(EXIT, 0, 0, 0, 0));
        let end = body.len();
        for at in jumps {
            body[at].off = (end - at - 1) as i16;
        }
        p.extend(body);
    }
    p.push(insn(MOV_K, 0, 0, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    // The rest of union bpf_attr, zeroed.
    rest: [u64; 12],
}

#[repr(C)]
#[derive(Default)]
struct ProgAttach {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
    rest: [u32; 11],
}

/// bpf(BPF_PROG_LOAD) of a device program, with a verifier log into `log` if given.
fn load(insns: &[Insn], log: Option<&mut Vec<u8>>) -> io::Result<OwnedFd> {
    let license = c"Apache-2.0";
    let (log_level, log_size, log_buf) = match log {
        Some(l) => (1, l.len() as u32, l.as_mut_ptr() as u64),
        None => (0, 0, 0),
    };
    let attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level,
        log_size,
        log_buf,
        ..Default::default()
    };
    // SAFETY: bpf(BPF_PROG_LOAD) reads `attr`, the instructions and the license it points to
    // (alive for the call) and writes at most log_size bytes into the log buffer.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoad,
            std::mem::size_of::<ProgLoad>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor the kernel just returned, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Loads the program allowing `rules` and attaches it to the cgroup v2 directory `dir`.
pub fn attach(dir: &Path, rules: &[Rule]) -> io::Result<()> {
    let insns = program(rules);
    // Without a log first: a verifier log that does not fit fails the load (ENOSPC). Only a
    // failed load is tried again with one, for the error message.
    let fd = match load(&insns, None) {
        Ok(fd) => fd,
        Err(e) => {
            let mut log = vec![0u8; 64 * 1024];
            let _ = load(&insns, Some(&mut log));
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            let tail: String = text.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
            return Err(io::Error::new(
                e.kind(),
                format!("loading the device filter: {e}: {tail}"),
            ));
        }
    };
    let prog = fd;
    let cg = std::fs::File::open(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
    let at = ProgAttach {
        target_fd: cg.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    // SAFETY: bpf(BPF_PROG_ATTACH) reads `at`; both descriptors are open for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            &at as *const ProgAttach,
            std::mem::size_of::<ProgAttach>(),
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("attaching the device filter to {}: {e}", dir.display()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse() {
        assert_eq!(
            Rule::parse("c 1:3 rwm").unwrap(),
            Rule {
                kind: Some(2),
                major: Some(1),
                minor: Some(3),
                access: 7
            }
        );
        assert_eq!(Rule::parse("b *:* m").unwrap().major, None);
        assert_eq!(Rule::parse("a").unwrap().kind, None);
        for bad in ["x 1:2 r", "c 1 r", "c a:1 r", "c 1:2 q", ""] {
            assert!(Rule::parse(bad).is_err(), "{bad}");
        }
    }

    /// The kernel runs the filter: a process in a cgroup v2 directory with it opens /dev/null
    /// (allowed) but not /dev/zero. Uses the v2 hierarchy of this machine (`/sys/fs/cgroup` on
    /// a v2 host, `/sys/fs/cgroup/unified` on a hybrid one); needs root.
    #[test]
    fn the_kernel_enforces_the_filter() {
        use std::os::unix::process::CommandExt;
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let base = if crate::cgroups::is_v2() {
            "/sys/fs/cgroup"
        } else {
            "/sys/fs/cgroup/unified"
        };
        let dir = Path::new(base).join(format!("skiff-devfilter-test-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        attach(&dir, &[Rule::parse("c 1:3 rwm").unwrap()]).unwrap();
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))
            .unwrap();
        let fd = procs.as_raw_fd();
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.args([
            "-c",
            "exec 3</dev/null && echo null-opened; exec 4</dev/zero && echo zero-opened",
        ]);
        // SAFETY: only write(2), async-signal-safe, on a descriptor open across the fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = cmd.output().unwrap();
        let _ = std::fs::remove_dir(&dir);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("null-opened"), "{text}");
        assert!(!text.contains("zero-opened"), "{text}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"),
            "{:?}",
            out
        );
    }

    #[test]
    fn every_jump_lands_inside_the_program() {
        let rules: Vec<Rule> = ["c 1:3 rwm", "b *:* m", "a", "c 136:* rw"]
            .iter()
            .map(|r| Rule::parse(r).unwrap())
            .collect();
        let p = program(&rules);
        for (i, ins) in p.iter().enumerate() {
            if ins.code == JNE_K {
                let to = i as i64 + 1 + ins.off as i64;
                assert!(
                    to > i as i64 && (to as usize) < p.len(),
                    "insn {i} jumps to {to}"
                );
                // A failed check jumps to the next rule's first instruction or the final deny.
                let next = &p[to as usize];
                assert!(
                    next.code == LDX_W
                        || next.code == JNE_K
                        || next.code == MOV_X
                        || next.code == MOV_K,
                    "{next:?}"
                );
            }
        }
        assert_eq!(p.last().unwrap().code, EXIT);
    }
}
