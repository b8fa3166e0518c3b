//! Pod start benchmark, skiff against containerd 1.6 + runc, in one run on one machine:
//! RunPodSandbox, CreateContainer+StartContainer, and the memory each pod costs (skiff: the
//! pod's shim; containerd: its shim plus the pause process, read 2 s after the last pod
//! started), p50/p95 over 30 host-network pods; then, one pod after another, how long
//! StopContainer (no grace period) + StopPodSandbox + RemovePodSandbox take. The pods have
//! their own IPC and PID namespaces; with `SKIFF_BENCH_PID=container` no PID namespace of their
//! own, as kubelet makes pods by default.
//!
//! Both runtimes run at once and take turns, 10 pods each time, three times, each starting,
//! measuring and removing its pods while the other has none, so that both are measured under
//! the same machine conditions: on this machine (a VM on a shared host) fork + exec of
//! /bin/true took 0.69 ms in one minute and 1.11 ms in another, and measured one after the
//! other the runtimes' figures swung with it (skiff 5.5-8.6 ms, the speed-up 14.6-21.9x in
//! seven runs). The bench prints that yardstick before and after the pods. The page cache
//! is dropped before the pods (so memory cgroups that earlier runs left "dying" in the kernel,
//! which slow every later mount and cgroup operation, are gone), and one unmeasured pod per
//! runtime warms the caches up again. Both runtimes keep all their state (images, records,
//! writable layers, run-time state) on one tmpfs: on this machine's disk (ext4 without a
//! journal, with online discard) skiff's own figure grew run after run (9.7, 11.2, 13.6 ms in
//! three runs) with the disk's state.
//!
//!     cargo build --release --workspace && cargo build --profile shim -p skiff-shim --target x86_64-unknown-linux-musl &&
//!     cargo bench -p skiff-integration --bench pods

use std::time::{Duration, Instant};

use skiff_integration::containerd::{
    bench_images, clean_node, pid_from_info, rss_kib, shim_of, Containerd,
};
use skiff_integration::cri::*;
use skiff_integration::{ms, pct, Registry, Skiffd, Tmpfs, Yardstick};
use skiff_proto::cri::*;

const PODS: usize = 30;
/// The runtimes take turns this many times.
const ROUNDS: usize = 3;

struct Sample {
    run_pod: Duration,
    create_start: Duration,
    rss_kib: u64,
    /// StopContainer + StopPodSandbox + RemovePodSandbox.
    stop_remove: Duration,
}

fn main() {
    skiff_integration::bench_main(run_all());
}

/// One runtime under test: its CRI client, how to read a pod's memory, its pods and samples.
struct Side {
    rt: Rt,
    memory: fn(&str, &PodSandboxStatusResponse) -> u64,
    logs: String,
    pods: Vec<(String, String)>,
    samples: Vec<Sample>,
}

impl Side {
    /// Starts pod `i` with one `sleep` container, timing RunPodSandbox and the container apart.
    async fn start(&mut self, i: usize, image: &str) {
        let pcfg = bench_pod(&format!("bench{i}"), &self.logs);
        let t = Instant::now();
        let pod = run_pod(&mut self.rt, &pcfg).await;
        let run_pod_t = t.elapsed();
        let t = Instant::now();
        let c = run(
            &mut self.rt,
            &pod,
            &pcfg,
            container_config("c", image, &["sleep", "3600"]),
        )
        .await;
        self.samples.push(Sample {
            run_pod: run_pod_t,
            create_start: t.elapsed(),
            rss_kib: 0,
            stop_remove: Duration::ZERO,
        });
        self.pods.push((pod, c));
    }

    /// Reads the memory of each pod from the `first`.
    async fn read_memory(&mut self, first: usize) {
        for (s, (pod, _)) in self.samples.iter_mut().zip(&self.pods).skip(first) {
            let st = self
                .rt
                .pod_sandbox_status(PodSandboxStatusRequest {
                    pod_sandbox_id: pod.clone(),
                    verbose: true,
                })
                .await
                .expect("status")
                .into_inner();
            s.rss_kib = (self.memory)(pod, &st);
        }
    }

    /// Stops and removes pod `i` as kubelet deletes a pod: its container stopped, then the
    /// sandbox; removed here at once.
    async fn stop_remove(&mut self, i: usize) {
        let (pod, c) = self.pods[i].clone();
        let t = Instant::now();
        self.rt
            .stop_container(StopContainerRequest {
                container_id: c,
                timeout: 0,
            })
            .await
            .expect("StopContainer");
        teardown_pods(&mut self.rt, vec![pod]).await;
        self.samples[i].stop_remove = t.elapsed();
    }
}

/// Starts, measures and removes PODS pods on each runtime, the runtimes taking turns in rounds
/// of PODS / ROUNDS pods, so that both are measured under the same machine conditions while
/// each runs alone on a node holding none of the other's pods (a pod's mounts and cgroups make
/// every later container start on the node dearer, whoever made them).
async fn bench(sides: &mut [Side; 2], image: &str) {
    for side in sides.iter_mut() {
        warm_up(&mut side.rt, image, &side.logs).await;
    }
    for round in 0..ROUNDS {
        for side in sides.iter_mut() {
            let first = side.pods.len();
            for i in 0..PODS / ROUNDS {
                side.start(round * PODS / ROUNDS + i, image).await;
            }
            // The pods' processes settled: skiff's shims give their code pages back when
            // idle, containerd's shims run their garbage collector.
            tokio::time::sleep(Duration::from_secs(2)).await;
            side.read_memory(first).await;
            for i in first..side.pods.len() {
                side.stop_remove(i).await;
            }
        }
    }
}

fn row(name: &str, s: &[Sample]) {
    let rp: Vec<f64> = s.iter().map(|x| ms(x.run_pod)).collect();
    let cs: Vec<f64> = s.iter().map(|x| ms(x.create_start)).collect();
    let tot: Vec<f64> = s.iter().map(|x| ms(x.run_pod + x.create_start)).collect();
    let mem: Vec<f64> = s.iter().map(|x| x.rss_kib as f64 / 1024.0).collect();
    let stop: Vec<f64> = s.iter().map(|x| ms(x.stop_remove)).collect();
    println!(
        "| {name} | {:.1} / {:.1} | {:.1} / {:.1} | {:.1} / {:.1} | {:.2} / {:.2} | {:.1} / {:.1} |",
        pct(rp.clone(), 0.5),
        pct(rp, 0.95),
        pct(cs.clone(), 0.5),
        pct(cs, 0.95),
        pct(tot.clone(), 0.5),
        pct(tot, 0.95),
        pct(mem.clone(), 0.5),
        pct(mem, 0.95),
        pct(stop.clone(), 0.5),
        pct(stop, 0.95),
    );
}

async fn run_all() {
    let reg = Registry::start();
    let (busybox, pause) = bench_images(&reg.host).await;
    let logs = tempfile::tempdir().unwrap();

    let run = Tmpfs::mount();
    clean_node();
    let d = Skiffd::for_bench(&reg.host, &run.path().join("skiff"));
    pull(&mut d.images().await, &busybox.reference).await;
    let c = Containerd::start_in(&reg.host, &pause.reference, run.path());
    let mut img = c.images().await;
    pull(&mut img, &busybox.reference).await;
    pull(&mut img, &pause.reference).await;
    let side = |rt, memory, name: &str| {
        let logs = logs.path().join(name);
        std::fs::create_dir_all(&logs).expect("log directory");
        Side {
            rt,
            memory,
            logs: logs.to_str().unwrap().to_string(),
            pods: vec![],
            samples: vec![],
        }
    };
    let mut sides = [
        side(
            d.runtime().await,
            |_, st| rss_kib(pid_from_info(st)),
            "skiff",
        ),
        side(
            c.runtime().await,
            |id, st| rss_kib(shim_of(id)) + rss_kib(pid_from_info(st)),
            "containerd",
        ),
    ];
    // Dropped caches: memory cgroups earlier runs left "dying" in the kernel, which slow every
    // later mount and cgroup operation, are gone.
    clean_node();
    let before = Yardstick::measure();
    bench(&mut sides, &busybox.reference).await;
    let after = Yardstick::measure();
    let [skiff, containerd] = sides.map(|s| s.samples);
    println!();
    println!(
        "{PODS} {}, one busybox `sleep` container each, started one after another, the runtimes taking turns {ROUNDS} times; p50 / p95",
        bench_pods()
    );
    println!("| runtime | RunPodSandbox ms | Create+StartContainer ms | pod + container ms | memory per pod MiB | stop + remove ms |");
    println!("|---|---|---|---|---|---|");
    row("skiff (skiff-shim)", &skiff);
    row("containerd 1.6 + runc (shim + pause)", &containerd);
    let p50 = |s: &[Sample]| {
        pct(
            s.iter().map(|x| ms(x.run_pod + x.create_start)).collect(),
            0.5,
        )
    };
    println!();
    println!(
        "pod + container p50 speed-up: {:.1}x",
        p50(&containerd) / p50(&skiff)
    );
    println!("This machine's own speed before the pods: {before}; after them: {after}");
}
