//! Pod density, skiff against containerd 1.6 + runc in one run on one machine: a burst of N
//! host-network pods (one busybox `sleep` container each) started by 10 parallel workers, as
//! kubelet's pod workers start them, through the CRI socket, for N = 110 (kubelet's default
//! `maxPods`) and 250 (large nodes). For each: the time until all N are Running, the node's
//! busy CPU time (all processes, kernel included) per pod over the burst, the p50 / p99 of one
//! pod + container under the burst (and of RunPodSandbox, CreateContainer and StartContainer
//! apart), the daemon's RSS with all N running, the per-pod processes' RSS 2 s later (skiff:
//! the pod's shim; containerd: its shim + pause), and the teardown (StopPodSandbox +
//! RemovePodSandbox of all N, 10 workers). The pods have their own
//! IPC and PID namespaces; with `SKIFF_BENCH_PID=container` no PID namespace of their own, as
//! kubelet makes pods by default. `SKIFF_DENSITY_WORKERS=N` starts the burst with N workers
//! instead of 10. `SKIFF_DENSITY_TRACE=FILE` appends a line per pod to FILE: runtime, burst
//! size, worker, pod, when its RunPodSandbox was sent (ms into the burst), and its
//! RunPodSandbox, CreateContainer and StartContainer times in ms. Before each burst the page
//! cache is dropped, one unmeasured pod warms it up again, and the machine's own speed at that
//! moment is taken (fork + exec of /bin/true, an integer loop: this machine is a VM on a shared
//! host whose speed moves). Both runtimes keep all their state (images, records, writable
//! layers, run-time state) on one tmpfs: this machine's disk (ext4 without a journal, with
//! online discard) made the cost of creating and deleting files swing from run to run.
//!
//!     apt-get install containerd runc &&
//!     cargo build --release --workspace && cargo build --profile shim -p skiff-shim --target x86_64-unknown-linux-musl &&
//!     cargo bench -p skiff-integration --bench density

use std::time::{Duration, Instant};

use skiff_integration::containerd::{
    bench_images, clean_node, pid_from_info, rss_kib, shim_of, Containerd,
};
use skiff_integration::cri::*;
use skiff_integration::{ms, node_busy_ms, pct, Registry, Skiffd, Tmpfs, Yardstick};
use skiff_proto::cri::*;

const WORKERS: usize = 10;

/// How many workers start the burst: 10, or `SKIFF_DENSITY_WORKERS` (fewer requests in flight
/// show how much of a pod's latency under the burst is waiting behind the others' pods).
/// The teardown always uses 10.
fn start_workers() -> usize {
    std::env::var("SKIFF_DENSITY_WORKERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(WORKERS)
}
/// How long after the burst the per-pod processes' memory is read.
const SETTLE: Duration = Duration::from_secs(2);

fn main() {
    skiff_integration::bench_main(run_all());
}

struct Burst {
    pods: usize,
    all_running: Duration,
    /// The machine's busy CPU time during the burst, per pod.
    cpu_per_pod_ms: f64,
    /// pod + container, each pod.
    each: Vec<f64>,
    /// RunPodSandbox, CreateContainer and StartContainer apart, each pod.
    calls: [Vec<f64>; 3],
    daemon_rss_kib: u64,
    per_pod_kib: Vec<u64>,
    teardown: Duration,
    /// The machine's own speed just before the burst.
    yardstick: Yardstick,
}

/// Starts `n` pods with 10 workers; waits until every container reports Running.
async fn burst(
    runtime: &str,
    rt: &Rt,
    daemon_pid: i32,
    n: usize,
    image: &str,
    logs: &str,
    memory: fn(&str, &PodSandboxStatusResponse) -> u64,
) -> Burst {
    warm_up(&mut rt.clone(), image, logs).await;
    let yardstick = Yardstick::measure();
    perf_control("enable");
    let began = Instant::now();
    let busy = node_busy_ms();
    let mut workers = vec![];
    let nw = start_workers();
    for w in 0..nw {
        let mut rt = rt.clone();
        let image = image.to_string();
        let logs = logs.to_string();
        workers.push(tokio::spawn(async move {
            let mut done = vec![];
            for i in (w..n).step_by(nw) {
                let pcfg = bench_pod(&format!("d{n}-{i}"), &logs);
                let t = Instant::now();
                let sent = ms(t - began);
                let pod = run_pod(&mut rt, &pcfg).await;
                let ran = t.elapsed();
                let cfg = container_config("c", &image, &["sleep", "3600"]);
                let c = create(&mut rt, &pod, &pcfg, cfg)
                    .await
                    .expect("CreateContainer");
                let created = t.elapsed();
                start(&mut rt, &c).await.expect("StartContainer");
                let started = t.elapsed();
                let calls = [ms(ran), ms(created - ran), ms(started - created)];
                done.push(Started {
                    pod,
                    container: c,
                    calls,
                    worker: w,
                    index: i,
                    sent,
                });
            }
            done
        }));
    }
    let mut all = vec![];
    for w in workers {
        all.extend(w.await.expect("worker"));
    }
    let mut rt = rt.clone();
    for s in &all {
        assert_eq!(
            status(&mut rt, &s.container).await.state,
            ContainerState::ContainerRunning as i32
        );
    }
    let all_running = began.elapsed();
    let cpu_per_pod_ms = (node_busy_ms() - busy) / n as f64;
    perf_control("disable");
    let daemon_rss_kib = rss_kib(daemon_pid);
    // The pods' processes settled: skiff's shims give their code pages back when idle,
    // containerd's shims run their garbage collector.
    tokio::time::sleep(SETTLE).await;
    let mut per_pod_kib = vec![];
    for Started { pod, .. } in &all {
        let st = rt
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: pod.clone(),
                verbose: true,
            })
            .await
            .expect("PodSandboxStatus")
            .into_inner();
        per_pod_kib.push(memory(pod, &st));
    }
    trace(runtime, n, &all);
    let each = all.iter().map(|s| s.calls.iter().sum()).collect();
    let calls = [0, 1, 2].map(|k| all.iter().map(|s| s.calls[k]).collect());
    let pods: Vec<String> = all.into_iter().map(|s| s.pod).collect();
    let t = Instant::now();
    let mut workers = vec![];
    for chunk in pods.chunks(pods.len().div_ceil(WORKERS)) {
        let mut rt = rt.clone();
        let chunk = chunk.to_vec();
        workers.push(tokio::spawn(
            async move { teardown_pods(&mut rt, chunk).await },
        ));
    }
    for w in workers {
        w.await.expect("teardown worker");
    }
    Burst {
        pods: n,
        all_running,
        cpu_per_pod_ms,
        each,
        calls,
        daemon_rss_kib,
        per_pod_kib,
        teardown: t.elapsed(),
        yardstick,
    }
}

/// One pod of a burst.
struct Started {
    pod: String,
    container: String,
    /// RunPodSandbox, CreateContainer and StartContainer, ms.
    calls: [f64; 3],
    /// The worker that started it, and the pod's index in the burst.
    worker: usize,
    index: usize,
    /// When its RunPodSandbox was sent, ms into the burst.
    sent: f64,
}

/// With `SKIFF_DENSITY_TRACE=FILE`, appends a line per pod of the burst to FILE, in the order
/// the pods were sent: runtime, burst size, worker, pod index, sent at, RunPodSandbox,
/// CreateContainer, StartContainer (ms).
fn trace(runtime: &str, n: usize, all: &[Started]) {
    let Some(file) = std::env::var_os("SKIFF_DENSITY_TRACE") else {
        return;
    };
    let mut pods: Vec<&Started> = all.iter().collect();
    pods.sort_by(|a, b| a.sent.total_cmp(&b.sent));
    let text: String = pods
        .iter()
        .map(|s| {
            let [run, create, start] = s.calls;
            let (w, i, sent) = (s.worker, s.index, s.sent);
            format!("{runtime} {n} {w} {i} {sent:.1} {run:.1} {create:.1} {start:.1}\n")
        })
        .collect();
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&file)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .expect("SKIFF_DENSITY_TRACE: append to the trace file");
}

/// With `SKIFF_PERF_CTL` naming the control FIFO of a `perf record --control fifo:PATH -D -1`,
/// turns the profiler on and off around each burst, so a profile holds the bursts alone.
fn perf_control(command: &str) {
    if let Some(fifo) = std::env::var_os("SKIFF_PERF_CTL") {
        std::fs::write(fifo, format!("{command}\n"))
            .expect("SKIFF_PERF_CTL: write the perf control FIFO");
    }
}

fn row(runtime: &str, b: &Burst) {
    let mib = |k: u64| k as f64 / 1024.0;
    let per_pod: Vec<f64> = b.per_pod_kib.iter().map(|k| mib(*k)).collect();
    println!(
        "| {runtime} | {} | {:.2} | {:.1} | {:.1} / {:.1} | {:.1} | {:.2} ({:.1} in all) | {:.2} |",
        b.pods,
        b.all_running.as_secs_f64(),
        b.cpu_per_pod_ms,
        pct(b.each.clone(), 0.5),
        pct(b.each.clone(), 0.99),
        mib(b.daemon_rss_kib),
        per_pod.iter().sum::<f64>() / per_pod.len().max(1) as f64,
        per_pod.iter().sum::<f64>(),
        b.teardown.as_secs_f64(),
    );
}

async fn run_all() {
    let reg = Registry::start();
    let (busybox, pause) = bench_images(&reg.host).await;
    let logs = tempfile::tempdir().unwrap();
    let logs = logs.path().to_str().unwrap().to_string();
    // Both runtimes' state on one tmpfs: this machine's disk (ext4 without a journal, with
    // online discard) made the cost of creating and deleting files swing from run to run.
    let run = Tmpfs::mount();
    let mut rows = vec![];
    // SKIFF_DENSITY_SIZES=110 and SKIFF_DENSITY_SKIFF_ONLY=1 narrow a run while profiling.
    let sizes: Vec<usize> = std::env::var("SKIFF_DENSITY_SIZES")
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|_| vec![110, 250]);
    let skiff_only = std::env::var_os("SKIFF_DENSITY_SKIFF_ONLY").is_some();
    for n in sizes {
        clean_node();
        {
            // A fresh skiffd per size, with the shim as deployed.
            let d = Skiffd::for_bench(&reg.host, &run.path().join(format!("skiff-{n}")));
            pull(&mut d.images().await, &busybox.reference).await;
            let rt = d.runtime().await;
            let b = burst(
                "skiff",
                &rt,
                d.pid() as i32,
                n,
                &busybox.reference,
                &logs,
                |_, st| rss_kib(pid_from_info(st)),
            )
            .await;
            rows.push(("skiff", b));
        }
        if skiff_only {
            continue;
        }
        clean_node();
        {
            let c = Containerd::start_in(&reg.host, &pause.reference, run.path());
            let mut img = c.images().await;
            pull(&mut img, &busybox.reference).await;
            pull(&mut img, &pause.reference).await;
            let rt = c.runtime().await;
            let b = burst(
                "containerd",
                &rt,
                c.pid() as i32,
                n,
                &busybox.reference,
                &logs,
                |id, st| rss_kib(shim_of(id)) + rss_kib(pid_from_info(st)),
            )
            .await;
            rows.push(("containerd 1.6 + runc", b));
        }
    }
    println!();
    println!(
        "Bursts of {} (one busybox `sleep` each) started by {} workers through the CRI socket",
        bench_pods(),
        start_workers()
    );
    println!(
        "| runtime | pods | all Running s | node CPU ms per pod | pod + container p50 / p99 ms | daemon RSS MiB | per-pod processes MiB | teardown s |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (runtime, b) in &rows {
        row(runtime, b);
    }
    println!();
    println!("The same bursts, each call apart: p50 / p99 ms");
    println!("| runtime | pods | RunPodSandbox | CreateContainer | StartContainer |");
    println!("|---|---|---|---|---|");
    for (runtime, b) in &rows {
        let [r, c, s] = b.calls.clone().map(|v| (pct(v.clone(), 0.5), pct(v, 0.99)));
        println!(
            "| {runtime} | {} | {:.1} / {:.1} | {:.1} / {:.1} | {:.1} / {:.1} |",
            b.pods, r.0, r.1, c.0, c.1, s.0, s.1
        );
    }
    println!();
    println!("This machine's own speed just before each burst:");
    for (runtime, b) in &rows {
        println!("- {runtime}, {} pods: {}", b.pods, b.yardstick);
    }
}
