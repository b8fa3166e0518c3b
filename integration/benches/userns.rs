//! What a pod user namespace costs a pod start: RunPodSandbox + CreateContainer +
//! StartContainer for a pod in the host's user namespace, in its own user namespace with
//! idmapped layers, and with the `userns_rootfs = "chown"` fallback (a chowned copy of the
//! layers per container), for the same image; p50/p95 over 20 pods each, created round-robin.
//!
//!     cargo build --release --workspace && cargo build --profile shim -p skiff-shim --target x86_64-unknown-linux-musl &&
//!     cargo bench -p skiff-integration --bench userns

use std::time::{Duration, Instant};

use skiff_integration::cri::*;
use skiff_integration::image::Compression;
use skiff_integration::{ms, pct, ImageBuilder, Layer, Registry, Skiffd};
use skiff_proto::cri::*;

const N: usize = 20;

fn main() {
    skiff_integration::bench_main(run_all());
}

fn pod(name: &str, logs: &str, userns_base: Option<u32>) -> PodSandboxConfig {
    let mut c = pod_config(name, logs);
    let sc = c
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default);
    let map = |b: u32| {
        vec![IdMapping {
            host_id: b,
            container_id: 0,
            length: 65536,
        }]
    };
    sc.namespace_options = Some(NamespaceOption {
        network: NamespaceMode::Pod as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        userns_options: userns_base.map(|b| UserNamespace {
            mode: NamespaceMode::Pod as i32,
            uids: map(b),
            gids: map(b),
        }),
        ..Default::default()
    });
    c
}

/// Starts one pod with one `sleep` container; returns the time taken and the pod id.
async fn start_one(rt: &mut Rt, image: &str, cfg: &PodSandboxConfig) -> (f64, String) {
    let t = Instant::now();
    let id = run_pod(rt, cfg).await;
    run(
        rt,
        &id,
        cfg,
        container_config("c", image, &["sleep", "3600"]),
    )
    .await;
    (ms(t.elapsed()), id)
}

async fn run_all() {
    let reg = Registry::start();
    let img = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .push(&reg.host, "bench/busybox", "v1")
        .await;
    let logs = tempfile::tempdir().unwrap();
    let logs = logs.path().to_str().unwrap().to_string();
    let base_cfg = skiff_integration::deployed_shim_config();
    let idmap_d = Skiffd::start_with(&[&reg.host], Some(&base_cfg), &["--log-level", "warn"]);
    let chown_cfg = format!("{base_cfg}userns_rootfs = \"chown\"\n");
    let chown_d = Skiffd::start_with(&[&reg.host], Some(&chown_cfg), &["--log-level", "error"]);
    let mut rts = vec![];
    for d in [&idmap_d, &chown_d] {
        pull(&mut d.images().await, &img.reference).await;
        rts.push(d.runtime().await);
    }
    let modes = [
        ("host user namespace", 0usize, false),
        ("own user namespace, idmapped layers", 0, true),
        ("own user namespace, userns_rootfs = \"chown\"", 1, true),
    ];
    let mut times = vec![vec![]; modes.len()];
    let mut pods: Vec<Vec<String>> = vec![vec![], vec![]];
    // Round 0 warms up and is not measured.
    for i in 0..=N {
        for (m, (_, d, userns)) in modes.iter().enumerate() {
            let base = 1_000_000 + ((i * modes.len() + m) as u32) * 65536;
            let cfg = pod(&format!("p{m}-{i}"), &logs, userns.then_some(base));
            let (ms, id) = start_one(&mut rts[*d], &img.reference, &cfg).await;
            if i > 0 {
                times[m].push(ms);
            }
            pods[*d].push(id);
        }
    }
    for (d, p) in pods.into_iter().enumerate() {
        teardown_pods(&mut rts[d], p).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    println!();
    println!(
        "{N} pods per row, one busybox `sleep` container each, started round-robin; p50 / p95"
    );
    println!("| pod | RunPodSandbox + Create + StartContainer ms |");
    println!("|---|---|");
    let p50: Vec<f64> = times.iter().map(|t| pct(t.clone(), 0.5)).collect();
    for ((label, _, _), t) in modes.iter().zip(&times) {
        println!(
            "| {label} | {:.1} / {:.1} |",
            pct(t.clone(), 0.5),
            pct(t.clone(), 0.95)
        );
    }
    println!();
    println!(
        "idmapped user namespace adds {:.1} ms at p50; the chown fallback adds {:.1} ms",
        p50[1] - p50[0],
        p50[2] - p50[0]
    );
}
