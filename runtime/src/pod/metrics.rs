//! CRI metrics (`ListMetricDescriptors`, `ListPodSandboxMetrics`): the cAdvisor metrics kubelet
//! serves at `/metrics/cadvisor` when `PodAndContainerStatsFromCRI` is on, read from each
//! running container's cgroup files (v1 and v2) and, for the pod, its own network namespace.
//! Label keys are cAdvisor's (`container`, `pod`, `namespace`, `id`, then the metric's own), as
//! containerd 2.2 sends them; values are whole numbers (the CRI's `UInt64Value`), seconds
//! truncated.

use skiff_proto::cri::{
    ContainerMetrics, Metric, MetricDescriptor, MetricType, PodSandboxMetrics, UInt64Value,
};
use skiff_shim::api::NsMode;

use super::lifecycle::{is_our_shim, pod_namespaces};
use super::stats::net_dev;
use super::PodRecord;
use crate::container::stats::CgroupFiles;
use crate::container::ContainerRecord;
use crate::error::Result;
use crate::node::Node;

/// Labels every container metric has, in order.
const CONTAINER_LABELS: [&str; 4] = ["container", "pod", "namespace", "id"];
/// Labels of the pod's network metrics, then `interface`.
const POD_LABELS: [&str; 3] = ["pod", "namespace", "id"];

use MetricType::{Counter, Gauge};

/// (name, help, type, labels past the base ones). Network metrics are the pod's.
const CONTAINER_METRICS: &[(&str, &str, MetricType, &[&str])] = &[
    (
        "container_cpu_usage_seconds_total",
        "Cumulative CPU time consumed in seconds.",
        Counter,
        &[],
    ),
    (
        "container_cpu_user_seconds_total",
        "Cumulative user CPU time consumed in seconds.",
        Counter,
        &[],
    ),
    (
        "container_cpu_system_seconds_total",
        "Cumulative system CPU time consumed in seconds.",
        Counter,
        &[],
    ),
    (
        "container_cpu_cfs_periods_total",
        "Number of elapsed enforcement period intervals.",
        Counter,
        &[],
    ),
    (
        "container_cpu_cfs_throttled_periods_total",
        "Number of throttled period intervals.",
        Counter,
        &[],
    ),
    (
        "container_cpu_cfs_throttled_seconds_total",
        "Total time duration the container has been throttled.",
        Counter,
        &[],
    ),
    (
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed.",
        Gauge,
        &[],
    ),
    (
        "container_memory_working_set_bytes",
        "Current working set in bytes.",
        Gauge,
        &[],
    ),
    ("container_memory_rss", "Size of RSS in bytes.", Gauge, &[]),
    (
        "container_memory_cache",
        "Number of bytes of page cache memory.",
        Gauge,
        &[],
    ),
    (
        "container_memory_mapped_file",
        "Size of memory mapped files in bytes.",
        Gauge,
        &[],
    ),
    (
        "container_memory_swap",
        "Container swap usage in bytes.",
        Gauge,
        &[],
    ),
    (
        "container_memory_max_usage_bytes",
        "Maximum memory usage recorded in bytes.",
        Gauge,
        &[],
    ),
    (
        "container_memory_failcnt",
        "Number of memory usage hits limits (cgroup v1).",
        Counter,
        &[],
    ),
    (
        "container_memory_total_active_file_bytes",
        "Current total active file cache memory in bytes.",
        Gauge,
        &[],
    ),
    (
        "container_memory_total_inactive_file_bytes",
        "Current total inactive file cache memory in bytes.",
        Gauge,
        &[],
    ),
    (
        "container_memory_failures_total",
        "Cumulative count of memory allocation failures.",
        Counter,
        &["failure_type", "scope"],
    ),
    (
        "container_oom_events_total",
        "Count of out of memory events observed for the container.",
        Counter,
        &[],
    ),
    (
        "container_processes",
        "Number of processes running inside the container.",
        Gauge,
        &[],
    ),
    (
        "container_fs_usage_bytes",
        "Number of bytes consumed by the container's writable layer.",
        Gauge,
        &["device"],
    ),
    (
        "container_fs_inodes_total",
        "Number of inodes used by the container's writable layer.",
        Gauge,
        &["device"],
    ),
    (
        "container_fs_reads_bytes_total",
        "Cumulative count of bytes read.",
        Counter,
        &["device"],
    ),
    (
        "container_fs_writes_bytes_total",
        "Cumulative count of bytes written.",
        Counter,
        &["device"],
    ),
    (
        "container_fs_reads_total",
        "Cumulative count of reads completed.",
        Counter,
        &["device"],
    ),
    (
        "container_fs_writes_total",
        "Cumulative count of writes completed.",
        Counter,
        &["device"],
    ),
];

const NETWORK_METRICS: &[(&str, &str, usize)] = &[
    // (name, help, column of /proc/net/dev after the interface name)
    (
        "container_network_receive_bytes_total",
        "Cumulative count of bytes received.",
        0,
    ),
    (
        "container_network_receive_packets_total",
        "Cumulative count of packets received.",
        1,
    ),
    (
        "container_network_receive_errors_total",
        "Cumulative count of errors encountered while receiving.",
        2,
    ),
    (
        "container_network_receive_packets_dropped_total",
        "Cumulative count of packets dropped while receiving.",
        3,
    ),
    (
        "container_network_transmit_bytes_total",
        "Cumulative count of bytes transmitted.",
        8,
    ),
    (
        "container_network_transmit_packets_total",
        "Cumulative count of packets transmitted.",
        9,
    ),
    (
        "container_network_transmit_errors_total",
        "Cumulative count of errors encountered while transmitting.",
        10,
    ),
    (
        "container_network_transmit_packets_dropped_total",
        "Cumulative count of packets dropped while transmitting.",
        11,
    ),
];

/// Every metric [`Node::pod_metrics`] may send, with its label keys.
pub fn descriptors() -> Vec<MetricDescriptor> {
    let mut out: Vec<MetricDescriptor> = CONTAINER_METRICS
        .iter()
        .map(|(name, help, _, extra)| MetricDescriptor {
            name: name.to_string(),
            help: help.to_string(),
            label_keys: CONTAINER_LABELS
                .iter()
                .chain(extra.iter())
                .map(|s| s.to_string())
                .collect(),
        })
        .collect();
    out.extend(NETWORK_METRICS.iter().map(|(name, help, _)| {
        MetricDescriptor {
            name: name.to_string(),
            help: help.to_string(),
            label_keys: POD_LABELS
                .iter()
                .chain(["interface"].iter())
                .map(|s| s.to_string())
                .collect(),
        }
    }));
    out
}

/// Collects metrics with one timestamp and base labels.
struct Out {
    now: i64,
    base: Vec<String>,
    metrics: Vec<Metric>,
}

impl Out {
    fn add(&mut self, name: &str, value: Option<u64>, extra: &[&str]) {
        let Some(value) = value else { return };
        let kind = CONTAINER_METRICS
            .iter()
            .find(|m| m.0 == name)
            .map(|m| m.2)
            .unwrap_or(Counter);
        self.metrics.push(Metric {
            name: name.to_string(),
            timestamp: self.now,
            metric_type: kind as i32,
            label_values: self
                .base
                .iter()
                .cloned()
                .chain(extra.iter().map(|s| s.to_string()))
                .collect(),
            value: Some(UInt64Value { value }),
        });
    }
}

impl Node {
    /// The metrics of a ready pod: its network's, and each running container's.
    pub fn pod_metrics(&self, pod: &PodRecord) -> Result<PodSandboxMetrics> {
        let cfg = pod.config();
        let meta = cfg.metadata.clone().unwrap_or_default();
        let now = skiff_shim::api::now_ns();
        let mut metrics = vec![];
        let own_network = pod_namespaces(cfg)
            .map(|n| n.network == NsMode::Pod)
            .unwrap_or(false);
        if own_network && pod.shim_pid > 0 && is_our_shim(pod.shim_pid, &pod.id) {
            let text = std::fs::read_to_string(format!("/proc/{}/net/dev", pod.shim_pid))
                .unwrap_or_default();
            for (iface, cols) in net_dev(&text) {
                for (name, _, col) in NETWORK_METRICS {
                    metrics.push(Metric {
                        name: name.to_string(),
                        timestamp: now,
                        metric_type: Counter as i32,
                        label_values: vec![
                            meta.name.clone(),
                            meta.namespace.clone(),
                            pod.id.clone(),
                            iface.clone(),
                        ],
                        value: cols.get(*col).map(|v| UInt64Value { value: *v }),
                    });
                }
            }
        }
        let mut container_metrics = vec![];
        for c in self.containers.of_pod(&pod.id) {
            let st = self.container_state(&c);
            if st.pid == 0 || st.exited {
                continue;
            }
            let name = c
                .config()
                .metadata
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default();
            let mut out = Out {
                now,
                base: vec![
                    name,
                    meta.name.clone(),
                    meta.namespace.clone(),
                    c.id.clone(),
                ],
                metrics: vec![],
            };
            container(&c, &mut out);
            container_metrics.push(ContainerMetrics {
                container_id: c.id.clone(),
                metrics: out.metrics,
            });
        }
        Ok(PodSandboxMetrics {
            pod_sandbox_id: pod.id.clone(),
            metrics,
            container_metrics,
        })
    }
}

/// A container's metrics from its cgroup (v2 file names first, then v1's) and writable layer.
fn container(c: &ContainerRecord, out: &mut Out) {
    let dirs = skiff_shim::cgroups::dirs(&c.cgroup).unwrap_or_default();
    let files = CgroupFiles(&dirs);
    let keyed = |name: &str| files.keyed(name);
    // CPU: v2 cpu.stat in microseconds; v1 cpuacct.usage in ns, cpuacct.stat in USER_HZ ticks,
    // cpu.stat's throttled_time in ns.
    let cpu = keyed("cpu.stat");
    const US: u64 = 1_000_000;
    const NS: u64 = 1_000_000_000;
    const TICKS: u64 = 100;
    match cpu.get("usage_usec") {
        Some(usage) => {
            out.add("container_cpu_usage_seconds_total", Some(usage / US), &[]);
            out.add(
                "container_cpu_user_seconds_total",
                cpu.get("user_usec").map(|v| v / US),
                &[],
            );
            out.add(
                "container_cpu_system_seconds_total",
                cpu.get("system_usec").map(|v| v / US),
                &[],
            );
            out.add(
                "container_cpu_cfs_throttled_seconds_total",
                cpu.get("throttled_usec").map(|v| v / US),
                &[],
            );
        }
        None => {
            out.add(
                "container_cpu_usage_seconds_total",
                files.number("cpuacct.usage").map(|v| v / NS),
                &[],
            );
            let acct = keyed("cpuacct.stat");
            out.add(
                "container_cpu_user_seconds_total",
                acct.get("user").map(|v| v / TICKS),
                &[],
            );
            out.add(
                "container_cpu_system_seconds_total",
                acct.get("system").map(|v| v / TICKS),
                &[],
            );
            out.add(
                "container_cpu_cfs_throttled_seconds_total",
                cpu.get("throttled_time").map(|v| v / NS),
                &[],
            );
        }
    }
    out.add(
        "container_cpu_cfs_periods_total",
        cpu.get("nr_periods").copied(),
        &[],
    );
    out.add(
        "container_cpu_cfs_throttled_periods_total",
        cpu.get("nr_throttled").copied(),
        &[],
    );

    // Memory.
    let m = keyed("memory.stat");
    let get = |keys: &[&str]| keys.iter().find_map(|k| m.get(*k).copied());
    let usage = files
        .number("memory.current")
        .or_else(|| files.number("memory.usage_in_bytes"));
    let inactive = get(&["total_inactive_file", "inactive_file"]);
    out.add("container_memory_usage_bytes", usage, &[]);
    out.add(
        "container_memory_working_set_bytes",
        usage.map(|u| u.saturating_sub(inactive.unwrap_or(0))),
        &[],
    );
    out.add("container_memory_rss", get(&["total_rss", "anon"]), &[]);
    out.add("container_memory_cache", get(&["total_cache", "file"]), &[]);
    out.add(
        "container_memory_mapped_file",
        get(&["total_mapped_file", "file_mapped"]),
        &[],
    );
    out.add(
        "container_memory_total_active_file_bytes",
        get(&["total_active_file", "active_file"]),
        &[],
    );
    out.add("container_memory_total_inactive_file_bytes", inactive, &[]);
    let swap = files.number("memory.swap.current").or_else(|| {
        let both = files.number("memory.memsw.usage_in_bytes")?;
        Some(both.saturating_sub(usage.unwrap_or(0)))
    });
    out.add("container_memory_swap", swap, &[]);
    out.add(
        "container_memory_max_usage_bytes",
        files
            .number("memory.peak")
            .or_else(|| files.number("memory.max_usage_in_bytes")),
        &[],
    );
    out.add(
        "container_memory_failcnt",
        files.number("memory.failcnt"),
        &[],
    );
    out.add(
        "container_memory_failures_total",
        get(&["total_pgfault", "pgfault"]),
        &["pgfault", "container"],
    );
    out.add(
        "container_memory_failures_total",
        get(&["total_pgmajfault", "pgmajfault"]),
        &["pgmajfault", "container"],
    );
    out.add(
        "container_oom_events_total",
        Some(skiff_shim::cgroups::oom_kills(&c.cgroup)),
        &[],
    );
    let procs = files.number("pids.current").or_else(|| {
        files
            .read("cgroup.procs")
            .map(|t| t.lines().filter(|l| !l.trim().is_empty()).count() as u64)
    });
    out.add("container_processes", procs, &[]);

    // The writable layer, on the device of the layer store.
    let upper = c.writable_layer();
    let device = std::fs::metadata(&upper)
        .map(|m| {
            use std::os::unix::fs::MetadataExt;
            format!(
                "{}:{}",
                nix::sys::stat::major(m.dev()),
                nix::sys::stat::minor(m.dev())
            )
        })
        .unwrap_or_default();
    if let Ok((bytes, inodes)) = crate::store::disk_usage(&upper) {
        out.add("container_fs_usage_bytes", Some(bytes), &[&device]);
        out.add("container_fs_inodes_total", Some(inodes), &[&device]);
    }

    // Block I/O by device: v2 io.stat, v1 blkio's throttle counters.
    for (dev, (rbytes, wbytes, rios, wios)) in block_io(&files) {
        out.add("container_fs_reads_bytes_total", Some(rbytes), &[&dev]);
        out.add("container_fs_writes_bytes_total", Some(wbytes), &[&dev]);
        out.add("container_fs_reads_total", Some(rios), &[&dev]);
        out.add("container_fs_writes_total", Some(wios), &[&dev]);
    }
}

/// (device, (read bytes, written bytes, reads, writes)) of a cgroup.
fn block_io(files: &CgroupFiles<'_>) -> Vec<(String, (u64, u64, u64, u64))> {
    let mut out: std::collections::BTreeMap<String, (u64, u64, u64, u64)> = Default::default();
    if let Some(t) = files.read("io.stat") {
        // "8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0"
        for line in t.lines() {
            let mut f = line.split_whitespace();
            let Some(dev) = f.next() else { continue };
            let e = out.entry(dev.to_string()).or_default();
            for kv in f {
                let Some((k, v)) = kv.split_once('=') else {
                    continue;
                };
                let v: u64 = v.parse().unwrap_or(0);
                match k {
                    "rbytes" => e.0 = v,
                    "wbytes" => e.1 = v,
                    "rios" => e.2 = v,
                    "wios" => e.3 = v,
                    _ => {}
                }
            }
        }
        return out.into_iter().collect();
    }
    // "8:0 Read 4096" lines.
    for (file, ops) in [
        ("blkio.throttle.io_service_bytes_recursive", false),
        ("blkio.throttle.io_serviced_recursive", true),
    ] {
        let Some(t) = files.read(file) else { continue };
        for line in t.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let [dev, op, v] = f[..] else { continue };
            let v: u64 = v.parse().unwrap_or(0);
            let e = out.entry(dev.to_string()).or_default();
            match (op, ops) {
                ("Read", false) => e.0 = v,
                ("Write", false) => e.1 = v,
                ("Read", true) => e.2 = v,
                ("Write", true) => e.3 = v,
                _ => {}
            }
        }
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_sent_is_described_with_its_labels() {
        let d = descriptors();
        for (name, _, _, extra) in CONTAINER_METRICS {
            let desc = d.iter().find(|x| x.name == *name).unwrap();
            assert_eq!(desc.label_keys.len(), 4 + extra.len());
        }
        let net = d
            .iter()
            .find(|x| x.name == "container_network_receive_bytes_total")
            .unwrap();
        assert_eq!(net.label_keys, ["pod", "namespace", "id", "interface"]);
    }
}
