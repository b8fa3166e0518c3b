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
    let ev = wait_event(&mut events, &late, ContainerCreatedEvent, long).await;
    assert_eq!(
        status_in(&ev, &late).state,
        ContainerState::ContainerCreated as i32
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
