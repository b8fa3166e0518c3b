//! skiffd killed with SIGKILL at random moments during pod churn, cycle after cycle: every pod
//! and container whose creation was acknowledged is there afterwards with the exit code its
//! command chose, every acknowledged removal stays done, and once everything is removed no shim,
//! mount, cgroup, pod or container directory is left. SKIFF_CRASH_SECONDS sets the length of the
//! churn (default 45).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use skiff_integration::cri::*;
use skiff_integration::image::Compression;
use skiff_integration::{require_root, ImageBuilder, Layer, Registry, Skiffd};
use skiff_proto::cri::runtime_service_client::RuntimeServiceClient;
use skiff_proto::cri::*;
use tonic::transport::{Channel, Endpoint};

/// What the churn saw acknowledged.
#[derive(Default)]
struct Acked {
    /// pod id → its containers (id, the exit code its command chose).
    pods: HashMap<String, Vec<(String, i32)>>,
    removed: Vec<String>,
    /// Pods whose stop and removal were asked for (done, half done or not, when cut short).
    removing: Vec<String>,
    calls: u64,
}

/// A channel that connects (again) on use: the daemon comes and goes under it.
fn lazy_channel(socket: &std::path::Path) -> Channel {
    let path = socket.to_path_buf();
    Endpoint::try_from("http://[::]:0")
        .expect("endpoint")
        .connect_with_connector_lazy(tower::service_fn(move |_| {
            let p = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(p).await?,
                ))
            }
        }))
}

/// Runs pods with one short container each, and removes some, until a call fails (the daemon
/// was killed); records what was acknowledged.
async fn churn(
    mut rt: RuntimeServiceClient<Channel>,
    image: String,
    logs: String,
    acked: Arc<Mutex<Acked>>,
    seq: u64,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seq);
    for n in 0.. {
        let name = format!("churn-{seq}-{n}");
        let pcfg = pod_config(&name, &logs);
        let Ok(r) = rt
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pcfg.clone()),
                runtime_handler: String::new(),
            })
            .await
        else {
            return;
        };
        let pod = r.into_inner().pod_sandbox_id;
        {
            let mut a = acked.lock().unwrap();
            a.pods.insert(pod.clone(), vec![]);
            a.calls += 1;
        }
        let code = rng.random_range(0..100);
        let Ok(c) = rt
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(container_config(
                    "c",
                    &image,
                    &["sh", "-c", &format!("exit {code}")],
                )),
                sandbox_config: Some(pcfg.clone()),
            })
            .await
        else {
            return;
        };
        let cid = c.into_inner().container_id;
        if rt
            .start_container(StartContainerRequest {
                container_id: cid.clone(),
            })
            .await
            .is_err()
        {
            return;
        }
        {
            let mut a = acked.lock().unwrap();
            a.pods.get_mut(&pod).unwrap().push((cid, code));
            a.calls += 3;
        }
        if rng.random_range(0..3) == 0 {
            acked.lock().unwrap().removing.push(pod.clone());
            let stopped = rt
                .stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: pod.clone(),
                })
                .await;
            if stopped.is_err()
                || rt
                    .remove_pod_sandbox(RemovePodSandboxRequest {
                        pod_sandbox_id: pod.clone(),
                    })
                    .await
                    .is_err()
            {
                return;
            }
            let mut a = acked.lock().unwrap();
            a.removed.push(pod);
            a.calls += 2;
        }
    }
}

use rand::SeedableRng;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_pod_churn_loses_and_leaks_nothing() {
    require_root();
    let seconds: u64 = std::env::var("SKIFF_CRASH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(45);
    let reg = Registry::start();
    let img = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .push(&reg.host, "test/churn", "v1")
        .await;
    let mut d = Skiffd::start(&[&reg.host]);
    pull(&mut d.images().await, &img.reference).await;
    let logs = tempfile::tempdir().unwrap();
    let logs_s = logs.path().display().to_string();
    let acked = Arc::new(Mutex::new(Acked::default()));
    let seed: u64 = rand::random();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let start = Instant::now();
    let mut kills = 0;
    while start.elapsed() < Duration::from_secs(seconds) {
        let rt = RuntimeServiceClient::new(lazy_channel(&d.socket));
        let task = tokio::spawn(churn(
            rt,
            img.reference.clone(),
            logs_s.clone(),
            acked.clone(),
            seed ^ kills,
        ));
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..400))).await;
        d.kill9();
        kills += 1;
        let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        d.restart();
    }

    // Everything acknowledged is there, as it was left.
    let mut rt = d.runtime().await;
    let listed: Vec<String> = rt
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .items
        .into_iter()
        .map(|p| p.id)
        .collect();
    // The churn tasks are done: take what they recorded.
    let a = std::mem::take(&mut *acked.lock().unwrap());
    let (mut pods, mut containers) = (0, 0);
    for (pod, cs) in &a.pods {
        if a.removed.contains(pod) {
            assert!(
                !listed.contains(pod),
                "seed {seed}: removed pod {pod} is back"
            );
            continue;
        }
        if a.removing.contains(pod) {
            // A removal the kill cut short of its answer may have done all, part or none of
            // its work; RemovePodSandbox at the end finishes it.
            continue;
        }
        assert!(
            listed.contains(pod),
            "seed {seed}: acknowledged pod {pod} is lost"
        );
        pods += 1;
        for (cid, code) in cs {
            let st = wait_exited(&mut rt, cid, Duration::from_secs(20)).await;
            assert_eq!(st.exit_code, *code, "seed {seed}: container {cid}");
            containers += 1;
        }
    }
    eprintln!(
        "seed {seed}: {kills} kills in {:.0?}, {} calls acknowledged, {} pods run, {} removed \
         before the end, {pods} pods and {containers} containers checked",
        start.elapsed(),
        a.calls,
        a.pods.len(),
        a.removed.len()
    );
    assert!(
        kills >= 10 && a.pods.len() >= 10,
        "seed {seed}: too little churn"
    );
    drop(a);

    // Removing everything leaves nothing.
    teardown_pods(&mut rt, listed).await;
    let run_root = d.run_root.display().to_string();
    let root = d.root.display().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let shims: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| {
                let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                (cmd.contains("skiff-shim") && cmd.contains(&run_root)).then_some(cmd)
            })
            .collect();
        if shims.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "seed {seed}: shims left: {shims:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| {
            let mp = l.split(' ').nth(4).unwrap_or("");
            // skiffd's own, kept while it runs: the read-only shim binary and the pinned empty
            // mount namespace (one, however many restarts).
            (mp.starts_with(&run_root)
                && !mp.ends_with("/bin/skiff-shim")
                && !mp.ends_with("/mnt-empty"))
                || mp.starts_with(&root)
        })
        .map(str::to_string)
        .collect();
    assert!(mounts.is_empty(), "seed {seed}: mounts left: {mounts:?}");
    for dir in ["pods", "containers"] {
        let left: Vec<_> = std::fs::read_dir(d.run_root.join(dir))
            .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "seed {seed}: {dir} left: {left:?}");
    }
    for cg in d.cgroup_dirs() {
        let left: Vec<_> = std::fs::read_dir(&cg)
            .unwrap()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "seed {seed}: cgroups left: {left:?}");
    }
}
