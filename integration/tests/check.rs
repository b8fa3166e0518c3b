//! `skiff check`, the node preflight, run as an operator would (the built `skiff` binary with
//! a config file), its findings compared with what the machine has.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use skiff_integration::bin_dir;

/// Runs `skiff check --json` with `config`: (exit code, findings by check name).
fn check(config: &Path) -> (i32, Vec<Value>) {
    let out = Command::new(bin_dir().join("skiff"))
        .args(["check", "--json", "--config"])
        .arg(config)
        .output()
        .expect("running skiff check");
    let findings: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "skiff check --json: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), findings)
}

fn config_text(config: &Path) -> String {
    std::fs::read_to_string(config).unwrap()
}

fn finding<'a>(all: &'a [Value], name: &str) -> &'a Value {
    all.iter()
        .find(|f| f["check"] == name)
        .unwrap_or_else(|| panic!("no {name} finding in {all:#?}"))
}

fn level(all: &[Value], name: &str) -> String {
    finding(all, name)["level"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[test]
fn check_reports_what_the_machine_has() {
    skiff_integration::require_root();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let run_root = dir.path().join("run");
    let net = dir.path().join("net.d");
    for d in [&root, &run_root, &net] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    let config = dir.path().join("config.toml");
    let write_config = |driver: &str| {
        std::fs::write(
            &config,
            format!(
                "root = {root:?}\nrun_root = {run_root:?}\nlisten = {:?}\ncni_conf_dir = {net:?}\n\
                 cgroup_driver = \"{driver}\"\nshim_binary = {:?}\n",
                run_root.join("skiff.sock"),
                skiff_integration::bin_dir().join("skiff-shim"),
            ),
        )
        .unwrap();
    };
    write_config("cgroupfs");

    let (code, all) = check(&config);
    let names: Vec<&str> = all.iter().filter_map(|f| f["check"].as_str()).collect();
    for name in [
        "config",
        "kernel",
        "cgroup",
        "systemd",
        "user namespaces",
        "overlayfs",
        "seccomp",
        "apparmor",
        "selinux",
        "criu",
        "cni",
        "shim",
        "permissions",
        "clock",
        "entropy",
    ] {
        assert!(names.contains(&name), "{name} not checked: {names:?}");
    }
    // What the kernel says, as uname and the cgroup mounts show it.
    let release =
        String::from_utf8(Command::new("uname").arg("-r").output().unwrap().stdout).unwrap();
    let kernel = finding(&all, "kernel");
    assert_eq!(kernel["level"], "ok", "{kernel}");
    assert!(
        kernel["detail"].as_str().unwrap().contains(release.trim()),
        "{kernel}"
    );
    let v2 = std::fs::metadata("/sys/fs/cgroup/cgroup.controllers").is_ok();
    let cgroup = finding(&all, "cgroup");
    if v2 {
        assert_eq!(cgroup["level"], "ok", "{cgroup}");
    } else {
        // This machine: cgroup v1 works for skiff, with a warning saying what kubelet thinks.
        assert_eq!(cgroup["level"], "warning", "{cgroup}");
        assert!(
            cgroup["detail"].as_str().unwrap().starts_with("v1"),
            "{cgroup}"
        );
        assert!(
            cgroup["fix"].as_str().unwrap().contains("failCgroupV1"),
            "{cgroup}"
        );
    }
    let systemd_runs = Path::new("/run/systemd/system").is_dir();
    assert_eq!(
        level(&all, "systemd"),
        if systemd_runs { "warning" } else { "ok" }
    );
    assert_eq!(level(&all, "overlayfs"), "ok");
    assert_eq!(level(&all, "seccomp"), "ok");
    // The shim found, with the protocol it reports itself.
    let shim = finding(&all, "shim");
    assert_eq!(shim["level"], "ok", "{shim}");
    let version = Command::new(bin_dir().join("skiff-shim"))
        .arg("version")
        .output()
        .unwrap();
    let version = String::from_utf8_lossy(&version.stdout);
    let protocol = version.trim().rsplit_once(" protocol ").unwrap().1;
    assert!(
        shim["detail"]
            .as_str()
            .unwrap()
            .ends_with(&format!("(protocol {protocol})")),
        "{shim} {version}"
    );
    assert_eq!(level(&all, "permissions"), "ok");
    // Idmapped mounts work on this machine's filesystems.
    assert_eq!(level(&all, "user namespaces"), "ok", "{all:#?}");
    // No CNI config: pods with their own network wait, and the fix points at the README.
    let cni = finding(&all, "cni");
    assert_eq!(cni["level"], "warning", "{cni}");
    assert!(
        cni["detail"]
            .as_str()
            .unwrap()
            .contains(net.to_str().unwrap()),
        "{cni}"
    );
    assert!(cni["fix"].as_str().unwrap().contains("README"), "{cni}");
    // CRIU: what `criu --version` says, if it is installed at all.
    let criu_found = Command::new("criu").arg("--version").output().is_ok();
    if !criu_found {
        assert_eq!(level(&all, "criu"), "warning");
    }
    let errors = all.iter().filter(|f| f["level"] == "error").count();
    assert_eq!(errors, 0, "{all:#?}");
    assert_eq!(code, 0);

    // A network config whose plugin is missing: an error naming it, exit status 1, and the
    // human output says the same.
    std::fs::write(
        net.join("10-bad.conflist"),
        r#"{"cniVersion":"1.0.0","name":"bad","plugins":[{"type":"no-such-plugin"}]}"#,
    )
    .unwrap();
    let (code, all) = check(&config);
    let cni = finding(&all, "cni");
    assert_eq!(cni["level"], "error", "{cni}");
    assert!(
        cni["detail"].as_str().unwrap().contains("no-such-plugin"),
        "{cni}"
    );
    assert_eq!(code, 1);
    let out = Command::new(bin_dir().join("skiff"))
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("error") && l.contains("cni") && l.contains("no-such-plugin")),
        "{text}"
    );

    // The bridge config the README's first steps show, with Debian's plugins: ok.
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let conflist = readme
        .split_once("tee /etc/cni/net.d/10-skiff.conflist <<'END'\n")
        .and_then(|(_, rest)| rest.split_once("\nEND\n"))
        .map(|(conf, _)| conf)
        .expect("README: the bridge config of First steps");
    std::fs::remove_file(net.join("10-bad.conflist")).unwrap();
    std::fs::write(net.join("10-skiff.conflist"), conflist).unwrap();
    let (_, all) = check(&config);
    let cni = finding(&all, "cni");
    assert_eq!(cni["level"], "ok", "{cni}");
    assert!(
        cni["detail"]
            .as_str()
            .unwrap()
            .contains("plugins bridge, portmap, loopback"),
        "{cni}"
    );

    // A shim from another build (another protocol, or one too old to tell it): an error
    // naming the binary and what it said.
    let real = config_text(&config);
    for (other, said) in skiff_integration::other_build_shims(dir.path()) {
        let with_other = real.replace(
            &format!("shim_binary = {:?}", bin_dir().join("skiff-shim")),
            &format!("shim_binary = {other:?}"),
        );
        assert_ne!(with_other, real);
        std::fs::write(&config, with_other).unwrap();
        let (code, all) = check(&config);
        let shim = finding(&all, "shim");
        assert_eq!(shim["level"], "error", "{shim}");
        let detail = shim["detail"].as_str().unwrap();
        assert!(
            detail.contains(other.to_str().unwrap()) && detail.contains(said),
            "{shim}"
        );
        assert_eq!(code, 1);
    }
    std::fs::write(&config, &real).unwrap();

    // A state directory others can write.
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (code, all) = check(&config);
    let perms = finding(&all, "permissions");
    assert_eq!(perms["level"], "error", "{perms}");
    assert!(
        perms["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("root {} is writable", root.display())),
        "{perms}"
    );
    assert_eq!(code, 1);

    // A configuration skiffd would refuse (the systemd driver where systemd is not PID 1, or
    // an unknown key): that is the finding, exit status 1.
    if systemd_runs {
        std::fs::write(&config, "no_such_key = 1\n").unwrap();
    } else {
        write_config("systemd");
    }
    let (code, all) = check(&config);
    assert_eq!(all.len(), 1, "{all:#?}");
    let cfg = finding(&all, "config");
    assert_eq!(cfg["level"], "error", "{cfg}");
    let said = cfg["detail"].as_str().unwrap();
    assert!(
        said.contains(if systemd_runs {
            "no_such_key"
        } else {
            "cgroup_driver"
        }),
        "{cfg}"
    );
    assert_eq!(code, 1);
}
