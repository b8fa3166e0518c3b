//! Whole CRI requests, random and mutated, sent to a running skiffd for every RPC of api.proto
//! (`integration/fuzz/cri_requests.py`, through Python grpcio as raw protobuf): every call gets
//! an answer, nothing in the daemon panics, and it still serves afterwards. skiffd runs in a
//! network namespace with only loopback, so whatever a random request names (a registry, a
//! port) stays on the machine. SKIFF_FUZZ_SECONDS sets the length (default 60).

mod common;

use std::path::Path;
use std::process::Command;

use common::Netns;
use skiff_integration::cri::*;
use skiff_integration::image::Compression;
use skiff_integration::{require_root, ImageBuilder, Layer, Registry, Skiffd};
use skiff_proto::cri::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_cri_requests_get_answers_and_panic_nothing() {
    require_root();
    let seconds: u64 = std::env::var("SKIFF_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let python = std::env::var("SKIFF_TEST_PYTHON")
        .unwrap_or_else(|_| "/var/cache/skiff-test-venv/bin/python".into());
    let reg = Registry::start();
    let img = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .push(&reg.host, "test/fuzz", "v1")
        .await;
    let root = common::pulled_root(&reg.host, &img.reference).await;
    let root_flag = root.path().display().to_string();
    let ns = Netns::new();
    let d = Skiffd::start_in(
        Some(&ns.0),
        &[],
        Some("criu_binary = \"/nonexistent/criu\"\n"),
        &["--root", &root_flag],
    );
    let mut rt = d.runtime().await;
    let logs = tempfile::tempdir().unwrap();
    let pcfg = pod_config("fuzz", logs.path().to_str().unwrap());
    let pod = run_pod(&mut rt, &pcfg).await;
    // A container that ends on the stop signal, so a fuzzed StopContainer does not wait out
    // its (random) grace period.
    let c = run(
        &mut rt,
        &pod,
        &pcfg,
        container_config(
            "target",
            &img.reference,
            &["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"],
        ),
    )
    .await;

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/cri_requests.py");
    let proto = Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto/proto/api.proto");
    let seed = rand::random::<u32>();
    let out = Command::new(&python)
        .arg(&script)
        .arg(&d.socket)
        .arg(&proto)
        .arg(seconds.to_string())
        .arg(seed.to_string())
        .arg(&pod)
        .arg(&c)
        .output()
        .unwrap_or_else(|e| panic!("{python}: {e} (integration/run-tests installs it)"));
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "seed {seed}\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "seed {seed}: unanswered calls:\n{text}"
    );
    let last = text.lines().last().unwrap_or("");
    assert!(last.starts_with("requests: "), "{text}");

    // Still serving, and nothing panicked.
    rt.version(VersionRequest::default())
        .await
        .expect("skiffd serves after the fuzzing");
    let log = d.log_text();
    assert!(!log.contains("panicked"), "seed {seed}: {log}");
    let pods = rt
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .items;
    teardown_pods(&mut rt, pods.into_iter().map(|p| p.id).collect()).await;
}
