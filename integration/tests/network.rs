//! Pod networking through CNI with Debian's plugins (bridge, host-local, portmap, loopback).
//! skiffd runs inside a network namespace the test creates, so the bridge, the veths, the IPAM
//! state and the port-forwarding rules all live there and go with it: no traffic leaves it and
//! the machine's own network is never touched.

use std::process::Command;
use std::time::{Duration, Instant};

use skiff_integration::cri::*;
use skiff_integration::image::Compression;
use skiff_integration::{require_root, ImageBuilder, Layer, Registry, Skiffd};
use skiff_proto::cri::*;

mod common;
use common::Netns;

const PAGE: &[u8] = b"served from pod A\n";

fn conflist(ipam_dir: &std::path::Path) -> String {
    format!(
        r#"{{
  "cniVersion": "1.0.0",
  "name": "skiff-test-net",
  "plugins": [
    {{
      "type": "bridge", "bridge": "skiff0", "isGateway": true, "ipMasq": false,
      "hairpinMode": true,
      "ipam": {{
        "type": "host-local", "dataDir": "{}",
        "ranges": [[{{"subnet": "10.99.0.0/24"}}]], "routes": [{{"dst": "0.0.0.0/0"}}]
      }}
    }},
    {{"type": "portmap", "capabilities": {{"portMappings": true}}, "snat": true}}
  ]
}}"#,
        ipam_dir.display()
    )
}

async fn network_ready(rt: &mut Rt) -> RuntimeCondition {
    rt.status(StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.r#type == "NetworkReady")
        .unwrap()
}

async fn pod_ip(rt: &mut Rt, pod: &str) -> String {
    rt.pod_sandbox_status(PodSandboxStatusRequest {
        pod_sandbox_id: pod.into(),
        verbose: false,
    })
    .await
    .unwrap()
    .into_inner()
    .status
    .unwrap()
    .network
    .unwrap()
    .ip
}

/// The `networkCheck` of the pod's verbose status.
async fn network_check(rt: &mut Rt, pod: &str) -> String {
    pod_info(rt, pod).await["networkCheck"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// IPs host-local has handed out (its files named after addresses).
fn allocations(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir.join("skiff-test-net"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_get_addresses_reach_each_other_and_leave_nothing() {
    require_root();
    let reg = Registry::start();
    let site = Layer::new()
        .dir("bin", 0o755)
        .symlink("bin/httpd", "busybox")
        .symlink("bin/wget", "busybox")
        .dir("www", 0o755)
        .file("www/index.html", PAGE, 0o644);
    let img = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .layer(site, Compression::Gzip)
        .push(&reg.host, "test/net", "v1")
        .await;
    let root = common::pulled_root(&reg.host, &img.reference).await;
    let root_flag = root.path().display().to_string();
    let ns = Netns::new();
    let conf = tempfile::tempdir().unwrap();
    let ipam = tempfile::tempdir().unwrap();
    // The plugins through a bin dir of the test's, so that one can go missing.
    let bins = tempfile::tempdir().unwrap();
    for p in ["bridge", "host-local", "portmap", "loopback"] {
        std::os::unix::fs::symlink(format!("/usr/lib/cni/{p}"), bins.path().join(p)).unwrap();
    }
    let config = format!(
        "cni_conf_dir = \"{}\"\ncni_bin_dirs = [\"{}\"]\n",
        conf.path().display(),
        bins.path().display()
    );
    let mut d = Skiffd::start_in(
        Some(&ns.0),
        &[&reg.host],
        Some(&config),
        &["--root", &root_flag],
    );
    let mut rt = d.runtime().await;
    let logs = tempfile::tempdir().unwrap();
    let logdir = logs.path().to_str().unwrap();

    // No configuration yet: not ready, and a pod is refused leaving nothing.
    let c = network_ready(&mut rt).await;
    assert!(!c.status);
    assert_eq!(c.reason, "NetworkPluginNotReady");
    assert!(c.message.contains("no network config"), "{}", c.message);
    let err = run_pod_err(&mut rt, pod_config("early", logdir)).await;
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(list_pods(&mut rt).await.is_empty());

    // A configuration appears: ready, without a restart.
    std::fs::write(conf.path().join("10-skiff.conflist"), conflist(ipam.path())).unwrap();
    assert!(network_ready(&mut rt).await.status);

    // Pod A serves HTTP on :80 with hostPort 8081; pod B fetches it by A's address.
    let mut a_cfg = pod_config("a", logdir);
    a_cfg.port_mappings = vec![PortMapping {
        protocol: Protocol::Tcp as i32,
        container_port: 80,
        host_port: 8081,
        host_ip: String::new(),
    }];
    let a = run_pod(&mut rt, &a_cfg).await;
    run(
        &mut rt,
        &a,
        &a_cfg,
        container_config(
            "web",
            &img.reference,
            &["httpd", "-f", "-p", "80", "-h", "/www"],
        ),
    )
    .await;
    let b_cfg = pod_config("b", logdir);
    let b = run_pod(&mut rt, &b_cfg).await;
    let client = run(
        &mut rt,
        &b,
        &b_cfg,
        container_config("client", &img.reference, &["sleep", "1000"]),
    )
    .await;
    let (ip_a, ip_b) = (pod_ip(&mut rt, &a).await, pod_ip(&mut rt, &b).await);
    assert!(ip_a.starts_with("10.99.0."), "{ip_a}");
    assert!(ip_b.starts_with("10.99.0."), "{ip_b}");
    assert_ne!(ip_a, ip_b);
    // The kernel agrees: B's eth0 holds B's address.
    let addr = sh(
        &mut rt,
        &client,
        "ip addr show eth0 2>/dev/null || cat /proc/net/fib_trie",
    )
    .await;
    assert!(addr.contains(&ip_b), "{addr}");

    let deadline = Instant::now() + Duration::from_secs(10);
    let page = loop {
        let r = exec(
            &mut rt,
            &client,
            &[
                "sh",
                "-c",
                &format!("wget -q -O - http://{ip_a}/index.html"),
            ],
            10,
        )
        .await
        .unwrap();
        if r.exit_code == 0 || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await; // httpd starting
    };
    assert_eq!(
        page.stdout,
        PAGE,
        "{}",
        String::from_utf8_lossy(&page.stderr)
    );

    // The hostPort, from the namespace's loopback.
    let (ok, out) = ns.exec(&[
        "busybox",
        "wget",
        "-q",
        "-O",
        "-",
        "http://127.0.0.1:8081/index.html",
    ]);
    assert!(ok, "{out}");
    assert_eq!(out.as_bytes(), PAGE);
    let (_, rules) = ns.exec(&["iptables-save"]);
    assert!(rules.contains("8081"), "{rules}");
    assert_eq!(allocations(ipam.path()).len(), 2);

    // CHECK (verbose status): fine as attached; an address taken away inside the pod is found.
    // (Pod B: Debian's portmap 1.1.1 fails CHECK of a pod with port mappings on a node without
    // IPv6 NAT chains, a plugin bug.)
    assert_eq!(network_check(&mut rt, &b).await, "ok");
    let (ok, out) = ns.exec(&[
        "nsenter",
        &format!(
            "--net={}",
            d.run_root.join("pods").join(&b).join("ns/net").display()
        ),
        "ip",
        "addr",
        "flush",
        "dev",
        "eth0",
    ]);
    assert!(ok, "{out}");
    let broken = network_check(&mut rt, &b).await;
    assert!(broken.contains("CHECK failed"), "{broken}");
    assert!(broken.contains(&ip_b), "{broken}");

    // skiffd dies and comes back: DEL still works, from the recorded attachment.
    d.restart();
    let mut rt = d.runtime().await;
    // A DEL that fails fails the stop, with the plugin named, and is tried again by the next.
    let portmap = bins.path().join("portmap");
    std::fs::remove_file(&portmap).unwrap();
    let err = rt
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: a.clone(),
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("portmap"), "{}", err.message());
    std::os::unix::fs::symlink("/usr/lib/cni/portmap", &portmap).unwrap();
    for p in [&a, &b] {
        rt.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: p.to_string(),
        })
        .await
        .expect("StopPodSandbox");
        // Idempotent.
        rt.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: p.to_string(),
        })
        .await
        .expect("StopPodSandbox again");
    }
    assert_eq!(
        pod_ip(&mut rt, &a).await,
        "",
        "a stopped pod has no address"
    );
    teardown_pods(&mut rt, vec![a, b]).await;
    let (_, links) = ns.exec(&["ip", "-o", "link", "show", "type", "veth"]);
    assert_eq!(links.trim(), "", "veths left");
    assert!(
        allocations(ipam.path()).is_empty(),
        "{:?}",
        allocations(ipam.path())
    );
    let (_, rules) = ns.exec(&["iptables-save"]);
    assert!(!rules.contains("8081"), "portmap rules left: {rules}");

    // A failing plugin: its own message, and nothing left.
    std::fs::write(
        conf.path().join("10-skiff.conflist"),
        conflist(ipam.path()).replace("10.99.0.0/24", "not-a-subnet"),
    )
    .unwrap();
    let err = run_pod_err(&mut rt, pod_config("bad", logdir)).await;
    assert!(err.message().contains("bridge"), "{}", err.message());
    assert!(err.message().contains("not-a-subnet"), "{}", err.message());
    assert!(list_pods(&mut rt).await.is_empty());
    // Version negotiation: a version the plugins do not speak is refused by name.
    std::fs::write(
        conf.path().join("10-skiff.conflist"),
        conflist(ipam.path()).replace("\"1.0.0\"", "\"9.9.9\""),
    )
    .unwrap();
    let err = run_pod_err(&mut rt, pod_config("future", logdir)).await;
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("9.9.9"), "{}", err.message());
    assert!(list_pods(&mut rt).await.is_empty());
    // Host-network pods need no CNI at all.
    let h_cfg = with_namespaces(
        pod_config("host", logdir),
        NamespaceMode::Node,
        NamespaceMode::Pod,
        NamespaceMode::Pod,
    );
    let h = run_pod(&mut rt, &h_cfg).await;
    assert_eq!(pod_ip(&mut rt, &h).await, "");
    teardown_pods(&mut rt, vec![h]).await;
    drop(rt);
    d.terminate();
}

/// On a network whose CNI result has only `lo` (the loopback plugin alone), the pod has no IP:
/// 127.0.0.1 is not the pod's address; the loopback interface is up inside it all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loopback_only_network_gives_no_pod_ip() {
    require_root();
    // The harness's default network is the loopback plugin alone.
    let d = Skiffd::start(&[]);
    let mut rt = d.runtime().await;
    let logs = tempfile::tempdir().unwrap();
    let pcfg = pod_config("lo-only", logs.path().to_str().unwrap());
    let pod = run_pod(&mut rt, &pcfg).await;
    assert_eq!(pod_ip(&mut rt, &pod).await, "");
    let info = pod_info(&mut rt, &pod).await;
    let pid = info["pid"].as_i64().expect("the shim's pid") as i32;
    let out = Command::new("nsenter")
        .args([
            "-t",
            &pid.to_string(),
            "-n",
            "ip",
            "-o",
            "addr",
            "show",
            "lo",
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.contains("127.0.0.1/8"), "{out}");
    teardown_pods(&mut rt, vec![pod]).await;
}

/// A CNI plugin that configures nothing and notes how many ADDs it saw running at once: each
/// ADD waits (up to 5 s) until another is in flight, then writes the count it saw.
const COUNTING_PLUGIN: &str = r#"#!/bin/sh
d='DIR'
case "$CNI_COMMAND" in
VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["1.0.0"]}' ;;
ADD)
  cat > /dev/null
  touch "$d/in.$$"
  i=0
  while [ "$(ls "$d" | grep -c '^in\.')" -lt 2 ] && [ $i -lt 50 ]; do
    sleep 0.1; i=$((i+1))
  done
  ls "$d" | grep -c '^in\.' > "$d/seen.$$"
  sleep 0.5
  rm -f "$d/in.$$"
  echo '{"cniVersion":"1.0.0"}' ;;
*) cat > /dev/null ;;
esac
"#;

/// Pods are created side by side: one pod's CNI ADD (which takes its time on real networks)
/// does not hold up another's RunPodSandbox. The plugin itself sees two ADDs at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cni_adds_of_two_pods_run_at_once() {
    require_root();
    let conf = tempfile::tempdir().unwrap();
    let bins = tempfile::tempdir().unwrap();
    let seen = tempfile::tempdir().unwrap();
    let plugin = bins.path().join("counting");
    std::fs::write(
        &plugin,
        COUNTING_PLUGIN.replace("DIR", &seen.path().display().to_string()),
    )
    .unwrap();
    std::fs::set_permissions(&plugin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(
        conf.path().join("10-counting.conf"),
        r#"{"cniVersion": "1.0.0", "name": "skiff-test-counting", "type": "counting"}"#,
    )
    .unwrap();
    let config = format!(
        "cni_conf_dir = \"{}\"\ncni_bin_dirs = [\"{}\"]\n",
        conf.path().display(),
        bins.path().display()
    );
    let d = Skiffd::start_with(&[], Some(&config), &[]);
    let rt = d.runtime().await;
    let logs = tempfile::tempdir().unwrap();
    let logdir = logs.path().to_str().unwrap();
    let (a_cfg, b_cfg) = (pod_config("adds-a", logdir), pod_config("adds-b", logdir));
    let t = Instant::now();
    let (a, b) = tokio::join!(
        async {
            let mut rt = rt.clone();
            run_pod(&mut rt, &a_cfg).await
        },
        async {
            let mut rt = rt.clone();
            run_pod(&mut rt, &b_cfg).await
        }
    );
    let took = t.elapsed();
    let counts: Vec<String> = std::fs::read_dir(seen.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("seen."))
        .map(|e| {
            std::fs::read_to_string(e.path())
                .unwrap()
                .trim()
                .to_string()
        })
        .collect();
    assert_eq!(
        counts,
        ["2", "2"],
        "ADDs in flight as each saw it ({took:?} for both pods)"
    );
    eprintln!("two pods whose CNI ADDs wait for each other: {took:?}");
    let mut rt = rt.clone();
    teardown_pods(&mut rt, vec![a, b]).await;
    assert!(list_pods(&mut rt).await.is_empty());
}
