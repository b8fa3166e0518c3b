//! Pod start benchmark, skiff against containerd 1.6 + runc, in one run on one machine:
//! RunPodSandbox, CreateContainer+StartContainer, and the memory each pod costs (skiff: the
//! pod's shim; containerd: its shim plus the pause process, read 2 s after the last pod
//! started), p50/p95 over 30 host-network pods; then, one pod after another, how long
//! StopContainer (no grace period) + StopPodSandbox + RemovePodSandbox take. The pods have their own IPC and PID namespaces;
//! with `SKIFF_BENCH_PID=container` no PID namespace of their own, as kubelet makes pods by
//! default.
//!
//! Each runtime is measured on the same node state: the page cache is dropped before its turn
//! (so memory cgroups that earlier runs left "dying" in the kernel, which slow every later mount
//! and cgroup operation, are gone), then one unmeasured pod warms the caches up again. Both
//! runtimes keep all their state (images, records, writable layers, run-time state) on one
//! tmpfs: on this machine's disk (ext4 without a journal, with online discard) skiff's own
//! figure grew run after run (9.7, 11.2, 13.6 ms in three runs) with the disk's state, and
//! swung 2x between runs; on the tmpfs it is 7.3 ms three times in a row.
//!
//!     cargo build --release --workspace && cargo build --profile shim -p skiff-shim --target x86_64-unknown-linux-musl &&
//!     cargo bench -p skiff-integration --bench pods

use std::time::{Duration, Instant};

use skiff_integration::containerd::{
    bench_images, clean_node, pid_from_info, rss_kib, shim_of, Containerd,
};
use skiff_integration::cri::*;
use skiff_integration::{ms, pct, Registry, Skiffd, Tmpfs};
use skiff_proto::cri::*;

const PODS: usize = 30;

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

/// Starts PODS pods with one `sleep` container each, then stops and removes them.
async fn bench(
    rt: &mut Rt,
    image: &str,
    logs: &str,
    memory: impl Fn(&str, &PodSandboxStatusResponse) -> u64,
) -> Vec<Sample> {
    let mut samples = vec![];
    let mut pods = vec![];
    warm_up(rt, image, logs).await;
    for i in 0..PODS {
        let pcfg = bench_pod(&format!("bench{i}"), logs);
        let t = Instant::now();
        let pod = run_pod(rt, &pcfg).await;
        let run_pod_t = t.elapsed();
        let t = Instant::now();
        let c = run(
            rt,
            &pod,
            &pcfg,
            container_config("c", image, &["sleep", "3600"]),
        )
        .await;
        let cs = t.elapsed();
        samples.push(Sample {
            run_pod: run_pod_t,
            create_start: cs,
            rss_kib: 0,
            stop_remove: Duration::ZERO,
        });
        pods.push((pod, c));
    }
    // The pods' processes settled: skiff's shims give their code pages back when idle,
    // containerd's shims run their garbage collector.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (s, (pod, _)) in samples.iter_mut().zip(&pods) {
        let st = rt
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: pod.clone(),
                verbose: true,
            })
            .await
            .expect("status")
            .into_inner();
        s.rss_kib = memory(pod, &st);
    }
    // As kubelet deletes a pod: its containers stopped, then the sandbox; removed here at once.
    for (s, (pod, c)) in samples.iter_mut().zip(pods) {
        let t = Instant::now();
        rt.stop_container(StopContainerRequest {
            container_id: c,
            timeout: 0,
        })
        .await
        .expect("StopContainer");
        teardown_pods(rt, vec![pod]).await;
        s.stop_remove = t.elapsed();
    }
    samples
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
    let logs_s = logs.path().to_str().unwrap().to_string();

    let run = Tmpfs::mount();
    clean_node();
    let skiff = {
        let d = Skiffd::for_bench(&reg.host, &run.path().join("skiff"));
        pull(&mut d.images().await, &busybox.reference).await;
        let mut rt = d.runtime().await;
        bench(&mut rt, &busybox.reference, &logs_s, |_, st| {
            rss_kib(pid_from_info(st))
        })
        .await
    };
    clean_node();
    let containerd = {
        let c = Containerd::start_in(&reg.host, &pause.reference, run.path());
        let mut img = c.images().await;
        pull(&mut img, &busybox.reference).await;
        pull(&mut img, &pause.reference).await;
        let mut rt = c.runtime().await;
        bench(&mut rt, &busybox.reference, &logs_s, |id, st| {
            rss_kib(shim_of(id)) + rss_kib(pid_from_info(st))
        })
        .await
    };
    println!();
    println!(
        "{PODS} {}, one busybox `sleep` container each, started one after another; p50 / p95",
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
}
