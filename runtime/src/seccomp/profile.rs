//! Seccomp profiles as users write them — the OCI runtime-spec format and the Docker superset
//! (`archMap`, `name`, `includes`/`excludes`, `minKernel`) — resolved for one container into the
//! plain OCI `linux.seccomp` section that goes into its config.json.
//!
//! Resolution keeps the rules whose conditions hold for this container: its capabilities
//! (bounding set), this node's architecture and kernel version. Every error names the field
//! (`syscalls[3].args[0].op`) so a user can find it in the file.

use std::collections::HashSet;

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction as A, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompFilterFlag as F, LinuxSeccompOperator as Op, LinuxSyscall,
};
use serde_json::{Map, Value};

/// What resolution depends on besides the profile.
pub struct Context<'a> {
    /// The container's bounding capabilities, as `CAP_…` names.
    pub caps: &'a HashSet<String>,
    /// The names this node's architecture goes by (`amd64`, `x86_64`, `SCMP_ARCH_X86_64`).
    pub arch: &'a [&'a str],
    /// The running kernel's version (major, minor).
    pub kernel: (u32, u32),
}

type R<T> = Result<T, String>;

/// The architectures libseccomp knows, by their profile names.
const ARCHES: &[(&str, Arch)] = &[
    ("SCMP_ARCH_X86", Arch::ScmpArchX86),
    ("SCMP_ARCH_X86_64", Arch::ScmpArchX86_64),
    ("SCMP_ARCH_X32", Arch::ScmpArchX32),
    ("SCMP_ARCH_ARM", Arch::ScmpArchArm),
    ("SCMP_ARCH_AARCH64", Arch::ScmpArchAarch64),
    ("SCMP_ARCH_MIPS", Arch::ScmpArchMips),
    ("SCMP_ARCH_MIPS64", Arch::ScmpArchMips64),
    ("SCMP_ARCH_MIPS64N32", Arch::ScmpArchMips64n32),
    ("SCMP_ARCH_MIPSEL", Arch::ScmpArchMipsel),
    ("SCMP_ARCH_MIPSEL64", Arch::ScmpArchMipsel64),
    ("SCMP_ARCH_MIPSEL64N32", Arch::ScmpArchMipsel64n32),
    ("SCMP_ARCH_PPC", Arch::ScmpArchPpc),
    ("SCMP_ARCH_PPC64", Arch::ScmpArchPpc64),
    ("SCMP_ARCH_PPC64LE", Arch::ScmpArchPpc64le),
    ("SCMP_ARCH_S390", Arch::ScmpArchS390),
    ("SCMP_ARCH_S390X", Arch::ScmpArchS390x),
    ("SCMP_ARCH_PARISC", Arch::ScmpArchParisc),
    ("SCMP_ARCH_PARISC64", Arch::ScmpArchParisc64),
    ("SCMP_ARCH_RISCV64", Arch::ScmpArchRiscv64),
    ("SCMP_ARCH_LOONGARCH64", Arch::ScmpArchLoongarch64),
    ("SCMP_ARCH_M68K", Arch::ScmpArchM68k),
    ("SCMP_ARCH_SH", Arch::ScmpArchSh),
    ("SCMP_ARCH_SHEB", Arch::ScmpArchSheb),
];

/// The names this machine's architecture goes by in profiles: Go's (`includes.arches` in
/// Docker profiles), the kernel's and libseccomp's.
pub fn native_arch_names() -> &'static [&'static str] {
    match std::env::consts::ARCH {
        "x86_64" => &["amd64", "x86_64", "SCMP_ARCH_X86_64"],
        "x86" => &["386", "x86", "i386", "SCMP_ARCH_X86"],
        "aarch64" => &["arm64", "aarch64", "SCMP_ARCH_AARCH64"],
        "arm" => &["arm", "SCMP_ARCH_ARM"],
        "riscv64" => &["riscv64", "SCMP_ARCH_RISCV64"],
        "s390x" => &["s390x", "SCMP_ARCH_S390X"],
        "powerpc64" => &["ppc64le", "ppc64", "SCMP_ARCH_PPC64LE", "SCMP_ARCH_PPC64"],
        "loongarch64" => &["loong64", "loongarch64", "SCMP_ARCH_LOONGARCH64"],
        "mips64" => &[
            "mips64le",
            "mips64",
            "SCMP_ARCH_MIPSEL64",
            "SCMP_ARCH_MIPS64",
        ],
        _ => &[],
    }
}

/// The running kernel's (major, minor) version.
pub fn kernel_version() -> (u32, u32) {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    parse_version(&release).unwrap_or((0, 0))
}

fn parse_version(s: &str) -> Option<(u32, u32)> {
    let mut it = s.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

fn action(v: &Value, field: &str) -> R<A> {
    let s = v
        .as_str()
        .ok_or_else(|| format!("{field}: must be a string such as \"SCMP_ACT_ERRNO\""))?;
    Ok(match s {
        "SCMP_ACT_ALLOW" => A::ScmpActAllow,
        "SCMP_ACT_ERRNO" => A::ScmpActErrno,
        "SCMP_ACT_KILL" => A::ScmpActKill,
        "SCMP_ACT_KILL_THREAD" => A::ScmpActKillThread,
        "SCMP_ACT_KILL_PROCESS" => A::ScmpActKillProcess,
        "SCMP_ACT_TRAP" => A::ScmpActTrap,
        "SCMP_ACT_TRACE" => A::ScmpActTrace,
        "SCMP_ACT_LOG" => A::ScmpActLog,
        "SCMP_ACT_NOTIFY" => A::ScmpActNotify,
        other => {
            return Err(format!(
                "{field}: unknown action {other:?} (one of SCMP_ACT_ALLOW, SCMP_ACT_ERRNO, \
                 SCMP_ACT_KILL, SCMP_ACT_KILL_PROCESS, SCMP_ACT_KILL_THREAD, SCMP_ACT_TRAP, \
                 SCMP_ACT_TRACE, SCMP_ACT_LOG, SCMP_ACT_NOTIFY)"
            ))
        }
    })
}

fn operator(v: &Value, field: &str) -> R<Op> {
    let s = v
        .as_str()
        .ok_or_else(|| format!("{field}: must be a string such as \"SCMP_CMP_EQ\""))?;
    Ok(match s {
        "SCMP_CMP_NE" => Op::ScmpCmpNe,
        "SCMP_CMP_LT" => Op::ScmpCmpLt,
        "SCMP_CMP_LE" => Op::ScmpCmpLe,
        "SCMP_CMP_EQ" => Op::ScmpCmpEq,
        "SCMP_CMP_GE" => Op::ScmpCmpGe,
        "SCMP_CMP_GT" => Op::ScmpCmpGt,
        "SCMP_CMP_MASKED_EQ" => Op::ScmpCmpMaskedEq,
        other => {
            return Err(format!(
                "{field}: unknown operator {other:?} (one of SCMP_CMP_NE, SCMP_CMP_LT, \
                 SCMP_CMP_LE, SCMP_CMP_EQ, SCMP_CMP_GE, SCMP_CMP_GT, SCMP_CMP_MASKED_EQ)"
            ))
        }
    })
}

fn arch(v: &Value, field: &str) -> R<Arch> {
    let s = v
        .as_str()
        .ok_or_else(|| format!("{field}: must be a string"))?;
    ARCHES
        .iter()
        .find(|(n, _)| *n == s)
        .map(|(_, a)| *a)
        .ok_or_else(|| format!("{field}: unknown architecture {s:?}"))
}

fn flag(v: &Value, field: &str) -> R<F> {
    Ok(match v.as_str() {
        Some("SECCOMP_FILTER_FLAG_TSYNC") => F::SeccompFilterFlagTsync,
        Some("SECCOMP_FILTER_FLAG_LOG") => F::SeccompFilterFlagLog,
        Some("SECCOMP_FILTER_FLAG_SPEC_ALLOW") => F::SeccompFilterFlagSpecAllow,
        Some("SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV") => F::SeccompFilterFlagWaitKillableRecv,
        _ => {
            return Err(format!(
                "{field}: unknown flag {v} (one of SECCOMP_FILTER_FLAG_TSYNC, \
                 SECCOMP_FILTER_FLAG_LOG, SECCOMP_FILTER_FLAG_SPEC_ALLOW, \
                 SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV)"
            ))
        }
    })
}

fn array<'v>(obj: &'v Map<String, Value>, key: &str, field: &str) -> R<&'v [Value]> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(format!("{field}: must be a list")),
    }
}

fn strings(obj: &Map<String, Value>, key: &str, field: &str) -> R<Vec<String>> {
    array(obj, key, field)?
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("{field}[{i}]: must be a string"))
        })
        .collect()
}

fn u32_of(v: &Value, field: &str) -> R<u32> {
    v.as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| format!("{field}: must be a non-negative 32-bit integer, got {v}"))
}

/// errnoRet is only meaningful for the actions that return a value.
fn errno_ret(obj: &Map<String, Value>, key: &str, act: A, field: &str) -> R<Option<u32>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            if !matches!(act, A::ScmpActErrno | A::ScmpActTrace) {
                return Err(format!(
                    "{field}: {act} returns no value; errnoRet goes only with SCMP_ACT_ERRNO \
                     or SCMP_ACT_TRACE"
                ));
            }
            u32_of(v, field).map(Some)
        }
    }
}

fn norm_cap(c: &str) -> String {
    let c = c.trim().to_ascii_uppercase();
    if c.starts_with("CAP_") {
        c
    } else {
        format!("CAP_{c}")
    }
}

/// The `includes`/`excludes` conditions of a Docker profile rule.
struct Conditions {
    caps: Vec<String>,
    arches: Vec<String>,
    min_kernel: Option<(u32, u32)>,
}

fn conditions(rule: &Map<String, Value>, key: &str, field: &str) -> R<Option<Conditions>> {
    let field = format!("{field}.{key}");
    let obj = match rule.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(format!("{field}: must be an object")),
    };
    let min_kernel = match obj.get("minKernel") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(parse_version(s).ok_or_else(|| {
            format!("{field}.minKernel: {s:?} is not a kernel version like \"4.8\"")
        })?),
        Some(v) => return Err(format!("{field}.minKernel: must be a string, got {v}")),
    };
    Ok(Some(Conditions {
        caps: strings(obj, "caps", &format!("{field}.caps"))?,
        arches: strings(obj, "arches", &format!("{field}.arches"))?,
        min_kernel,
    }))
}

fn args(rule: &Map<String, Value>, field: &str) -> R<Vec<LinuxSeccompArg>> {
    let mut out = vec![];
    for (i, a) in array(rule, "args", &format!("{field}.args"))?
        .iter()
        .enumerate()
    {
        let f = format!("{field}.args[{i}]");
        let a = a
            .as_object()
            .ok_or_else(|| format!("{f}: must be an object"))?;
        let index = a
            .get("index")
            .and_then(Value::as_u64)
            .filter(|i| *i < 6)
            .ok_or_else(|| format!("{f}.index: must be an argument index from 0 to 5"))?;
        let value = a
            .get("value")
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("{f}.value: must be a non-negative 64-bit integer"))?;
        let value_two = match a.get("valueTwo") {
            None | Some(Value::Null) => 0,
            Some(v) => v
                .as_u64()
                .ok_or_else(|| format!("{f}.valueTwo: must be a non-negative 64-bit integer"))?,
        };
        let op = operator(
            a.get("op").ok_or_else(|| format!("{f}.op: is required"))?,
            &format!("{f}.op"),
        )?;
        let arg = LinuxSeccompArgBuilder::default()
            .index(index as usize)
            .value(value)
            .value_two(value_two)
            .op(op)
            .build()
            .map_err(|e| format!("{f}: {e}"))?;
        out.push(arg);
    }
    Ok(out)
}

/// Parses `text` and resolves it for the container `ctx` describes.
pub fn resolve(text: &[u8], ctx: &Context<'_>) -> R<LinuxSeccomp> {
    let root: Value = serde_json::from_slice(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let root = root
        .as_object()
        .ok_or("the profile must be a JSON object")?;
    let default_action = action(
        root.get("defaultAction")
            .ok_or("defaultAction: is required")?,
        "defaultAction",
    )?;
    let default_errno = errno_ret(root, "defaultErrnoRet", default_action, "defaultErrnoRet")?;

    let mut architectures: Vec<Arch> = vec![];
    for (i, a) in array(root, "architectures", "architectures")?
        .iter()
        .enumerate()
    {
        architectures.push(arch(a, &format!("architectures[{i}]"))?);
    }
    let arch_map = array(root, "archMap", "archMap")?;
    if !arch_map.is_empty() && !architectures.is_empty() {
        return Err("architectures and archMap: use one or the other, not both".into());
    }
    for (i, m) in arch_map.iter().enumerate() {
        let f = format!("archMap[{i}]");
        let m = m
            .as_object()
            .ok_or_else(|| format!("{f}: must be an object"))?;
        let main = m
            .get("architecture")
            .ok_or_else(|| format!("{f}.architecture: is required"))?;
        let main_arch = arch(main, &format!("{f}.architecture"))?;
        let subs = array(m, "subArchitectures", &format!("{f}.subArchitectures"))?
            .iter()
            .enumerate()
            .map(|(j, s)| arch(s, &format!("{f}.subArchitectures[{j}]")))
            .collect::<R<Vec<_>>>()?;
        if main.as_str().is_some_and(|n| ctx.arch.contains(&n)) {
            architectures.push(main_arch);
            architectures.extend(subs);
        }
    }

    let mut flags = vec![];
    for (i, f) in array(root, "flags", "flags")?.iter().enumerate() {
        flags.push(flag(f, &format!("flags[{i}]"))?);
    }
    let listener_path = match root.get("listenerPath") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) if p.starts_with('/') => Some(p.clone()),
        Some(v) => return Err(format!("listenerPath: must be an absolute path, got {v}")),
    };
    let listener_metadata = match root.get("listenerMetadata") {
        None | Some(Value::Null) => None,
        Some(Value::String(m)) => Some(m.clone()),
        Some(v) => return Err(format!("listenerMetadata: must be a string, got {v}")),
    };

    let mut syscalls = vec![];
    let mut notify = default_action == A::ScmpActNotify;
    for (i, rule) in array(root, "syscalls", "syscalls")?.iter().enumerate() {
        let field = format!("syscalls[{i}]");
        let rule = rule
            .as_object()
            .ok_or_else(|| format!("{field}: must be an object"))?;
        let mut names = strings(rule, "names", &format!("{field}.names"))?;
        match rule.get("name") {
            None | Some(Value::Null) => {}
            Some(Value::String(n)) if names.is_empty() => names.push(n.clone()),
            Some(Value::String(_)) => {
                return Err(format!(
                    "{field}: has both name and names; use one or the other"
                ))
            }
            Some(v) => return Err(format!("{field}.name: must be a string, got {v}")),
        }
        if names.is_empty() {
            return Err(format!("{field}.names: names no syscall"));
        }
        let act = action(
            rule.get("action")
                .ok_or_else(|| format!("{field}.action: is required"))?,
            &format!("{field}.action"),
        )?;
        let errno = errno_ret(rule, "errnoRet", act, &format!("{field}.errnoRet"))?;
        let args = args(rule, &field)?;
        // Validated whether or not the rule applies here, so a bad profile is bad everywhere.
        let includes = conditions(rule, "includes", &field)?;
        let excludes = conditions(rule, "excludes", &field)?;
        if !applies(includes.as_ref(), excludes.as_ref(), ctx) {
            continue;
        }
        notify |= act == A::ScmpActNotify;
        let mut s = LinuxSyscall::default();
        s.set_names(names);
        s.set_action(act);
        s.set_errno_ret(errno);
        if !args.is_empty() {
            s.set_args(Some(args));
        }
        syscalls.push(s);
    }
    if notify && listener_path.is_none() {
        return Err(
            "listenerPath: SCMP_ACT_NOTIFY needs the path of a seccomp agent's socket".into(),
        );
    }

    let mut out = LinuxSeccomp::default();
    out.set_default_action(default_action);
    out.set_default_errno_ret(default_errno);
    if !architectures.is_empty() {
        out.set_architectures(Some(architectures));
    }
    if !flags.is_empty() {
        out.set_flags(Some(flags));
    }
    out.set_listener_path(listener_path.map(Into::into));
    out.set_listener_metadata(listener_metadata);
    out.set_syscalls(Some(syscalls));
    Ok(out)
}

/// Docker's rule: every `includes` condition must hold and no `excludes` condition may.
fn applies(inc: Option<&Conditions>, exc: Option<&Conditions>, ctx: &Context<'_>) -> bool {
    let has_cap = |c: &String| ctx.caps.contains(&norm_cap(c));
    let on_arch = |a: &String| ctx.arch.contains(&a.as_str());
    if let Some(e) = exc {
        if e.arches.iter().any(on_arch)
            || e.caps.iter().any(has_cap)
            || e.min_kernel.is_some_and(|k| ctx.kernel >= k)
        {
            return false;
        }
    }
    if let Some(i) = inc {
        if (!i.arches.is_empty() && !i.arches.iter().any(on_arch))
            || !i.caps.iter().all(has_cap)
            || i.min_kernel.is_some_and(|k| ctx.kernel < k)
        {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx_with(caps: &[&str], f: impl FnOnce(&Context<'_>)) {
        let caps: HashSet<String> = caps.iter().map(|c| c.to_string()).collect();
        f(&Context {
            caps: &caps,
            arch: &["amd64", "x86_64", "SCMP_ARCH_X86_64"],
            kernel: (6, 1),
        })
    }

    #[test]
    fn docker_conditions_select_rules() {
        let p = br#"{
          "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
          "archMap": [
            {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
            {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}
          ],
          "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
            {"name": "mount", "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_SYS_ADMIN"]},
             "args": [{"index": 0, "value": 2114060288, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["s390only"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["s390x"]}},
            {"names": ["newer"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "6.9"}},
            {"names": ["older"], "action": "SCMP_ACT_ALLOW", "excludes": {"minKernel": "4.8"}}
          ]}"#;
        let names = |s: &LinuxSeccomp| -> Vec<String> {
            s.syscalls()
                .iter()
                .flatten()
                .flat_map(|r| r.names().clone())
                .collect()
        };
        ctx_with(&["CAP_CHOWN"], |c| {
            let s = resolve(p, c).unwrap();
            assert_eq!(names(&s), ["read", "clone"]);
            assert_eq!(
                s.architectures().clone().unwrap(),
                [Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
            );
            assert_eq!(s.default_errno_ret(), Some(1));
        });
        ctx_with(&["CAP_SYS_ADMIN"], |c| {
            assert_eq!(names(&resolve(p, c).unwrap()), ["read", "mount"]);
        });
    }

    #[test]
    fn bad_profiles_name_the_field() {
        let cases: &[(&[u8], &str)] = &[
            (b"{", "not valid JSON"),
            (b"[]", "JSON object"),
            (b"{}", "defaultAction: is required"),
            (br#"{"defaultAction":"SCMP_ACT_NOPE"}"#, "defaultAction: unknown action"),
            (
                br#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_BOGUS"}]}"#,
                "syscalls[0].action: unknown action \"SCMP_ACT_BOGUS\"",
            ),
            (
                br#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":1,"op":"SCMP_CMP_ALMOST"}]}]}"#,
                "syscalls[0].args[0].op: unknown operator",
            ),
            (
                br#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","errnoRet":1}]}"#,
                "syscalls[0].errnoRet: SCMP_ACT_ALLOW returns no value",
            ),
            (
                br#"{"defaultAction":"SCMP_ACT_ALLOW","defaultErrnoRet":1}"#,
                "defaultErrnoRet: SCMP_ACT_ALLOW returns no value",
            ),
            (
                br#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_NOTIFY"}]}"#,
                "listenerPath",
            ),
            (
                br#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_VAX"]}"#,
                "architectures[0]: unknown architecture",
            ),
            (
                br#"{"defaultAction":"SCMP_ACT_ALLOW","flags":["SECCOMP_FILTER_FLAG_FAST"]}"#,
                "flags[0]: unknown flag",
            ),
            (
                br#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","args":[{"index":7,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
                "syscalls[0].args[0].index",
            ),
        ];
        ctx_with(&[], |c| {
            for (p, want) in cases {
                let err = resolve(p, c).unwrap_err();
                assert!(err.contains(want), "{}: {err}", String::from_utf8_lossy(p));
            }
        });
    }

    #[test]
    fn kernel_versions_parse() {
        assert_eq!(parse_version("6.18.0-1-amd64"), Some((6, 18)));
        assert_eq!(parse_version("4.8"), Some((4, 8)));
        assert_eq!(parse_version("5"), Some((5, 0)));
        assert_eq!(parse_version("x"), None);
    }
}
