//! Pods and containers end to end, observed from the kernel: /proc, mountinfo, cgroup files,
//! the CRI log file.

mod common;

use std::time::Duration;

use skiff_integration::cri::*;
use skiff_integration::image::Compression;
use skiff_integration::{require_root, ImageBuilder, Layer, Registry, Skiffd};
use skiff_proto::cri::*;

struct Env {
    _reg: Registry,
    d: Skiffd,
    rt: Rt,
    image: String,
    logs: tempfile::TempDir,
}

async fn env() -> Env {
    require_root();
    let reg = Registry::start();
    let img = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .config("Env", serde_json::json!(["PATH=/bin", "FROM_IMAGE=yes"]))
        .push(&reg.host, "test/busybox", "v1")
        .await;
    let d = Skiffd::start(&[&reg.host]);
    let mut images = d.images().await;
    pull(&mut images, &img.reference).await;
    let rt = d.runtime().await;
    Env {
        _reg: reg,
        d,
        rt,
        image: img.reference,
        logs: tempfile::tempdir().unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_runs_and_exits_with_its_code_and_output() {
    let mut e = env().await;
    let pcfg = pod_config("smoke", e.logs.path().to_str().unwrap());
    let pod = run_pod(&mut e.rt, &pcfg).await;
    let mut c = container_config("echo", &e.image, &["sh", "-c", "echo out; echo err >&2; exit 3"]);
    c.envs.push(KeyValue { key: "X".into(), value: "1".into() });
    let id = run(&mut e.rt, &pod, &pcfg, c).await;
    let s = wait_exited(&mut e.rt, &id, Duration::from_secs(10)).await;
    assert_eq!(s.exit_code, 3);
    assert_eq!(s.reason, "Error");
    assert!(s.started_at > 0 && s.finished_at >= s.started_at);
    let recs = log_records(&e.logs.path().join("echo/0.log"));
    assert!(recs.contains(&("stdout".into(), "F".into(), "out".into())), "{recs:?}");
    assert!(recs.contains(&("stderr".into(), "F".into(), "err".into())), "{recs:?}");
    drop(e.d);
}
