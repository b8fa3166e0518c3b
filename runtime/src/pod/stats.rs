//! Pod stats: CPU, memory and processes of the pod's cgroup (its containers' parent), network
//! counters of the pod's own network namespace, and each running container's stats.

use skiff_proto::cri::{
    LinuxPodSandboxStats, NetworkInterfaceUsage, NetworkUsage, PodSandboxAttributes,
    PodSandboxStats, ProcessUsage, UInt64Value,
};
use skiff_shim::api::NsMode;

use super::lifecycle::{is_our_shim, pod_namespaces};
use super::PodRecord;
use crate::container::stats::{self as cstats};
use crate::error::Result;
use crate::node::Node;

/// Interface counters of the network namespace process `pid` is in, loopback left out, read
/// from `/proc/<pid>/net/dev`.
pub fn network_usage(pid: i32, now: i64) -> Option<NetworkUsage> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok()?;
    let mut interfaces = vec![];
    for (name, f) in net_dev(&text) {
        if f.len() < 11 {
            continue;
        }
        interfaces.push(NetworkInterfaceUsage {
            name,
            rx_bytes: Some(UInt64Value { value: f[0] }),
            rx_errors: Some(UInt64Value { value: f[2] }),
            tx_bytes: Some(UInt64Value { value: f[8] }),
            tx_errors: Some(UInt64Value { value: f[10] }),
        });
    }
    let default_interface = interfaces.iter().find(|i| i.name == "eth0").cloned();
    Some(NetworkUsage {
        timestamp: now,
        default_interface,
        interfaces,
    })
}

/// `/proc/net/dev` as (interface, its 16 counters), loopback left out.
pub(crate) fn net_dev(text: &str) -> Vec<(String, Vec<u64>)> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let name = name.trim();
            (name != "lo").then(|| {
                (
                    name.to_string(),
                    rest.split_whitespace()
                        .filter_map(|v| v.parse().ok())
                        .collect(),
                )
            })
        })
        .collect()
}

impl Node {
    pub fn pod_stats(&self, pod: &PodRecord) -> Result<PodSandboxStats> {
        let cfg = pod.config();
        let now = skiff_shim::api::now_ns();
        let (cpu, memory, process, io) = match cstats::cgroup_usage(
            &pod.cgroup,
            &format!("pod:{}", pod.id),
            &self.cpu_samples,
            now,
        )? {
            Some(u) => (
                Some(u.cpu),
                Some(u.memory),
                Some(ProcessUsage {
                    timestamp: now,
                    process_count: Some(UInt64Value { value: u.pids }),
                }),
                u.io,
            ),
            None => (None, None, None, None),
        };
        let own_network = pod_namespaces(cfg)
            .map(|n| n.network == NsMode::Pod)
            .unwrap_or(false);
        let network = if own_network && pod.shim_pid > 0 && is_our_shim(pod.shim_pid, &pod.id) {
            network_usage(pod.shim_pid, now)
        } else {
            None
        };
        let mut containers = vec![];
        for c in self.containers.of_pod(&pod.id) {
            let st = self.container_state(&c);
            if st.pid != 0 && !st.exited {
                containers.push(cstats::collect(&c, &self.cpu_samples)?);
            }
        }
        Ok(PodSandboxStats {
            attributes: Some(PodSandboxAttributes {
                id: pod.id.clone(),
                metadata: cfg.metadata.clone(),
                labels: cfg.labels.clone(),
                annotations: cfg.annotations.clone(),
            }),
            linux: Some(LinuxPodSandboxStats {
                cpu,
                memory,
                network,
                process,
                containers,
                io,
            }),
            windows: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev_leaves_loopback_out() {
        let text = "Inter-|   Receive\n face |bytes\n    lo: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n  eth0: 100 2 0 1 0 0 0 0 200 3 0 0 0 0 0 0\n";
        let v = net_dev(text);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].0, "eth0");
        assert_eq!(v[0].1[0], 100);
        assert_eq!(v[0].1[8], 200);
    }
}
