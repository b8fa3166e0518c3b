//! What container events and skiffd's own metrics cost a pod start: two skiffds side by side in
//! one run, one plain (no metrics endpoint, no events subscriber) and one with
//! `metrics_address` set, a GetContainerEvents subscriber reading every event, and a scraper
//! reading `/metrics` every 10 s. Pods (pod + one busybox `sleep` container:
//! RunPodSandbox, CreateContainer, StartContainer) are started alternately on the two, N each;
//! p50 / p95 and the mean difference per pod.
//!
//!     cargo build --release --workspace && cargo rustc --profile shim -p skiff-shim --bin skiff-shim -- -C target-feature=+crt-static &&
//!     cargo bench -p skiff-integration --bench observability

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use skiff_integration::cri::*;
use skiff_integration::image::Compression;
use skiff_integration::{ms, pct, ImageBuilder, Layer, Registry, Skiffd};
use skiff_proto::cri::*;

const N: usize = 100;

fn main() {
    skiff_integration::bench_main(run_all());
}

async fn scrape(addr: String) -> usize {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else {
        return 0;
    };
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return 0;
    }
    let mut body = vec![];
    let _ = s.read_to_end(&mut body).await;
    body.len()
}

async fn run_all() {
    let reg = Registry::start();
    let img = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .push(&reg.host, "bench/busybox", "v1")
        .await;
    let base = skiff_integration::deployed_shim_config();
    let addr = format!("127.0.0.1:{}", skiff_integration::free_port());
    let plain = Skiffd::start_with(&[&reg.host], Some(&base), &["--log-level", "warn"]);
    let watched = Skiffd::start_with(
        &[&reg.host],
        Some(&format!("{base}metrics_address = \"{addr}\"\n")),
        &["--log-level", "warn"],
    );
    for d in [&plain, &watched] {
        pull(&mut d.images().await, &img.reference).await;
    }
    // The watchers: every event read, /metrics scraped every 10 s (a common Prometheus interval).
    let events_seen = Arc::new(AtomicUsize::new(0));
    let mut sub = watched
        .runtime()
        .await
        .get_container_events(GetEventsRequest {})
        .await
        .expect("GetContainerEvents")
        .into_inner();
    let seen = events_seen.clone();
    tokio::spawn(async move {
        while let Ok(Some(_)) = sub.message().await {
            seen.fetch_add(1, Ordering::Relaxed);
        }
    });
    let scrapes = Arc::new(AtomicUsize::new(0));
    let s2 = scrapes.clone();
    let a2 = addr.clone();
    let scraper = tokio::spawn(async move {
        loop {
            if scrape(a2.clone()).await > 0 {
                s2.fetch_add(1, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
    });

    let logs = tempfile::tempdir().unwrap();
    let mut rts = [plain.runtime().await, watched.runtime().await];
    let mut times: [Vec<f64>; 2] = [vec![], vec![]];
    let mut pods: [Vec<String>; 2] = [vec![], vec![]];
    // Alternating, so the node's drift over the run is shared; round 0 warms up unmeasured.
    for i in 0..=N {
        for (k, rt) in rts.iter_mut().enumerate() {
            let pcfg = pod_config(&format!("p{k}-{i}"), logs.path().to_str().unwrap());
            let t = Instant::now();
            let pod = run_pod(rt, &pcfg).await;
            run(
                rt,
                &pod,
                &pcfg,
                container_config("c", &img.reference, &["sleep", "3600"]),
            )
            .await;
            if i > 0 {
                times[k].push(ms(t.elapsed()));
            }
            pods[k].push(pod);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    scraper.abort();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let diff = mean(&times[1]) - mean(&times[0]);
    println!();
    println!(
        "{N} pods per row (RunPodSandbox + CreateContainer + StartContainer of one busybox `sleep`), \
         alternating between the two daemons; {} events read, {} scrapes",
        events_seen.load(Ordering::Relaxed),
        scrapes.load(Ordering::Relaxed)
    );
    println!("| skiffd | p50 ms | p95 ms | mean ms |");
    println!("|---|---|---|---|");
    for (label, t) in [
        ("plain (no metrics endpoint, no subscriber)", &times[0]),
        (
            "metrics on, events subscriber, scraped every 10 s",
            &times[1],
        ),
    ] {
        println!(
            "| {label} | {:.2} | {:.2} | {:.2} |",
            pct(t.clone(), 0.5),
            pct(t.clone(), 0.95),
            mean(t)
        );
    }
    println!("| difference of the means | | | {diff:+.2} |");
    for (k, rt) in rts.iter_mut().enumerate() {
        teardown_pods(rt, std::mem::take(&mut pods[k])).await;
    }
}
