//! What seccomp costs a container start: CreateContainer and CreateContainer+StartContainer
//! under Unconfined, under RuntimeDefault with its filter already compiled (the cache), and
//! under a RuntimeDefault-sized Localhost profile that differs for every container (compiled on
//! every create). p50/p95 over 30 containers each, in one pod,
//! created round-robin.
//!
//!     cargo build --release --workspace && cargo build --profile shim -p skiff-shim --target x86_64-unknown-linux-musl &&
//!     cargo bench -p skiff-integration --bench seccomp

use std::time::Instant;

use skiff_integration::cri::*;
use skiff_integration::image::Compression;
use skiff_integration::{ms, pct, ImageBuilder, Layer, Registry, Skiffd};
use skiff_proto::cri::security_profile::ProfileType;
use skiff_proto::cri::*;

const N: usize = 30;

fn main() {
    skiff_integration::bench_main(run_all());
}

async fn run_all() {
    let reg = Registry::start();
    let img = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .push(&reg.host, "bench/busybox", "v1")
        .await;
    let profiles = tempfile::tempdir().unwrap();
    let default: serde_json::Value = serde_json::from_slice(
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../profiles/runtime-default.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let cfg = skiff_integration::deployed_shim_config();
    let d = Skiffd::start_with(&[&reg.host], Some(&cfg), &["--log-level", "warn"]);
    pull(&mut d.images().await, &img.reference).await;
    let mut rt = d.runtime().await;
    let logs = tempfile::tempdir().unwrap();
    let pcfg = pod_config("bench", logs.path().to_str().unwrap());
    let pod = run_pod(&mut rt, &pcfg).await;

    let modes = [
        ("unconfined", "Unconfined"),
        ("cached", "RuntimeDefault, compiled once (cache)"),
        (
            "uncached",
            "RuntimeDefault-sized profile compiled on each create",
        ),
    ];
    let mut creates = vec![vec![]; modes.len()];
    let mut totals = vec![vec![]; modes.len()];
    let mut ids = vec![];
    // Round-robin over the modes, so the node's drift over the run (cgroups the kernel is still
    // freeing) is shared evenly. Round 0 is unmeasured: it warms the caches (and compiles
    // RuntimeDefault).
    for i in 0..=N {
        for (m, (mode, _)) in modes.iter().enumerate() {
            let seccomp =
                match *mode {
                    "unconfined" => SecurityProfile {
                        profile_type: ProfileType::Unconfined as i32,
                        ..Default::default()
                    },
                    "cached" => SecurityProfile::default(),
                    _ => {
                        // The default profile plus one rule of its own: a distinct profile each time.
                        let mut p = default.clone();
                        p["syscalls"].as_array_mut().unwrap().push(serde_json::json!({
                        "names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1000 + i
                    }));
                        let path = profiles.path().join(format!("p{i}.json"));
                        std::fs::write(&path, serde_json::to_vec(&p).unwrap()).unwrap();
                        SecurityProfile {
                            profile_type: ProfileType::Localhost as i32,
                            localhost_ref: path.display().to_string(),
                        }
                    }
                };
            let mut c = container_config(&format!("{mode}{i}"), &img.reference, &["sleep", "3600"]);
            c.linux = Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    seccomp: Some(seccomp),
                    ..Default::default()
                }),
                ..Default::default()
            });
            let t = Instant::now();
            let id = create(&mut rt, &pod, &pcfg, c)
                .await
                .expect("CreateContainer");
            let c_t = t.elapsed();
            start(&mut rt, &id).await.expect("StartContainer");
            let total_t = t.elapsed();
            if i > 0 {
                creates[m].push(ms(c_t));
                totals[m].push(ms(total_t));
            }
            ids.push(id);
        }
    }
    for id in ids {
        let _ = rt
            .stop_container(StopContainerRequest {
                container_id: id.clone(),
                timeout: 0,
            })
            .await;
        let _ = rt
            .remove_container(RemoveContainerRequest { container_id: id })
            .await;
    }
    println!();
    println!("{N} busybox `sleep` containers per row in one pod, created and started round-robin; p50 / p95");
    println!("| seccomp | CreateContainer ms | Create+StartContainer ms |");
    println!("|---|---|---|");
    for (((_, label), c), t) in modes.iter().zip(creates).zip(totals) {
        println!(
            "| {label} | {:.2} / {:.2} | {:.2} / {:.2} |",
            pct(c.clone(), 0.5),
            pct(c, 0.95),
            pct(t.clone(), 0.5),
            pct(t, 0.95)
        );
    }
}
