//! What an operator and kubelet observe a node by (issue 19): container events (evented PLEG)
//! through the CRI socket, across a daemon restart; the pod status carrying its containers'.

use std::time::{Duration, Instant};

use skiff_integration::cri::*;
use skiff_integration::image::Compression;
use skiff_integration::{require_root, ImageBuilder, Layer, Registry, Skiffd};
use skiff_proto::cri::*;
use tonic::codec::Streaming;

type Events = Streaming<ContainerEventResponse>;

async fn subscribe(rt: &mut Rt) -> Events {
    rt.get_container_events(GetEventsRequest {})
        .await
        .expect("GetContainerEvents")
        .into_inner()
}

/// Reads events until one of `id` of type `kind` arrives (within `limit`); returns it.
async fn wait_event(
    events: &mut Events,
    id: &str,
    kind: ContainerEventType,
    limit: Duration,
) -> ContainerEventResponse {
    let deadline = Instant::now() + limit;
    let mut seen = vec![];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = tokio::time::timeout(left, events.message())
            .await
            .unwrap_or_else(|_| panic!("no {kind:?} of {id} within {limit:?}; saw {seen:?}"))
            .expect("event stream")
            .expect("stream ended");
        if ev.container_id == id && ev.container_event_type == kind as i32 {
            return ev;
        }
        seen.push((ev.container_id.clone(), ev.container_event_type));
    }
}

fn status_in<'a>(ev: &'a ContainerEventResponse, id: &str) -> &'a ContainerStatus {
    ev.containers_statuses
        .iter()
        .find(|s| s.id == id)
        .unwrap_or_else(|| panic!("{id} not in {:?}", ev.containers_statuses))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_events_follow_starts_and_exits_across_a_restart() {
    require_root();
    let reg = Registry::start();
    let img = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .push(&reg.host, "test/events", "v1")
        .await;
    let mut d = Skiffd::start(&[&reg.host]);
    pull(&mut d.images().await, &img.reference).await;
    let mut rt = d.runtime().await;
    let mut events = subscribe(&mut rt).await;
    let logs = tempfile::tempdir().unwrap();
    let pcfg = pod_config("events", logs.path().to_str().unwrap());
    let pod = run_pod(&mut rt, &pcfg).await;
    let long = Duration::from_secs(10);
    use ContainerEventType::*;
    for kind in [ContainerCreatedEvent, ContainerStartedEvent] {
        let ev = wait_event(&mut events, &pod, kind, long).await;
        let ps = ev.pod_sandbox_status.expect("pod status");
        assert_eq!(ps.id, pod);
        assert_eq!(ps.state, PodSandboxState::SandboxReady as i32);
    }

    // A container that exits by itself while skiffd is down.
    let c = container_config("late", &img.reference, &["sh", "-c", "sleep 2; exit 7"]);
    let late = run(&mut rt, &pod, &pcfg, c).await;
    // Events are built just after the change, off the call's path: a CREATED event may
    // already see the container running.
    let ev = wait_event(&mut events, &late, ContainerCreatedEvent, long).await;
    let s = status_in(&ev, &late).state;
    assert!(
        s == ContainerState::ContainerCreated as i32
            || s == ContainerState::ContainerRunning as i32,
        "{s}"
    );
    let ev = wait_event(&mut events, &late, ContainerStartedEvent, long).await;
    assert_eq!(
        status_in(&ev, &late).state,
        ContainerState::ContainerRunning as i32
    );
    let pid = container_pid(&mut rt, &late).await;
    d.kill9();
    let waited = Instant::now();
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(waited.elapsed() < long, "container {late} did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    d.restart();
    let mut rt = d.runtime().await;
    let mut events = subscribe(&mut rt).await;
    let ev = wait_event(&mut events, &late, ContainerStoppedEvent, long).await;
    let st = status_in(&ev, &late);
    assert_eq!(st.state, ContainerState::ContainerExited as i32);
    assert_eq!(st.exit_code, 7);
    assert_eq!(ev.pod_sandbox_status.unwrap().id, pod);

    // An exit while skiffd runs reaches the subscriber at once, driven by the shim.
    let c = container_config("quick", &img.reference, &["sh", "-c", "exit 3"]);
    let quick = create(&mut rt, &pod, &pcfg, c).await.unwrap();
    start(&mut rt, &quick).await.unwrap();
    let started = Instant::now();
    let ev = wait_event(&mut events, &quick, ContainerStoppedEvent, long).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(status_in(&ev, &quick).exit_code, 3);

    // PodSandboxStatus carries the containers' statuses and when they were read.
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let ps = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ps.timestamp >= before, "{}", ps.timestamp);
    let mut ids: Vec<&str> = ps
        .containers_statuses
        .iter()
        .map(|s| s.id.as_str())
        .collect();
    ids.sort();
    let mut want = vec![late.as_str(), quick.as_str()];
    want.sort();
    assert_eq!(ids, want);

    rt.remove_container(RemoveContainerRequest {
        container_id: quick.clone(),
    })
    .await
    .unwrap();
    let ev = wait_event(&mut events, &quick, ContainerDeletedEvent, long).await;
    assert!(ev.containers_statuses.iter().all(|s| s.id != quick));
    teardown_pods(&mut rt, vec![pod.clone()]).await;
    wait_event(&mut events, &pod, ContainerStoppedEvent, long).await;
    wait_event(&mut events, &late, ContainerDeletedEvent, long).await;
    let ev = wait_event(&mut events, &pod, ContainerDeletedEvent, long).await;
    assert!(ev.pod_sandbox_status.is_none());
}

/// The value of metric `name` (with `extra` label values past the base ones) in `metrics`.
fn metric(metrics: &[Metric], name: &str, extra: &[&str]) -> u64 {
    metrics
        .iter()
        .find(|m| {
            m.name == name
                && m.label_values
                    .ends_with(&extra.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        })
        .unwrap_or_else(|| {
            panic!(
                "no {name} {extra:?} in {:?}",
                metrics.iter().map(|m| &m.name).collect::<Vec<_>>()
            )
        })
        .value
        .as_ref()
        .unwrap()
        .value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_metrics_are_read_from_the_kernel() {
    require_root();
    let reg = Registry::start();
    let img = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .push(&reg.host, "test/metrics", "v1")
        .await;
    let d = Skiffd::start(&[&reg.host]);
    pull(&mut d.images().await, &img.reference).await;
    let mut rt = d.runtime().await;
    let logs = tempfile::tempdir().unwrap();
    let pcfg = pod_config("metrics", logs.path().to_str().unwrap());
    let pod = run_pod(&mut rt, &pcfg).await;
    // About 1.5 s of CPU, 24 MiB of shared memory, 3 MiB in the writable layer, and a second
    // process.
    let busy = "head -c 25165824 /dev/zero > /dev/shm/fill; head -c 3145728 /dev/zero > /big; \
                end=$(($(date +%s) + 2)); while [ $(date +%s) -lt $end ]; do :; done; \
                echo done > /tmp/ready; sleep 600 & wait";
    let c = run(
        &mut rt,
        &pod,
        &pcfg,
        container_config("worker", &img.reference, &["sh", "-c", busy]),
    )
    .await;
    let netns = d.run_root.join("pods").join(&pod).join("ns/net");
    skiff_integration::veth_in(&netns, "10.252.0.1/24");
    wait_ready(&mut rt, &c, "/tmp/ready").await;
    sh(
        &mut rt,
        &c,
        "busybox ping -c 3 -W 1 -i 0.2 10.252.0.2 >/dev/null 2>&1; true",
    )
    .await;

    let descriptors = rt
        .list_metric_descriptors(ListMetricDescriptorsRequest {})
        .await
        .unwrap()
        .into_inner()
        .descriptors;
    let pods = rt
        .list_pod_sandbox_metrics(ListPodSandboxMetricsRequest {})
        .await
        .unwrap()
        .into_inner()
        .pod_metrics;
    assert_eq!(pods.len(), 1);
    let pm = &pods[0];
    assert_eq!(pm.pod_sandbox_id, pod);
    // Every metric sent is described, with as many label values as its descriptor has keys.
    let all = pm
        .metrics
        .iter()
        .chain(pm.container_metrics.iter().flat_map(|c| c.metrics.iter()));
    for m in all {
        let d = descriptors
            .iter()
            .find(|d| d.name == m.name)
            .unwrap_or_else(|| panic!("{} is not described", m.name));
        assert_eq!(d.label_keys.len(), m.label_values.len(), "{m:?}");
    }
    let cm = &pm.container_metrics[0];
    assert_eq!(cm.container_id, c);
    let m = &cm.metrics;
    assert_eq!(
        m.iter()
            .find(|m| m.name == "container_cpu_usage_seconds_total")
            .unwrap()
            .label_values,
        ["worker", "metrics", "default", c.as_str()]
    );
    assert!(metric(m, "container_cpu_usage_seconds_total", &[]) >= 1);
    assert!(metric(m, "container_memory_working_set_bytes", &[]) >= 24 << 20);
    assert!(metric(m, "container_memory_usage_bytes", &[]) >= 24 << 20);
    assert!(metric(m, "container_processes", &[]) >= 2);
    assert_eq!(metric(m, "container_oom_events_total", &[]), 0);
    let fs = m
        .iter()
        .find(|m| m.name == "container_fs_usage_bytes")
        .unwrap();
    assert!(fs.value.as_ref().unwrap().value >= 3 << 20, "{fs:?}");
    // The pod's network: eth0 of its own namespace, loopback left out.
    let tx = pm
        .metrics
        .iter()
        .find(|m| {
            m.name == "container_network_transmit_packets_total"
                && m.label_values.last().is_some_and(|i| i == "eth0")
        })
        .unwrap();
    assert_eq!(
        tx.label_values,
        ["metrics", "default", pod.as_str(), "eth0"]
    );
    assert!(tx.value.as_ref().unwrap().value >= 1, "{tx:?}");
    assert!(pm
        .metrics
        .iter()
        .all(|m| m.label_values.last().unwrap() != "lo"));
    teardown_pods(&mut rt, vec![pod]).await;
}

/// GET `path` from `addr` over HTTP/1.1; (status line, body).
async fn http_get(addr: &str, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// The value of the sample `series` (name with labels, as the text has it).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skiffd_serves_its_own_metrics() {
    require_root();
    let reg = Registry::start();
    let img = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .push(&reg.host, "test/own-metrics", "v1")
        .await;
    let addr = format!("127.0.0.1:{}", skiff_integration::free_port());
    let d = Skiffd::start_with(
        &[&reg.host],
        Some(&format!("metrics_address = \"{addr}\"\n")),
        &[],
    );
    pull(&mut d.images().await, &img.reference).await;
    let mut rt = d.runtime().await;
    // A subscriber: its events are counted, with the time spent building them.
    let mut sub = rt
        .get_container_events(GetEventsRequest {})
        .await
        .expect("GetContainerEvents")
        .into_inner();
    let logs = tempfile::tempdir().unwrap();
    let mut pods = vec![];
    for i in 0..2 {
        let pcfg = pod_config(&format!("m{i}"), logs.path().to_str().unwrap());
        let pod = run_pod(&mut rt, &pcfg).await;
        run(
            &mut rt,
            &pod,
            &pcfg,
            container_config("c", &img.reference, &["sleep", "600"]),
        )
        .await;
        pods.push(pod);
    }
    // Pod CREATED and STARTED, container CREATED and STARTED, for each pod.
    for _ in 0..8 {
        tokio::time::timeout(Duration::from_secs(10), sub.message())
            .await
            .expect("an event within 10 s")
            .expect("the event stream")
            .expect("an event");
    }
    let err = rt
        .container_status(ContainerStatusRequest {
            container_id: "nope".into(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    let (status, text) = http_get(&addr, "/metrics").await;
    assert!(status.contains("200"), "{status}");
    assert_eq!(sample(&text, "skiff_container_events_total"), 8.0, "{text}");
    assert!(
        sample(&text, "skiff_container_event_build_seconds_total") > 0.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "skiff_cri_requests_total{method=\"RunPodSandbox\",code=\"Ok\"}"
        ),
        2.0
    );
    assert_eq!(
        sample(
            &text,
            "skiff_cri_requests_total{method=\"ContainerStatus\",code=\"NotFound\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "skiff_cri_request_duration_seconds_count{method=\"CreateContainer\"}"
        ),
        2.0
    );
    assert_eq!(sample(&text, "skiff_pods{state=\"SandboxReady\"}"), 2.0);
    assert_eq!(
        sample(&text, "skiff_containers{state=\"ContainerRunning\"}"),
        2.0
    );
    assert_eq!(sample(&text, "skiff_shims_started_total"), 2.0);
    assert_eq!(sample(&text, "skiff_shims_lost"), 0.0);
    assert_eq!(sample(&text, "skiff_image_pulls_total{result=\"ok\"}"), 1.0);
    assert!(sample(&text, "skiff_image_pull_bytes_total") > 100_000.0);
    assert!(sample(&text, "skiff_layer_unpack_duration_seconds_count") >= 1.0);
    assert_eq!(
        sample(&text, "skiff_cni_duration_seconds_count{op=\"ADD\"}"),
        2.0
    );
    let rss = sample(&text, "skiff_process_resident_memory_bytes");
    assert!(rss > 1e6 && rss < 1e9, "{rss}");
    assert!(sample(&text, "skiff_process_open_fds") > 3.0);

    // A shim killed behind skiffd's back shows as lost; a stopped pod as NotReady.
    let shim = shim_pid(&mut rt, &pods[0]).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pods[1].clone(),
    })
    .await
    .unwrap();
    let (_, text) = http_get(&addr, "/metrics").await;
    assert_eq!(sample(&text, "skiff_shims_lost"), 1.0);
    assert_eq!(
        sample(&text, "skiff_pods{state=\"SandboxNotready\"}"),
        1.0,
        "{text}"
    );
    let (status, _) = http_get(&addr, "/other").await;
    assert!(status.contains("404"), "{status}");
    teardown_pods(&mut rt, pods).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skiff_events_and_top_show_what_runs() {
    require_root();
    let reg = Registry::start();
    let img = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .push(&reg.host, "test/cli", "v1")
        .await;
    let d = Skiffd::start(&[&reg.host]);
    pull(&mut d.images().await, &img.reference).await;
    let skiff = Skiffd::binary().with_file_name("skiff");
    let events = tokio::process::Command::new(&skiff)
        .args([
            "--socket",
            d.socket.to_str().unwrap(),
            "events",
            "--count",
            "4",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("skiff events");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut rt = d.runtime().await;
    let logs = tempfile::tempdir().unwrap();
    let pcfg = pod_config("cli", logs.path().to_str().unwrap());
    let pod = run_pod(&mut rt, &pcfg).await;
    let c = run(
        &mut rt,
        &pod,
        &pcfg,
        container_config("spin", &img.reference, &["sh", "-c", "while :; do :; done"]),
    )
    .await;
    let out = tokio::time::timeout(Duration::from_secs(10), events.wait_with_output())
        .await
        .expect("skiff events did not end")
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(' ').collect()).collect();
    let short = |id: &str| id.chars().take(13).collect::<String>();
    let got: Vec<(&str, &str, String, &str)> = lines
        .iter()
        .map(|l| (l[1], l[2], l[3].to_string(), l[4]))
        .collect();
    assert_eq!(
        got,
        [
            ("CREATED", "pod", short(&pod), "default/cli"),
            ("STARTED", "pod", short(&pod), "default/cli"),
            ("CREATED", "container", short(&c), "default/cli/spin"),
            ("STARTED", "container", short(&c), "default/cli/spin"),
        ],
        "{text}"
    );
    assert_eq!(lines[3][5], "CONTAINER_RUNNING", "{text}");

    let top = tokio::process::Command::new(&skiff)
        .args([
            "--socket",
            d.socket.to_str().unwrap(),
            "top",
            "--once",
            "--interval",
            "1",
        ])
        .output()
        .await
        .unwrap();
    assert!(top.status.success());
    let table = String::from_utf8_lossy(&top.stdout);
    let spin = table
        .lines()
        .find(|l| l.trim_start().starts_with("spin "))
        .unwrap_or_else(|| panic!("{table}"));
    // The busy loop uses most of a core: hundreds of millicores.
    let cpu: u64 = spin
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches('m')
        .parse()
        .unwrap();
    assert!(cpu >= 300, "{table}");
    assert!(table.contains("default/cli"), "{table}");
    teardown_pods(&mut rt, vec![pod]).await;
}
