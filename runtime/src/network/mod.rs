//! Pod networking through CNI (spec 1.0): the network configuration kubelet's node admin put in
//! the conf dir, plugins from the bin dirs, ADD when a pod's network namespace exists, DEL when
//! it stops, and the result of ADD kept on disk (`<root>/cni/<pod id>.json`, with the exact
//! configuration used) so DEL works after a daemon restart or a changed configuration.
//! Host-network pods have nothing to do with it.

pub mod cni;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use skiff_proto::cri::{PodIp, PodSandboxConfig, PodSandboxNetworkStatus, Protocol};

use crate::error::{Error, IoContext, Result};
use crate::store;

/// kubelet's pod bandwidth annotations (passed to CNI as the `bandwidth` capability).
pub const INGRESS_BANDWIDTH: &str = "kubernetes.io/ingress-bandwidth";
pub const EGRESS_BANDWIDTH: &str = "kubernetes.io/egress-bandwidth";

/// The interface every pod gets.
pub const IFNAME: &str = "eth0";

/// A network configuration list, as loaded from the conf dir.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkList {
    pub name: String,
    pub cni_version: String,
    /// The plugin configurations, in order.
    pub plugins: Vec<Value>,
    /// The file it came from.
    pub file: PathBuf,
}

/// What is kept of a pod's network between ADD and DEL.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attachment {
    pub list: NetworkList,
    /// The runtime values the plugins' capabilities asked for.
    pub runtime_config: Value,
    pub cni_args: String,
    pub netns: PathBuf,
    /// The last plugin's result; `None` while ADD has not finished (a crash then leaves a
    /// record that DEL still undoes).
    pub result: Option<Value>,
}

pub struct Network {
    conf_dir: PathBuf,
    bin_dirs: Vec<PathBuf>,
    /// The network to use by name; the first file by name when unset.
    conf_name: Option<String>,
    cache_dir: PathBuf,
    /// From UpdateRuntimeConfig: the node's pod CIDR, for the `ipRanges` capability.
    pod_cidr: Mutex<String>,
    /// Spec versions each plugin binary supports, by path and modification time (asked once).
    versions: Mutex<std::collections::HashMap<(PathBuf, std::time::SystemTime), Vec<String>>>,
}

/// The network configuration in `conf_dir` pods get (the one named `conf_name`, else the
/// first), with every plugin binary found in `bin_dirs`; or why there is none.
pub fn current(
    conf_dir: &Path,
    bin_dirs: &[PathBuf],
    conf_name: Option<&str>,
) -> std::result::Result<NetworkList, String> {
    let lists = cni::load_dir(conf_dir)?;
    let list = match conf_name {
        Some(name) => lists.into_iter().find(|l| l.name == name).ok_or_else(|| {
            format!(
                "no network named {name:?} in {} (cni_conf_name)",
                conf_dir.display()
            )
        })?,
        None => lists
            .into_iter()
            .next()
            .ok_or_else(|| format!("no network config found in {}", conf_dir.display()))?,
    };
    for p in &list.plugins {
        let t = p["type"].as_str().unwrap_or("");
        cni::find_plugin(bin_dirs, t)
            .map_err(|e| format!("network {:?} ({}): {e}", list.name, list.file.display()))?;
    }
    Ok(list)
}

/// The pod facts CNI needs.
pub struct PodNet<'a> {
    pub id: &'a str,
    pub config: &'a PodSandboxConfig,
    pub netns: &'a Path,
}

impl Network {
    pub fn new(
        conf_dir: PathBuf,
        bin_dirs: Vec<PathBuf>,
        conf_name: Option<String>,
        root: &Path,
    ) -> Result<Network> {
        let cache_dir = root.join("cni");
        std::fs::create_dir_all(&cache_dir).ctx(|| format!("creating {}", cache_dir.display()))?;
        Ok(Network {
            conf_dir,
            bin_dirs,
            conf_name,
            cache_dir,
            pod_cidr: Mutex::new(String::new()),
            versions: Default::default(),
        })
    }

    pub fn set_pod_cidr(&self, cidr: &str) {
        *self.pod_cidr.lock().unwrap_or_else(|p| p.into_inner()) = cidr.to_string();
    }

    /// The network pods get now, or why there is none (Status' NetworkReady message).
    pub fn current(&self) -> std::result::Result<NetworkList, String> {
        current(&self.conf_dir, &self.bin_dirs, self.conf_name.as_deref())
    }

    /// Version negotiation: every plugin of the list must support the list's `cniVersion`.
    async fn negotiate(&self, list: &NetworkList) -> Result<()> {
        for p in &list.plugins {
            let t = p["type"].as_str().unwrap_or("");
            let bin = cni::find_plugin(&self.bin_dirs, t)
                .map_err(|e| Error::FailedPrecondition(format!("network {:?}: {e}", list.name)))?;
            let key = (
                bin.clone(),
                std::fs::metadata(&bin)
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH),
            );
            let known = self
                .versions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&key)
                .cloned();
            let versions = match known {
                Some(v) => v,
                None => {
                    let v = cni::supported_versions(&bin).await.map_err(|e| {
                        Error::FailedPrecondition(format!("network {:?}: {e}", list.name))
                    })?;
                    self.versions
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(key, v.clone());
                    v
                }
            };
            if !versions.contains(&list.cni_version) {
                return Err(Error::FailedPrecondition(format!(
                    "network {:?} ({}) asks for CNI version {} but plugin {t:?} ({}) supports {versions:?}",
                    list.name,
                    list.file.display(),
                    list.cni_version,
                    bin.display()
                )));
            }
        }
        Ok(())
    }

    fn cache_file(&self, pod_id: &str) -> PathBuf {
        self.cache_dir.join(format!("{pod_id}.json"))
    }

    /// ADD: attaches the pod's network namespace; returns its IPs.
    pub async fn add(&self, pod: &PodNet<'_>) -> Result<PodSandboxNetworkStatus> {
        let list = self
            .current()
            .map_err(|e| Error::FailedPrecondition(format!("pod networking is not ready: {e}")))?;
        self.negotiate(&list).await?;
        let mut att = Attachment {
            runtime_config: self.runtime_config(pod.config),
            cni_args: cni_args(pod),
            netns: pod.netns.to_path_buf(),
            list,
            result: None,
        };
        // Recorded before ADD runs: whatever a crash interrupts, DEL can undo.
        store::write_json(&self.cache_file(pod.id), &att)
            .ctx(|| format!("recording the network of pod {}", pod.id))?;
        let began = std::time::Instant::now();
        let added = cni::add(&self.bin_dirs, pod.id, &att).await;
        crate::metrics::get().cni("ADD", began);
        let result = added?;
        att.result = Some(result.clone());
        store::write_json(&self.cache_file(pod.id), &att)
            .ctx(|| format!("recording the network of pod {}", pod.id))?;
        Ok(pod_ips(&result))
    }

    /// DEL, from the recorded attachment; nothing to do when there is none. The record goes
    /// only once DEL succeeded, so a failed DEL is tried again by the next stop.
    pub async fn del(&self, pod_id: &str) -> Result<()> {
        let f = self.cache_file(pod_id);
        let att: Attachment = match store::read_json(&f) {
            Ok(a) => a,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(Error::Internal(format!(
                    "reading the network record {}: {e}",
                    f.display()
                )))
            }
        };
        let began = std::time::Instant::now();
        let deleted = cni::del(&self.bin_dirs, pod_id, &att).await;
        crate::metrics::get().cni("DEL", began);
        deleted?;
        store::remove_durably(&f).ctx(|| format!("removing {}", f.display()))?;
        Ok(())
    }

    /// CHECK: whether the pod's network is still as ADD left it; `None` for a pod without one.
    pub async fn check(&self, pod_id: &str) -> Option<Result<()>> {
        let att: Attachment = store::read_json(&self.cache_file(pod_id)).ok()?;
        Some(cni::check(&self.bin_dirs, pod_id, &att).await)
    }

    /// The pod's IPs, from its recorded ADD result.
    pub fn status(&self, pod_id: &str) -> Option<PodSandboxNetworkStatus> {
        let att: Attachment = store::read_json(&self.cache_file(pod_id)).ok()?;
        att.result.as_ref().map(pod_ips)
    }

    /// `runtimeConfig` values for the capabilities plugins may declare.
    fn runtime_config(&self, c: &PodSandboxConfig) -> Value {
        let ports: Vec<Value> = c
            .port_mappings
            .iter()
            .filter(|p| p.host_port > 0)
            .map(|p| {
                let proto = match Protocol::try_from(p.protocol).unwrap_or(Protocol::Tcp) {
                    Protocol::Tcp => "tcp",
                    Protocol::Udp => "udp",
                    Protocol::Sctp => "sctp",
                };
                json!({
                    "hostPort": p.host_port,
                    "containerPort": p.container_port,
                    "protocol": proto,
                    "hostIP": p.host_ip,
                })
            })
            .collect();
        let mut rc = json!({ "portMappings": ports });
        let cidr = self
            .pod_cidr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if !cidr.is_empty() {
            let ranges: Vec<Value> = cidr
                .split(',')
                .map(|s| json!([{ "subnet": s.trim() }]))
                .collect();
            rc["ipRanges"] = json!(ranges);
        }
        if let Some(d) = &c.dns_config {
            rc["dns"] = json!({
                "servers": d.servers,
                "searches": d.searches,
                "options": d.options,
            });
        }
        // kubelet's bandwidth annotations, as the other runtimes read them.
        let mut bw = serde_json::Map::new();
        for (ann, key, burst) in [
            (INGRESS_BANDWIDTH, "ingressRate", "ingressBurst"),
            (EGRESS_BANDWIDTH, "egressRate", "egressBurst"),
        ] {
            if let Some(rate) = c.annotations.get(ann).and_then(|v| parse_quantity(v)) {
                bw.insert(key.into(), json!(rate));
                // As the other runtimes: a burst of "unlimited" (max int32).
                bw.insert(burst.into(), json!(i32::MAX));
            }
        }
        if !bw.is_empty() {
            rc["bandwidth"] = Value::Object(bw);
        }
        rc
    }
}

/// `IgnoreUnknown=1;K8S_POD_NAMESPACE=…;K8S_POD_NAME=…;K8S_POD_INFRA_CONTAINER_ID=…;K8S_POD_UID=…`
fn cni_args(pod: &PodNet<'_>) -> String {
    let m = pod.config.metadata.clone().unwrap_or_default();
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
        m.namespace, m.name, pod.id, m.uid
    )
}

/// A Kubernetes quantity in bits per second (`10M`, `1Gi`, `500k`).
fn parse_quantity(v: &str) -> Option<u64> {
    let v = v.trim();
    let split = v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match unit {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        _ => return None,
    };
    Some((n * mult) as u64)
}

/// The pod's IPs from an ADD result: the addresses of the interface skiff asked for
/// ([`IFNAME`], inside the pod's namespace), as containerd reports them, the first IPv4 one
/// primary. Addresses of other interfaces (`lo` from the loopback plugin, the host's bridge) are
/// not the pod's; an address that names no interface counts only in a result that lists none.
pub fn pod_ips(result: &Value) -> PodSandboxNetworkStatus {
    let ifaces = result["interfaces"].as_array().cloned().unwrap_or_default();
    let mut ips: Vec<String> = result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|ip| match ip["interface"].as_u64() {
            Some(i) => ifaces.get(i as usize).is_some_and(|f| {
                f["name"].as_str() == Some(IFNAME)
                    && f["sandbox"].as_str().is_some_and(|s| !s.is_empty())
            }),
            None => ifaces.is_empty(),
        })
        .filter_map(|ip| ip["address"].as_str())
        .map(|a| a.split('/').next().unwrap_or(a).to_string())
        .filter(|a| {
            a.parse::<std::net::IpAddr>()
                .is_ok_and(|ip| !ip.is_loopback())
        })
        .collect();
    if let Some(i) = ips.iter().position(|a| !a.contains(':')) {
        let v4 = ips.remove(i);
        ips.insert(0, v4);
    }
    let mut it = ips.into_iter();
    PodSandboxNetworkStatus {
        ip: it.next().unwrap_or_default(),
        additional_ips: it.map(|ip| PodIp { ip }).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_ips_from_a_result() {
        let r = json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "cni0", "mac": "aa"},
                {"name": "veth1", "mac": "bb"},
                {"name": "eth0", "mac": "cc", "sandbox": "/run/netns/x"}
            ],
            "ips": [
                {"address": "fd00::5/64", "interface": 2},
                {"address": "10.22.0.5/16", "gateway": "10.22.0.1", "interface": 2},
                {"address": "10.99.0.1/16", "interface": 0}
            ]
        });
        let s = pod_ips(&r);
        assert_eq!(s.ip, "10.22.0.5");
        assert_eq!(
            s.additional_ips,
            vec![PodIp {
                ip: "fd00::5".into()
            }]
        );
    }

    #[test]
    fn loopback_only_results_give_no_pod_ip() {
        let r = json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "lo", "sandbox": "/run/netns/x"}],
            "ips": [{"address": "127.0.0.1/8", "interface": 0}, {"address": "::1/128", "interface": 0}]
        });
        let s = pod_ips(&r);
        assert_eq!(s.ip, "");
        assert!(s.additional_ips.is_empty());
        // A result without interfaces: its addresses are the pod's.
        let s = pod_ips(&json!({"ips": [{"address": "10.1.0.9/24"}]}));
        assert_eq!(s.ip, "10.1.0.9");
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("10M"), Some(10_000_000));
        assert_eq!(parse_quantity("1Gi"), Some(1 << 30));
        assert_eq!(parse_quantity("x"), None);
    }
}
