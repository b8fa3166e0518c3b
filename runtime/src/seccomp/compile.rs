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
    for a in s.architectures().iter().flatten() {
        let arch = scmp_arch(*a);
        if !ctx.is_arch_present(arch).unwrap_or(false) {
            ctx.add_arch(arch)
                .map_err(|e| format!("architectures: adding {a}: {e}"))?;
        }
    }
    let mut skipped = vec![];
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
    Ok(Program { bpf, skipped })
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
}
