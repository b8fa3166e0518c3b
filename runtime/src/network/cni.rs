//! Running CNI plugins (spec 1.0): configuration files, plugin lookup, and the ADD / DEL
//! protocol — the plugin binary with `CNI_*` variables, its network configuration on stdin, its
//! result or error on stdout. A list's plugins run in order for ADD, each given the previous
//! one's result as `prevResult`, and in reverse for DEL, given the cached result.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use super::{Attachment, NetworkList, IFNAME};
use crate::error::{Error, Result};

/// How long one plugin may run.
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Every usable network list in `dir`, ordered by file name (`.conflist`; `.conf` and `.json`
/// as single-plugin lists). Unreadable or invalid files are skipped with a warning.
pub fn load_dir(dir: &Path) -> std::result::Result<Vec<NetworkList>, String> {
    let rd = std::fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conf" | "conflist" | "json")
            )
        })
        .collect();
    files.sort();
    let mut out = vec![];
    for f in files {
        match load_file(&f) {
            Ok(l) => out.push(l),
            Err(e) => tracing::warn!(file = %f.display(), error = %e, "skipping CNI config"),
        }
    }
    Ok(out)
}

/// One configuration file as a list.
pub fn load_file(f: &Path) -> std::result::Result<NetworkList, String> {
    let raw = std::fs::read(f).map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|e| format!("not JSON: {e}"))?;
    let name = v["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or("no \"name\"")?
        .to_string();
    let cni_version = v["cniVersion"].as_str().unwrap_or("0.2.0").to_string();
    let plugins = if f.extension().and_then(|e| e.to_str()) == Some("conflist") {
        let p = v["plugins"]
            .as_array()
            .ok_or("no \"plugins\" list")?
            .clone();
        if p.is_empty() {
            return Err("\"plugins\" is empty".into());
        }
        p
    } else {
        vec![v.clone()]
    };
    for p in &plugins {
        if p["type"].as_str().is_none_or(|t| t.is_empty()) {
            return Err("a plugin without \"type\"".into());
        }
    }
    Ok(NetworkList {
        name,
        cni_version,
        plugins,
        file: f.to_path_buf(),
    })
}

/// The plugin binary `name` in the first bin dir that has it.
pub fn find_plugin(bin_dirs: &[PathBuf], name: &str) -> std::result::Result<PathBuf, String> {
    if name.is_empty() || name.contains('/') {
        return Err(format!("plugin type {name:?} is not a file name"));
    }
    bin_dirs
        .iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "plugin {name:?} not found in {}",
                bin_dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// The configuration one plugin of the list gets on stdin.
fn plugin_config(
    list: &NetworkList,
    plugin: &Value,
    runtime_config: &Value,
    prev: Option<&Value>,
) -> Value {
    let mut c = plugin.clone();
    c["name"] = json!(list.name);
    c["cniVersion"] = json!(list.cni_version);
    // runtimeConfig carries only the capabilities the plugin declares.
    let mut rc = serde_json::Map::new();
    if let Some(caps) = plugin["capabilities"].as_object() {
        for (cap, on) in caps {
            if on.as_bool() == Some(true) {
                if let Some(v) = runtime_config.get(cap) {
                    rc.insert(cap.clone(), v.clone());
                }
            }
        }
    }
    if !rc.is_empty() {
        c["runtimeConfig"] = Value::Object(rc);
    }
    if let Some(p) = prev {
        c["prevResult"] = p.clone();
    }
    c
}

/// The spec versions a plugin binary supports (its VERSION answer).
pub async fn supported_versions(bin: &Path) -> std::result::Result<Vec<String>, String> {
    let mut child = tokio::process::Command::new(bin)
        .env("CNI_COMMAND", "VERSION")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", bin.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(br#"{"cniVersion":"1.0.0"}"#).await;
    }
    let out = tokio::time::timeout(PLUGIN_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| format!("{}: VERSION did not answer", bin.display()))?
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let v: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("{}: VERSION answer is not JSON: {e}", bin.display()))?;
    Ok(v["supportedVersions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(String::from))
        .collect())
}

/// ADD through every plugin of the list; returns the last result.
pub async fn add(bin_dirs: &[PathBuf], pod_id: &str, att: &Attachment) -> Result<Value> {
    let mut prev: Option<Value> = None;
    for p in &att.list.plugins {
        let conf = plugin_config(&att.list, p, &att.runtime_config, prev.as_ref());
        let out = exec(bin_dirs, "ADD", pod_id, att, &conf).await?;
        let result: Value = serde_json::from_slice(&out).map_err(|e| {
            Error::Internal(format!(
                "CNI plugin {} of network {:?}: ADD result is not JSON: {e}",
                p["type"], att.list.name
            ))
        })?;
        prev = Some(result);
    }
    prev.ok_or_else(|| Error::Internal("a network list without plugins".into()))
}

/// CHECK through every plugin of the list, in order, each given the recorded result: whether
/// the pod's network is still as ADD left it. Needs a list of version 0.4.0 or later.
pub async fn check(bin_dirs: &[PathBuf], pod_id: &str, att: &Attachment) -> Result<()> {
    let old = ["0.1.0", "0.2.0", "0.3.0", "0.3.1"];
    if old.contains(&att.list.cni_version.as_str()) {
        return Err(Error::FailedPrecondition(format!(
            "network {:?} has CNI version {}: CHECK needs 0.4.0 or later",
            att.list.name, att.list.cni_version
        )));
    }
    let Some(result) = att.result.as_ref() else {
        return Err(Error::FailedPrecondition(
            "the pod's network was never attached".into(),
        ));
    };
    for p in &att.list.plugins {
        let conf = plugin_config(&att.list, p, &att.runtime_config, Some(result));
        exec(bin_dirs, "CHECK", pod_id, att, &conf).await?;
    }
    Ok(())
}

/// DEL through every plugin of the list, last first. Every plugin runs even if one fails; the
/// first failure is returned.
pub async fn del(bin_dirs: &[PathBuf], pod_id: &str, att: &Attachment) -> Result<()> {
    let mut first_err = None;
    for p in att.list.plugins.iter().rev() {
        let conf = plugin_config(&att.list, p, &att.runtime_config, att.result.as_ref());
        if let Err(e) = exec(bin_dirs, "DEL", pod_id, att, &conf).await {
            tracing::warn!(pod = pod_id, plugin = %p["type"], error = %e, "CNI DEL failed");
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Runs one plugin; its stdout on success, its own error (code and message) otherwise.
async fn exec(
    bin_dirs: &[PathBuf],
    command: &str,
    pod_id: &str,
    att: &Attachment,
    conf: &Value,
) -> Result<Vec<u8>> {
    let t = conf["type"].as_str().unwrap_or("");
    let what = format!("CNI plugin {t:?} of network {:?}: {command}", att.list.name);
    let bin =
        find_plugin(bin_dirs, t).map_err(|e| Error::FailedPrecondition(format!("{what}: {e}")))?;
    let path = std::env::join_paths(bin_dirs).unwrap_or_default();
    // DEL after the namespace is gone (a reboot) runs with an empty CNI_NETNS, as the spec
    // allows.
    let netns = if command == "DEL" && !att.netns.exists() {
        String::new()
    } else {
        att.netns.display().to_string()
    };
    let mut child = tokio::process::Command::new(&bin)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", pod_id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", IFNAME)
        .env("CNI_ARGS", &att.cni_args)
        .env("CNI_PATH", path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::Internal(format!("{what}: starting {}: {e}", bin.display())))?;
    let input = serde_json::to_vec(conf).map_err(|e| Error::Internal(format!("{what}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(&input)
            .await
            .map_err(|e| Error::Internal(format!("{what}: writing its config: {e}")))?;
    }
    let out = tokio::time::timeout(PLUGIN_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| Error::Internal(format!("{what}: no answer within {PLUGIN_TIMEOUT:?}")))?
        .map_err(|e| Error::Internal(format!("{what}: {e}")))?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    // The spec's error: {"code": N, "msg": "...", "details": "..."} on stdout.
    let err: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let msg = match err["msg"].as_str() {
        Some(m) => {
            let details = err["details"].as_str().filter(|d| !d.is_empty());
            format!(
                "error code {}: {m}{}",
                err["code"],
                details.map(|d| format!(" ({d})")).unwrap_or_default()
            )
        }
        None => format!(
            "{} {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    };
    Err(Error::Internal(format!("{what} failed: {msg}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_single_configs_load_in_name_order() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("20-b.conf"),
            r#"{"cniVersion":"1.0.0","name":"b","type":"bridge"}"#,
        )
        .unwrap();
        std::fs::write(
            d.path().join("10-a.conflist"),
            r#"{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"bridge"},{"type":"portmap","capabilities":{"portMappings":true}}]}"#,
        )
        .unwrap();
        std::fs::write(d.path().join("05-bad.conf"), "{").unwrap();
        std::fs::write(d.path().join("README"), "x").unwrap();
        let l = load_dir(d.path()).unwrap();
        assert_eq!(
            l.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(l[0].plugins.len(), 2);
        let rc = json!({"portMappings": [{"hostPort": 80}], "dns": {}});
        let c = plugin_config(&l[0], &l[0].plugins[1], &rc, Some(&json!({"ips": []})));
        assert_eq!(c["name"], "a");
        assert_eq!(c["runtimeConfig"]["portMappings"][0]["hostPort"], 80);
        assert!(c["runtimeConfig"].get("dns").is_none());
        assert_eq!(c["prevResult"]["ips"], json!([]));
        let c = plugin_config(&l[0], &l[0].plugins[0], &rc, None);
        assert!(c.get("runtimeConfig").is_none());
        assert!(find_plugin(&[d.path().to_path_buf()], "../x").is_err());
    }
}
