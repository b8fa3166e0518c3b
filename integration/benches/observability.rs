//! What container events and skiffd's own metrics cost a pod start: two skiffds side by side in
//! one run, one plain (no metrics endpoint, no events subscriber) and one with
//! `metrics_address` set, a GetContainerEvents subscriber reading every event, and a scraper
//! reading `/metrics` every 10 s. Pods (pod + one busybox `sleep` container:
//! RunPodSandbox, CreateContainer, StartContainer) are started alternately on the two, N each,
//! which one goes first alternating from round to round; p50 / p95 / mean per daemon, the median
//! of the per-round differences, each skiffd's own CPU time per pod (from /proc/<pid>/stat), and
//! the time the watched skiffd spent building events (its `skiff_container_event_build_seconds`).
//! Both daemons keep their state on one tmpfs the bench mounts: on the disk, ext4's inode
//! allocation after many deletions (a `perf` profile shows it as most of a pod start's CPU)
//! makes one pod start differ from the next by more than what is measured here.
//!
//!     cargo build --release --workspace && cargo build --profile shim -p skiff-shim --target x86_64-unknown-linux-musl &&
//!     cargo bench -p skiff-integration --bench observability

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use skiff_integration::cri::*;
use skiff_integration::image::Compression;
use skiff_integration::{ms, pct, ImageBuilder, Layer, Registry, Skiffd};
use skiff_proto::cri::*;

const N: usize = 200;

fn main() {
    // The daemons' directories (tempfile's, under TMPDIR) on a tmpfs of the bench's own.
    let tmpfs = skiff_integration::Tmpfs::mount();
    // Set before any thread starts: the runtime and the daemons start below.
    std::env::set_var("TMPDIR", tmpfs.path());
    skiff_integration::bench_main(run_all());
}

/// The value of the sample `name` in a Prometheus text page.
fn sample(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn scrape(addr: String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else {
        return String::new();
    };
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut body = vec![];
    let _ = s.read_to_end(&mut body).await;
    String::from_utf8_lossy(&body).into_owned()
}

/// The CPU time process `pid` has used so far (user + system), in ms.
fn cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name's closing parenthesis: utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11..13).map_or(0.0, |v| {
        v.iter().filter_map(|x| x.parse::<f64>().ok()).sum()
    });
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks * 1000.0 / hz
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
            if !scrape(a2.clone()).await.is_empty() {
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
    let cpu0 = [cpu_ms(plain.pid()), cpu_ms(watched.pid())];
    for i in 0..=N {
        // Which daemon goes first alternates, so neither always follows the other's leftovers.
        let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for k in order {
            let rt = &mut rts[k];
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
    let cpu = [
        (cpu_ms(plain.pid()) - cpu0[0]) / (N + 1) as f64,
        (cpu_ms(watched.pid()) - cpu0[1]) / (N + 1) as f64,
    ];
    scraper.abort();
    let page = scrape(addr.clone()).await;
    let built = sample(&page, "skiff_container_events_total");
    let build_ms = sample(&page, "skiff_container_event_build_seconds_total") * 1000.0;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let diff = mean(&times[1]) - mean(&times[0]);
    let paired: Vec<f64> = times[1].iter().zip(&times[0]).map(|(w, p)| w - p).collect();
    println!();
    println!(
        "{N} pods per row (RunPodSandbox + CreateContainer + StartContainer of one busybox `sleep`), \
         alternating between the two daemons; {} events read, {} scrapes",
        events_seen.load(Ordering::Relaxed),
        scrapes.load(Ordering::Relaxed)
    );
    println!("| skiffd | p50 ms | p95 ms | mean ms | skiffd CPU ms per pod |");
    println!("|---|---|---|---|---|");
    for (k, label) in [
        "plain (no metrics endpoint, no subscriber)",
        "metrics on, events subscriber, scraped every 10 s",
    ]
    .into_iter()
    .enumerate()
    {
        let t = &times[k];
        println!(
            "| {label} | {:.2} | {:.2} | {:.2} | {:.3} |",
            pct(t.clone(), 0.5),
            pct(t.clone(), 0.95),
            mean(t),
            cpu[k]
        );
    }
    println!(
        "| difference | median of per-round differences {:+.2} | | {diff:+.2} | {:+.3} |",
        pct(paired, 0.5),
        cpu[1] - cpu[0]
    );
    println!(
        "watched skiffd: {built} events built in {build_ms:.1} ms, {:.3} ms per pod",
        build_ms / (N + 1) as f64
    );
    for (k, rt) in rts.iter_mut().enumerate() {
        teardown_pods(rt, std::mem::take(&mut pods[k])).await;
    }
}
