//! CRI request builders and waits shared by the pod and container tests.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use skiff_proto::cri::image_service_client::ImageServiceClient;
use skiff_proto::cri::runtime_service_client::RuntimeServiceClient;
use skiff_proto::cri::*;
use tonic::transport::Channel;

pub type Rt = RuntimeServiceClient<Channel>;
pub type Img = ImageServiceClient<Channel>;

/// A pod config with a unique uid, its own log directory and the given namespace modes.
pub fn pod_config(name: &str, log_dir: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}-{}", std::process::id()),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: log_dir.into(),
        dns_config: Some(DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["default.svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        }),
        labels: HashMap::from([("app".to_string(), name.to_string())]),
        linux: Some(LinuxPodSandboxConfig::default()),
        ..Default::default()
    }
}

/// A pod with pod-level resources (0.5 CPU, 256 MiB) and an overhead (0.1 CPU, 64 MiB): its
/// cgroup should hold cpu quota 60000 of 100000 µs and 320 MiB.
pub fn pod_level_config(name: &str, log_dir: &str) -> PodSandboxConfig {
    let mut c = pod_config(name, log_dir);
    let linux = c.linux.get_or_insert_with(Default::default);
    linux.resources = Some(LinuxContainerResources {
        cpu_quota: 50_000,
        cpu_period: 100_000,
        memory_limit_in_bytes: 256 << 20,
        ..Default::default()
    });
    linux.overhead = Some(LinuxContainerResources {
        cpu_quota: 10_000,
        cpu_period: 100_000,
        memory_limit_in_bytes: 64 << 20,
        ..Default::default()
    });
    c
}

/// UpdatePodSandboxResources of a [`pod_level_config`] pod to 1.5 CPU and 512 MiB, its overhead
/// kept: its cgroup should then hold 160000 of 100000 µs and 576 MiB.
pub async fn grow_pod_resources(rt: &mut Rt, pod: &str) {
    rt.update_pod_sandbox_resources(UpdatePodSandboxResourcesRequest {
        pod_sandbox_id: pod.to_string(),
        overhead: None,
        resources: Some(LinuxContainerResources {
            cpu_quota: 150_000,
            cpu_period: 100_000,
            memory_limit_in_bytes: 512 << 20,
            ..Default::default()
        }),
    })
    .await
    .expect("UpdatePodSandboxResources");
}

pub fn with_namespaces(
    mut c: PodSandboxConfig,
    network: NamespaceMode,
    pid: NamespaceMode,
    ipc: NamespaceMode,
) -> PodSandboxConfig {
    let linux = c.linux.get_or_insert_with(Default::default);
    let sc = linux.security_context.get_or_insert_with(Default::default);
    sc.namespace_options = Some(NamespaceOption {
        network: network as i32,
        pid: pid as i32,
        ipc: ipc as i32,
        ..Default::default()
    });
    c
}

/// A host-network pod (host network, pod IPC and PID), as the benchmarks start them; without a
/// hostname (runc refuses one without a UTS namespace of its own).
pub fn host_network_pod(name: &str, logs: &str) -> PodSandboxConfig {
    let mut c = with_namespaces(
        pod_config(name, logs),
        NamespaceMode::Node,
        NamespaceMode::Pod,
        NamespaceMode::Pod,
    );
    c.hostname = String::new();
    c
}

/// The pod the benchmarks start: a [`host_network_pod`]; with `SKIFF_BENCH_PID=container` in
/// the environment, one without a PID namespace of its own, as kubelet makes pods by default.
pub fn bench_pod(name: &str, logs: &str) -> PodSandboxConfig {
    let c = host_network_pod(name, logs);
    if bench_pods_have_a_pid_namespace() {
        return c;
    }
    with_namespaces(
        c,
        NamespaceMode::Node,
        NamespaceMode::Container,
        NamespaceMode::Pod,
    )
}

/// Whether [`bench_pod`]s have a PID namespace of their own (the default), as the benchmarks'
/// headings say.
pub fn bench_pods_have_a_pid_namespace() -> bool {
    std::env::var("SKIFF_BENCH_PID").as_deref() != Ok("container")
}

/// What the benchmarks' pods are, for their headings.
pub fn bench_pods() -> &'static str {
    if bench_pods_have_a_pid_namespace() {
        "host-network pods"
    } else {
        "host-network pods without a PID namespace of their own (kubelet's default)"
    }
}

pub fn container_config(name: &str, image: &str, cmd: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: cmd.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}/0.log"),
        labels: HashMap::from([("c".to_string(), name.to_string())]),
        ..Default::default()
    }
}

pub async fn run_pod(rt: &mut Rt, cfg: &PodSandboxConfig) -> String {
    rt.run_pod_sandbox(RunPodSandboxRequest {
        config: Some(cfg.clone()),
        runtime_handler: String::new(),
    })
    .await
    .expect("RunPodSandbox")
    .into_inner()
    .pod_sandbox_id
}

/// RunPodSandbox that must fail: its status.
pub async fn run_pod_err(rt: &mut Rt, cfg: PodSandboxConfig) -> tonic::Status {
    match rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(cfg),
            runtime_handler: String::new(),
        })
        .await
    {
        Ok(r) => panic!("RunPodSandbox succeeded: {}", r.into_inner().pod_sandbox_id),
        Err(e) => e,
    }
}

/// Every pod sandbox skiffd lists.
pub async fn list_pods(rt: &mut Rt) -> Vec<PodSandbox> {
    rt.list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .expect("ListPodSandbox")
        .into_inner()
        .items
}

/// Stops and removes pod `pod`; either call failing fails the test.
pub async fn stop_and_remove_pod(rt: &mut Rt, pod: &str) {
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod.into(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod.into(),
    })
    .await
    .unwrap();
}

/// Stops and removes pods, ignoring failures (benchmarks' cleanup).
pub async fn teardown_pods(rt: &mut Rt, pods: Vec<String>) {
    for p in pods {
        let _ = rt
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: p.clone(),
            })
            .await;
        let _ = rt
            .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: p })
            .await;
    }
}

/// Starts and removes one [`bench_pod`] with a container running `true` from `image`, to
/// bring what a pod start reads from disk (the daemon's code, the shim, libraries, the image's
/// binary) back into the page cache after the benchmarks drop it.
pub async fn warm_up(rt: &mut Rt, image: &str, logs: &str) {
    let warm = bench_pod("warmup", logs);
    let pod = run_pod(rt, &warm).await;
    run(rt, &pod, &warm, container_config("c", image, &["true"])).await;
    teardown_pods(rt, vec![pod]).await;
}

pub async fn create(
    rt: &mut Rt,
    pod: &str,
    pod_cfg: &PodSandboxConfig,
    cfg: ContainerConfig,
) -> Result<String, tonic::Status> {
    rt.create_container(CreateContainerRequest {
        pod_sandbox_id: pod.into(),
        config: Some(cfg),
        sandbox_config: Some(pod_cfg.clone()),
    })
    .await
    .map(|r| r.into_inner().container_id)
}

pub async fn start(rt: &mut Rt, id: &str) -> Result<(), tonic::Status> {
    rt.start_container(StartContainerRequest {
        container_id: id.into(),
    })
    .await
    .map(|_| ())
}

/// Creates and starts; panics on failure.
pub async fn run(
    rt: &mut Rt,
    pod: &str,
    pod_cfg: &PodSandboxConfig,
    cfg: ContainerConfig,
) -> String {
    let id = create(rt, pod, pod_cfg, cfg)
        .await
        .expect("CreateContainer");
    start(rt, &id).await.expect("StartContainer");
    id
}

pub async fn status(rt: &mut Rt, id: &str) -> ContainerStatus {
    rt.container_status(ContainerStatusRequest {
        container_id: id.into(),
        verbose: false,
    })
    .await
    .expect("ContainerStatus")
    .into_inner()
    .status
    .expect("status")
}

/// Waits until the container has exited and returns its status.
pub async fn wait_exited(rt: &mut Rt, id: &str, limit: Duration) -> ContainerStatus {
    let deadline = Instant::now() + limit;
    loop {
        let s = status(rt, id).await;
        if s.state == ContainerState::ContainerExited as i32 {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "container {id} still {:?} after {limit:?}",
            s.state
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub async fn exec(
    rt: &mut Rt,
    id: &str,
    cmd: &[&str],
    timeout: i64,
) -> Result<ExecSyncResponse, tonic::Status> {
    rt.exec_sync(ExecSyncRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout,
    })
    .await
    .map(|r| r.into_inner())
}

/// Waits (up to 20 s) until `path` exists in the container: a command's signal that it is
/// ready.
pub async fn wait_ready(rt: &mut Rt, id: &str, path: &str) {
    for _ in 0..200 {
        if exec(rt, id, &["ls", path], 5)
            .await
            .is_ok_and(|r| r.exit_code == 0)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path} never appeared in container {id}");
}

/// Runs `sh -c script` in the container and returns its stdout, asserting exit code 0.
pub async fn sh(rt: &mut Rt, id: &str, script: &str) -> String {
    let r = exec(rt, id, &["sh", "-c", script], 10)
        .await
        .expect("ExecSync");
    assert_eq!(
        r.exit_code,
        0,
        "{script}: stderr {}",
        String::from_utf8_lossy(&r.stderr)
    );
    String::from_utf8_lossy(&r.stdout).into_owned()
}

/// Waits (up to 5 s) until container `id` has written `ready` to /tmp/ready: what a test's
/// script does once its signal traps are set.
pub async fn wait_ready_file(rt: &mut Rt, id: &str) {
    for _ in 0..100 {
        if sh(rt, id, "cat /tmp/ready 2>/dev/null; true").await == "ready\n" {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("container {id} did not write /tmp/ready within 5 s");
}

/// The content of each record of a CRI log file: (stream, tag, content).
pub fn log_records(path: &std::path::Path) -> Vec<(String, String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let mut it = l.splitn(4, ' ');
            let _ts = it.next();
            (
                it.next().unwrap_or("").to_string(),
                it.next().unwrap_or("").to_string(),
                it.next().unwrap_or("").to_string(),
            )
        })
        .collect()
}

pub async fn pull(img: &mut Img, reference: &str) -> String {
    img.pull_image(PullImageRequest {
        image: Some(ImageSpec {
            image: reference.into(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .expect("PullImage")
    .into_inner()
    .image_ref
}

/// ContainerStatus' verbose info, parsed.
pub async fn container_info(rt: &mut Rt, id: &str) -> serde_json::Value {
    let r = rt
        .container_status(ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        })
        .await
        .expect("ContainerStatus")
        .into_inner();
    serde_json::from_str(&r.info["info"]).expect("verbose info is JSON")
}

/// A pod's verbose status info (`pid` of its shim, `networkCheck`, …).
pub async fn pod_info(rt: &mut Rt, pod: &str) -> serde_json::Value {
    let r = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.into(),
            verbose: true,
        })
        .await
        .expect("PodSandboxStatus")
        .into_inner();
    serde_json::from_str(&r.info["info"]).expect("verbose info is JSON")
}

/// The host PID of a pod's shim.
pub async fn shim_pid(rt: &mut Rt, pod: &str) -> i32 {
    pod_info(rt, pod).await["pid"].as_i64().expect("pid") as i32
}

/// The container's main process, as the host numbers it.
pub async fn container_pid(rt: &mut Rt, id: &str) -> i32 {
    container_info(rt, id).await["pid"]
        .as_i64()
        .expect("pid in info") as i32
}

/// A field of /proc/<pid>/status (`CapEff`, `Uid`, `Groups` …), as the kernel reports it.
pub fn proc_status(pid: i32, key: &str) -> String {
    try_proc_status(pid, key).unwrap_or_else(|| panic!("{key} in /proc/{pid}/status"))
}

/// [`proc_status`], or None when the process is gone (or has no such field).
pub fn try_proc_status(pid: i32, key: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{key}:"))
                .map(|v| v.trim().to_string())
        })
}

/// One key of Status' verbose info (`config`, `criu`, `apparmor`, …), decoded from its JSON.
pub async fn status_info(rt: &mut Rt, key: &str) -> serde_json::Value {
    let st = rt
        .status(StatusRequest { verbose: true })
        .await
        .expect("Status")
        .into_inner();
    let text = st
        .info
        .get(key)
        .unwrap_or_else(|| panic!("Status' info has no {key:?}: {:?}", st.info));
    serde_json::from_str(text).unwrap_or_else(|e| panic!("Status' info {key:?}: {e}: {text}"))
}
