//! An OCI `linux.seccomp` section compiled to a classic BPF program with libseccomp. The shim
//! loads the program as it is (`seccomp(SECCOMP_SET_MODE_FILTER)`), so it needs no libseccomp.

use std::io::{Read, Seek};
use std::os::fd::AsFd;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction as A, LinuxSeccompArg, LinuxSeccompOperator as Op,
};

/// A compiled filter.
pub struct Program {
    /// `struct sock_filter` records in host byte order.
    pub bpf: Vec<u8>,
    /// Syscall names neither libseccomp nor this kernel knows, skipped.
    pub skipped: Vec<String>,
}

fn scmp_action(a: A, errno: Option<u32>) -> Result<ScmpAction, String> {
    let ret = |e: Option<u32>| e.unwrap_or(libc::EPERM as u32);
    Ok(match a {
        A::ScmpActAllow => ScmpAction::Allow,
        A::ScmpActErrno => ScmpAction::Errno(
            i32::try_from(ret(errno)).map_err(|_| format!("errnoRet {errno:?} is too large"))?,
        ),
        A::ScmpActKill | A::ScmpActKillThread => ScmpAction::KillThread,
        A::ScmpActKillProcess => ScmpAction::KillProcess,
        A::ScmpActTrap => ScmpAction::Trap,
        A::ScmpActTrace => ScmpAction::Trace(
            u16::try_from(ret(errno))
                .map_err(|_| format!("errnoRet {errno:?} is too large for SCMP_ACT_TRACE"))?,
        ),
        A::ScmpActLog => ScmpAction::Log,
        A::ScmpActNotify => ScmpAction::Notify,
    })
}

fn scmp_arch(a: Arch) -> ScmpArch {
    match a {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

fn condition(a: &LinuxSeccompArg) -> ScmpArgCompare {
    let index = a.index() as u32;
    let two = a.value_two().unwrap_or(0);
    match a.op() {
        Op::ScmpCmpNe => ScmpArgCompare::new(index, ScmpCompareOp::NotEqual, a.value()),
        Op::ScmpCmpLt => ScmpArgCompare::new(index, ScmpCompareOp::Less, a.value()),
        Op::ScmpCmpLe => ScmpArgCompare::new(index, ScmpCompareOp::LessOrEqual, a.value()),
        Op::ScmpCmpEq => ScmpArgCompare::new(index, ScmpCompareOp::Equal, a.value()),
        Op::ScmpCmpGe => ScmpArgCompare::new(index, ScmpCompareOp::GreaterEqual, a.value()),
        Op::ScmpCmpGt => ScmpArgCompare::new(index, ScmpCompareOp::Greater, a.value()),
        // OCI: `value` is the mask, `valueTwo` the datum compared with the masked argument.
        Op::ScmpCmpMaskedEq => {
            ScmpArgCompare::new(index, ScmpCompareOp::MaskedEqual(a.value()), two)
        }
    }
}

/// Compiles `s`. Errors name the rule (`syscalls[3]`) and the syscall.
pub fn compile(s: &LinuxSeccomp) -> Result<Program, String> {
    let default = scmp_action(s.default_action(), s.default_errno_ret())
        .map_err(|e| format!("defaultAction: {e}"))?;
    let mut ctx =
        ScmpFilterContext::new(default).map_err(|e| format!("creating the filter: {e}"))?;
    // A binary tree of syscall numbers instead of a linear list: a few more instructions, but
    // the kernel checks far fewer per syscall, and loading (which runs the filter for every
    // syscall number to find the always-allowed ones) takes half the time.
    ctx.set_ctl_optimize(2)
        .map_err(|e| format!("asking libseccomp for a binary-tree filter: {e}"))?;
    for a in s.architectures().iter().flatten() {
        let arch = scmp_arch(*a);
        if !ctx.is_arch_present(arch).unwrap_or(false) {
            ctx.add_arch(arch)
                .map_err(|e| format!("architectures: adding {a}: {e}"))?;
        }
    }
    let mut skipped = vec![];
    // The highest native syscall number the profile names: anything above it is newer than
    // the profile (or than this libseccomp) and gets ENOSYS, see `enosys_stub`.
    let mut highest = 0i32;
    for (i, rule) in s.syscalls().iter().flatten().enumerate() {
        let act = scmp_action(rule.action(), rule.errno_ret())
            .map_err(|e| format!("syscalls[{i}].errnoRet: {e}"))?;
        // libseccomp refuses a rule that repeats the default action; it would change nothing.
        if act == default {
            continue;
        }
        let args = rule.args().clone().unwrap_or_default();
        let conds: Vec<ScmpArgCompare> = args.iter().map(condition).collect();
        // Several conditions on one argument cannot all hold at once: as runc does, each
        // becomes a rule of its own (they are ORed); otherwise they are ANDed in one rule.
        let mut seen = [0u8; 6];
        for a in &args {
            seen[a.index().min(5)] += 1;
        }
        let separate = seen.iter().any(|n| *n > 1);
        for name in rule.names() {
            let Ok(nr) = ScmpSyscall::from_name(name) else {
                skipped.push(name.clone());
                continue;
            };
            highest = highest.max(nr.as_raw_syscall());
            let added = if conds.is_empty() {
                ctx.add_rule(act, nr)
            } else if separate {
                conds
                    .iter()
                    .try_for_each(|c| ctx.add_rule_conditional(act, nr, &[*c]).map(|_| ()))
                    .map(|_| &mut ctx)
            } else {
                ctx.add_rule_conditional(act, nr, &conds)
            };
            added.map_err(|e| format!("syscalls[{i}]: adding a rule for {name}: {e}"))?;
        }
    }
    let mut out = memfd()?;
    ctx.export_bpf(out.as_fd())
        .map_err(|e| format!("exporting the filter: {e}"))?;
    let mut bpf = vec![];
    out.rewind()
        .and_then(|_| out.read_to_end(&mut bpf))
        .map_err(|e| format!("reading the exported filter: {e}"))?;
    if bpf.is_empty() || bpf.len() % 8 != 0 {
        return Err(format!(
            "libseccomp exported {} bytes, not a BPF program",
            bpf.len()
        ));
    }
    if s.default_action() == A::ScmpActErrno && highest > 0 {
        if let Some(stub) = enosys_stub(highest as u32) {
            bpf.splice(0..0, stub);
        }
    }
    Ok(Program { bpf, skipped })
}

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0..2].copy_from_slice(&code.to_ne_bytes());
    b[2] = jt;
    b[3] = jf;
    b[4..8].copy_from_slice(&k.to_ne_bytes());
    b
}

/// Instructions put in front of a deny-by-default (ERRNO) program: a native syscall numbered
/// above every syscall the profile names returns ENOSYS instead of the default errno, as runc
/// does. Such a syscall is newer than the profile or than the libseccomp that compiled it;
/// C libraries probe new syscalls and fall back to older ones only on ENOSYS (glibc's
/// fchmodat → fchmodat2, clone3 …), while EPERM would break them. `None` on architectures
/// without a stub here.
fn enosys_stub(highest: u32) -> Option<Vec<u8>> {
    use libc::{BPF_ABS, BPF_JEQ, BPF_JGT, BPF_JMP, BPF_JSET, BPF_K, BPF_LD, BPF_RET, BPF_W};
    let ld = (BPF_LD | BPF_W | BPF_ABS) as u16;
    let jeq = (BPF_JMP | BPF_JEQ | BPF_K) as u16;
    let jgt = (BPF_JMP | BPF_JGT | BPF_K) as u16;
    let jset = (BPF_JMP | BPF_JSET | BPF_K) as u16;
    let ret = (BPF_RET | BPF_K) as u16;
    // struct seccomp_data: nr at 0, arch at 4.
    let prog: Vec<[u8; 8]> = match std::env::consts::ARCH {
        "x86_64" => vec![
            insn(ld, 0, 0, 4),
            insn(jeq, 0, 4, AUDIT_ARCH_X86_64), // another arch: to the program
            insn(ld, 0, 0, 0),
            insn(jset, 2, 0, X32_SYSCALL_BIT), // x32 numbers: to the program
            insn(jgt, 0, 1, highest),
            insn(ret, 0, 0, SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        ],
        "aarch64" => vec![
            insn(ld, 0, 0, 4),
            insn(jeq, 0, 3, AUDIT_ARCH_AARCH64),
            insn(ld, 0, 0, 0),
            insn(jgt, 0, 1, highest),
            insn(ret, 0, 0, SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        ],
        _ => return None,
    };
    Some(prog.concat())
}

fn memfd() -> Result<std::fs::File, String> {
    let fd = nix::sys::memfd::memfd_create(
        c"seccomp-bpf",
        nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
    )
    .map_err(|e| format!("memfd_create: {e}"))?;
    Ok(std::fs::File::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxSyscall;

    #[test]
    fn compiles_and_skips_unknown_names() {
        let mut s = LinuxSeccomp::default();
        s.set_default_action(A::ScmpActErrno);
        s.set_architectures(Some(vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86]));
        let mut r = LinuxSyscall::default();
        r.set_names(vec!["read".into(), "no_such_syscall_here".into()]);
        r.set_action(A::ScmpActAllow);
        s.set_syscalls(Some(vec![r]));
        let p = compile(&s).unwrap();
        assert_eq!(p.skipped, ["no_such_syscall_here"]);
        assert!(p.bpf.len() >= 8 * 4, "{}", p.bpf.len());
    }

    #[test]
    fn every_action_and_operator_compiles() {
        use oci_spec::runtime::LinuxSeccompArgBuilder;
        let mut s = LinuxSeccomp::default();
        s.set_default_action(A::ScmpActAllow);
        let ops = [
            Op::ScmpCmpNe,
            Op::ScmpCmpLt,
            Op::ScmpCmpLe,
            Op::ScmpCmpEq,
            Op::ScmpCmpGe,
            Op::ScmpCmpGt,
            Op::ScmpCmpMaskedEq,
        ];
        let actions = [
            (A::ScmpActErrno, Some(13)),
            (A::ScmpActKill, None),
            (A::ScmpActKillThread, None),
            (A::ScmpActKillProcess, None),
            (A::ScmpActTrap, None),
            (A::ScmpActTrace, Some(7)),
            (A::ScmpActLog, None),
            (A::ScmpActNotify, None),
        ];
        let names = ["read", "write", "openat", "close", "mmap", "munmap", "brk"];
        let mut rules = vec![];
        for (i, op) in ops.iter().enumerate() {
            let (act, errno) = actions[i % actions.len()];
            let mut r = LinuxSyscall::default();
            r.set_names(vec![names[i].into()]);
            r.set_action(act);
            r.set_errno_ret(errno);
            r.set_args(Some(vec![LinuxSeccompArgBuilder::default()
                .index(1usize)
                .value(0x10u64)
                .value_two(0x10u64)
                .op(*op)
                .build()
                .unwrap()]));
            rules.push(r);
        }
        s.set_syscalls(Some(rules));
        let p = compile(&s).unwrap();
        assert!(p.skipped.is_empty());
        assert!(p.bpf.len() / 8 > 7 * 3, "{} instructions", p.bpf.len() / 8);
    }

    /// Loads the program in a forked child and returns the errno of getppid (named by no rule,
    /// older than the rules' syscalls) and of syscall 1000 (newer than all of them).
    #[cfg(target_arch = "x86_64")]
    fn errnos_under(bpf: &[u8]) -> (i32, i32) {
        let prog = skiff_shim::api::bpf_program(bpf);
        let fprog = libc::sock_fprog {
            len: prog.len() as u16,
            filter: prog.as_ptr() as *mut libc::sock_filter,
        };
        let mut fds = [0i32; 2];
        // SAFETY: pipe writes two descriptors into the array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: the child makes only raw syscalls (async-signal-safe) and leaves with _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: raw syscalls on our own memory and descriptors; see above.
            unsafe {
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                if libc::syscall(libc::SYS_seccomp, 1, 0, &fprog as *const libc::sock_fprog) != 0 {
                    libc::_exit(2);
                }
                let mut out = [0i32; 2];
                libc::syscall(libc::SYS_getppid);
                out[0] = *libc::__errno_location();
                libc::syscall(1000);
                out[1] = *libc::__errno_location();
                libc::write(fds[1], out.as_ptr().cast(), 8);
                libc::_exit(0);
            }
        }
        let mut out = [0i32; 2];
        let mut status = 0;
        // SAFETY: reading into our own array and reaping our own child.
        unsafe {
            libc::close(fds[1]);
            assert_eq!(libc::read(fds[0], out.as_mut_ptr().cast(), 8), 8);
            libc::close(fds[0]);
            libc::waitpid(pid, &mut status, 0);
        }
        (out[0], out[1])
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn syscalls_newer_than_the_profile_get_enosys() {
        let mut s = LinuxSeccomp::default();
        s.set_default_action(A::ScmpActErrno);
        let mut r = LinuxSyscall::default();
        r.set_names(vec!["write".into(), "exit_group".into(), "exit".into()]);
        r.set_action(A::ScmpActAllow);
        s.set_syscalls(Some(vec![r]));
        let p = compile(&s).unwrap();
        assert_eq!(errnos_under(&p.bpf), (libc::EPERM, libc::ENOSYS));
        // Allow by default: no stub, the kernel's own ENOSYS for 1000, getppid works.
        s.set_default_action(A::ScmpActAllow);
        let mut r = LinuxSyscall::default();
        r.set_names(vec!["chmod".into()]);
        r.set_action(A::ScmpActErrno);
        s.set_syscalls(Some(vec![r]));
        let p = compile(&s).unwrap();
        assert_eq!(errnos_under(&p.bpf).1, libc::ENOSYS);
    }
}
