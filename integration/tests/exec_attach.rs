//! Exec and Attach end to end, as kubectl reaches the runtime through kubelet: the URL from the
//! CRI call, the upgrade to SPDY/3.1 or WebSocket with each remote command protocol, stdout and
//! stderr apart, stdin and its end, a terminal and its size, the exit code in the status, the
//! stdio of a running container, single-use expiring URLs, and nothing left behind by many
//! concurrent sessions or by clients that vanish.

use std::time::{Duration, Instant};

use skiff_integration::cri::*;
use skiff_integration::stream::{upgrade, ws_headers, Event, Proto, RemoteCommand, Streams};
use skiff_integration::{require_root, ImageBuilder, Layer, Registry, Skiffd};
use skiff_proto::cri::*;

const T: Duration = Duration::from_secs(20);

struct Env {
    d: Skiffd,
    rt: Rt,
    pod: String,
    pcfg: PodSandboxConfig,
    image: String,
    _logs: tempfile::TempDir,
    _reg: Registry,
}

async fn env(config: Option<&str>) -> Env {
    require_root();
    let reg = Registry::start();
    let img = ImageBuilder::new()
        .layer(
            Layer::busybox(),
            skiff_integration::image::Compression::Gzip,
        )
        .push(&reg.host, "test/busybox", "v1")
        .await;
    let d = Skiffd::start_with(&[&reg.host], config, &[]);
    pull(&mut d.images().await, &img.reference).await;
    let mut rt = d.runtime().await;
    let logs = tempfile::tempdir().unwrap();
    let pcfg = pod_config("streams", logs.path().to_str().unwrap());
    let pod = run_pod(&mut rt, &pcfg).await;
    Env {
        d,
        rt,
        pod,
        pcfg,
        image: img.reference.clone(),
        _logs: logs,
        _reg: reg,
    }
}

impl Env {
    async fn container(&mut self, name: &str, cmd: &[&str], stdin: bool, tty: bool) -> String {
        let mut cfg = container_config(name, &self.image, cmd);
        cfg.stdin = stdin;
        cfg.tty = tty;
        cfg.log_path = format!("{name}.log");
        run(&mut self.rt, &self.pod, &self.pcfg, cfg).await
    }

    async fn exec_url(&mut self, id: &str, cmd: &[&str], s: Streams) -> String {
        self.rt
            .exec(ExecRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|c| c.to_string()).collect(),
                tty: s.tty,
                stdin: s.stdin,
                stdout: s.stdout,
                stderr: s.stderr,
            })
            .await
            .expect("Exec")
            .into_inner()
            .url
    }

    async fn attach_url(&mut self, id: &str, s: Streams) -> Result<String, tonic::Status> {
        self.rt
            .attach(AttachRequest {
                container_id: id.into(),
                stdin: s.stdin,
                tty: s.tty,
                stdout: s.stdout,
                stderr: s.stderr,
            })
            .await
            .map(|r| r.into_inner().url)
    }

    /// Host PIDs in the container's cgroup (every process of it, exec'd ones included), read
    /// from the memory hierarchy its main process is in.
    async fn cgroup_pids(&mut self, id: &str) -> Vec<i32> {
        let pid = container_pid(&mut self.rt, id).await;
        let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        let path = cg
            .lines()
            .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string()))
            .expect("a memory cgroup");
        let mut pids: Vec<i32> =
            std::fs::read_to_string(format!("/sys/fs/cgroup/memory{path}/cgroup.procs"))
                .unwrap()
                .lines()
                .filter_map(|l| l.parse().ok())
                .collect();
        pids.sort();
        pids
    }
}

const OUT_ERR: Streams = Streams {
    stdin: false,
    stdout: true,
    stderr: true,
    tty: false,
};

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_output_stdin_exit_codes_and_terminal_over_every_protocol() {
    let mut e = env(None).await;
    let c = e.container("main", &["sleep", "1000"], false, false).await;

    // stdout and stderr apart, and the exit code in the status, over each protocol.
    let script = ["sh", "-c", "echo out; echo err >&2; exit 3"];
    for proto in [
        Proto::Spdy("v5.channel.k8s.io"),
        Proto::Spdy("v4.channel.k8s.io"),
        Proto::Spdy("v3.channel.k8s.io"),
        Proto::Spdy("v2.channel.k8s.io"),
        Proto::Spdy("channel.k8s.io"),
        Proto::Ws("v5.channel.k8s.io"),
        Proto::Ws("v4.channel.k8s.io"),
        Proto::Ws("v4.base64.channel.k8s.io"),
        Proto::Ws("channel.k8s.io"),
        Proto::Ws("base64.channel.k8s.io"),
        Proto::Ws(""),
    ] {
        let url = e.exec_url(&c, &script, OUT_ERR).await;
        let mut s = RemoteCommand::connect(&url, proto, OUT_ERR)
            .await
            .unwrap_or_else(|err| panic!("{proto:?}: {err}"));
        let f = s.finish(T).await;
        assert_eq!(f.stdout, b"out\n", "{proto:?}");
        assert_eq!(f.stderr, b"err\n", "{proto:?}");
        let status = String::from_utf8_lossy(&f.status).into_owned();
        let (Proto::Spdy(p) | Proto::Ws(p)) = proto;
        if p.starts_with("v4") || p.starts_with("v5") {
            assert_eq!(f.exit_code(), Some(3), "{proto:?}: {status}");
            assert!(status.contains("NonZeroExitCode"), "{status}");
        } else {
            assert!(status.contains("exit code 3"), "{proto:?}: {status}");
        }
    }
    // Success is a Success status.
    let url = e.exec_url(&c, &["true"], OUT_ERR).await;
    let f = RemoteCommand::connect(&url, Proto::Spdy("v4.channel.k8s.io"), OUT_ERR)
        .await
        .unwrap()
        .finish(T)
        .await;
    assert_eq!(f.exit_code(), Some(0), "{f:?}");

    // stdin through cat, ended by FIN (SPDY) or the CLOSE signal (WebSocket v5).
    let io = Streams {
        stdin: true,
        stdout: true,
        stderr: false,
        tty: false,
    };
    for proto in [
        Proto::Spdy("v4.channel.k8s.io"),
        Proto::Ws("v5.channel.k8s.io"),
    ] {
        let url = e.exec_url(&c, &["cat"], io).await;
        let mut s = RemoteCommand::connect(&url, proto, io).await.unwrap();
        s.stdin(b"hello ").await;
        s.stdin(b"through cat\n").await;
        s.close_stdin().await;
        let f = s.finish(T).await;
        assert_eq!(f.stdout_text(), "hello through cat\n", "{proto:?}");
        assert_eq!(f.exit_code(), Some(0), "{proto:?}");
    }

    // A terminal: the command has one (and TERM), sees the size the client sets, and a resize.
    let term = Streams {
        stdin: true,
        stdout: true,
        stderr: false,
        tty: true,
    };
    for proto in [
        Proto::Spdy("v4.channel.k8s.io"),
        Proto::Ws("v5.channel.k8s.io"),
    ] {
        let url = e
            .exec_url(
                &c,
                &[
                    "sh",
                    "-c",
                    "[ -t 0 ] && echo IS-A-TTY; echo TERM=$TERM; stty size; read x; stty size",
                ],
                term,
            )
            .await;
        let mut s = RemoteCommand::connect(&url, proto, term).await.unwrap();
        s.resize(100, 40).await;
        let first = s.read_until("40 100", T).await;
        assert!(first.contains("IS-A-TTY"), "{proto:?}: {first:?}");
        assert!(first.contains("TERM=xterm"), "{proto:?}: {first:?}");
        s.resize(120, 50).await;
        // The size is set before the line that lets the command go on.
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.stdin(b"go\r").await;
        let f = s.finish(T).await;
        let rest = f.stdout_text();
        assert!(rest.contains("50 120"), "{proto:?}: {rest:?}");
        assert_eq!(f.exit_code(), Some(0), "{proto:?}");
    }

    // A command that cannot run fails on the error stream.
    let url = e.exec_url(&c, &["/no/such/binary"], OUT_ERR).await;
    let f = RemoteCommand::connect(&url, Proto::Spdy("v4.channel.k8s.io"), OUT_ERR)
        .await
        .unwrap()
        .finish(T)
        .await;
    let status = String::from_utf8_lossy(&f.status).into_owned();
    assert!(status.contains("\"status\":\"Failure\""), "{status}");
    assert!(status.contains("/no/such/binary"), "{status}");

    // Bad requests are refused by field; a stopped container by state.
    let bad = |cmd: Vec<&str>, tty, stdin, stdout, stderr| ExecRequest {
        container_id: c.clone(),
        cmd: cmd.into_iter().map(String::from).collect(),
        tty,
        stdin,
        stdout,
        stderr,
    };
    for (req, field) in [
        (bad(vec![], false, false, true, false), "cmd"),
        (bad(vec!["true"], true, false, true, true), "tty and stderr"),
        (
            bad(vec!["true"], false, false, false, false),
            "stdin, stdout and stderr",
        ),
    ] {
        let err = e.rt.exec(req).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(field), "{}", err.message());
    }
    let err =
        e.rt.exec(ExecRequest {
            container_id: "nosuchcontainer".into(),
            ..bad(vec!["true"], false, false, true, false)
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    e.rt.stop_container(StopContainerRequest {
        container_id: c.clone(),
        timeout: 0,
    })
    .await
    .unwrap();
    let err =
        e.rt.exec(bad(vec!["true"], false, false, true, false))
            .await
            .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    teardown_pods(&mut e.rt, vec![e.pod.clone()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_reaches_the_main_process() {
    let mut e = env(None).await;
    let c = e
        .container(
            "reader",
            &[
                "sh",
                "-c",
                "while read l; do echo got:$l; echo err:$l >&2; done",
            ],
            true,
            false,
        )
        .await;
    let s = Streams {
        stdin: true,
        stdout: true,
        stderr: true,
        tty: false,
    };
    // Attach, talk, detach; the container runs on and a second client attaches over WebSocket.
    for (proto, word) in [
        (Proto::Spdy("v4.channel.k8s.io"), "ping"),
        (Proto::Ws("v5.channel.k8s.io"), "pong"),
    ] {
        let url = e.attach_url(&c, s).await.expect("Attach");
        let mut a = RemoteCommand::connect(&url, proto, s).await.unwrap();
        // Output from before the attach is not replayed; what follows arrives.
        a.stdin(format!("{word}\n").as_bytes()).await;
        let mut out = String::new();
        let mut err = String::new();
        let deadline = Instant::now() + T;
        while !(out.contains(&format!("got:{word}")) && err.contains(&format!("err:{word}"))) {
            match a
                .next(deadline.saturating_duration_since(Instant::now()))
                .await
            {
                Some(Event::Stdout(d)) => out.push_str(&String::from_utf8_lossy(&d)),
                Some(Event::Stderr(d)) => err.push_str(&String::from_utf8_lossy(&d)),
                other => panic!("{proto:?}: {other:?} (stdout {out:?}, stderr {err:?})"),
            }
        }
        drop(a);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            status(&mut e.rt, &c).await.state,
            ContainerState::ContainerRunning as i32,
            "detaching stops nothing"
        );
    }
    // What attach saw also went to the log.
    let log = std::path::Path::new(&e._logs.path()).join("reader.log");
    let records = log_records(&log);
    assert!(records.iter().any(|r| r.2 == "got:ping"), "{records:?}");
    assert!(
        records.iter().any(|r| r.0 == "stderr" && r.2 == "err:pong"),
        "{records:?}"
    );

    // Attach ends when the container does, with a Success status.
    let url = e.attach_url(&c, OUT_ERR).await.unwrap();
    let mut a = RemoteCommand::connect(&url, Proto::Spdy("v4.channel.k8s.io"), OUT_ERR)
        .await
        .unwrap();
    let stopper = {
        let mut rt = e.d.runtime().await;
        let c = c.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            rt.stop_container(StopContainerRequest {
                container_id: c,
                timeout: 0,
            })
            .await
            .unwrap();
        })
    };
    let f = a.finish(T).await;
    stopper.await.unwrap();
    assert_eq!(f.exit_code(), Some(0), "{f:?}");

    // A tty container: the terminal echoes, and sh answers.
    let t = e.container("term", &["sh"], true, true).await;
    let ts = Streams {
        stdin: true,
        stdout: true,
        stderr: false,
        tty: true,
    };
    let url = e.attach_url(&t, ts).await.unwrap();
    let mut a = RemoteCommand::connect(&url, Proto::Ws("v5.channel.k8s.io"), ts)
        .await
        .unwrap();
    a.resize(90, 30).await;
    a.stdin(b"stty size; echo done-$((6*7))\n").await;
    let out = a.read_until("done-42", T).await;
    assert!(out.contains("30 90"), "{out:?}");
    drop(a);

    // Requests that do not fit the container are refused by field.
    let err = e
        .attach_url(
            &t,
            Streams {
                tty: false,
                ..OUT_ERR
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("tty"), "{}", err.message());
    let plain = e.container("plain", &["sleep", "1000"], false, false).await;
    let err = e.attach_url(&plain, s).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("stdin"), "{}", err.message());
    teardown_pods(&mut e.rt, vec![e.pod.clone()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_are_single_use_and_expire() {
    let mut e = env(Some("streaming_url_ttl = 1\n")).await;
    let c = e.container("main", &["sleep", "1000"], false, false).await;
    let url = e.exec_url(&c, &["true"], OUT_ERR).await;
    RemoteCommand::connect(&url, Proto::Ws("v4.channel.k8s.io"), OUT_ERR)
        .await
        .unwrap()
        .finish(T)
        .await;
    let again = upgrade(&url, &ws_headers("v4.channel.k8s.io"))
        .await
        .expect_err("a used URL is refused");
    assert!(again.starts_with("HTTP/1.1 404"), "{again}");
    let url = e.exec_url(&c, &["true"], OUT_ERR).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let late = upgrade(&url, &ws_headers("v4.channel.k8s.io"))
        .await
        .expect_err("an expired URL is refused");
    assert!(late.starts_with("HTTP/1.1 404"), "{late}");
    // A protocol the server does not speak is refused.
    let url = e.exec_url(&c, &["true"], OUT_ERR).await;
    let refused = upgrade(&url, &ws_headers("v9.channel.k8s.io"))
        .await
        .expect_err("unknown protocol");
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    teardown_pods(&mut e.rt, vec![e.pod.clone()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (c, k) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    let config = format!(
        "streaming_tls_cert = \"{}\"\nstreaming_tls_key = \"{}\"\n",
        c.display(),
        k.display()
    );
    let mut e = env(Some(&config)).await;
    let id = e.container("main", &["sleep", "1000"], false, false).await;
    let tls = skiff_integration::stream::trusting(cert.der());
    for proto in [
        Proto::Spdy("v4.channel.k8s.io"),
        Proto::Ws("v5.channel.k8s.io"),
    ] {
        let url = e
            .exec_url(&id, &["sh", "-c", "echo over-tls; exit 4"], OUT_ERR)
            .await;
        assert!(url.starts_with("https://127.0.0.1:"), "{url}");
        let f = RemoteCommand::connect_tls(&url, proto, OUT_ERR, Some(tls.clone()))
            .await
            .unwrap()
            .finish(T)
            .await;
        assert_eq!(f.stdout_text(), "over-tls\n");
        assert_eq!(f.exit_code(), Some(4));
    }
    // Plain HTTP to the TLS server gets nowhere.
    let url = e.exec_url(&id, &["true"], OUT_ERR).await;
    let plain = url.replacen("https://", "http://", 1);
    assert!(upgrade(&plain, &ws_headers("v4.channel.k8s.io"))
        .await
        .is_err());
    teardown_pods(&mut e.rt, vec![e.pod.clone()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_execs_and_vanished_clients_leave_nothing() {
    let mut e = env(None).await;
    let c = e.container("main", &["sleep", "1000"], false, false).await;
    // Warm up connections so the descriptor counts below compare like with like.
    let url = e.exec_url(&c, &["true"], OUT_ERR).await;
    RemoteCommand::connect(&url, Proto::Spdy("v4.channel.k8s.io"), OUT_ERR)
        .await
        .unwrap()
        .finish(T)
        .await;
    let shim = shim_pid(&mut e.rt, &e.pod).await;
    let (skiffd_fds, shim_fds) = (open_fds(e.d.pid() as i32), open_fds(shim));
    let before = e.cgroup_pids(&c).await;

    // 100 at once, half over SPDY, half over WebSocket.
    let mut urls = vec![];
    for i in 0..100 {
        let script = format!("echo exec-{i}");
        urls.push(e.exec_url(&c, &["sh", "-c", &script], OUT_ERR).await);
    }
    let mut tasks = vec![];
    for (i, url) in urls.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let proto = if i % 2 == 0 {
                Proto::Spdy("v4.channel.k8s.io")
            } else {
                Proto::Ws("v5.channel.k8s.io")
            };
            let f = RemoteCommand::connect(&url, proto, OUT_ERR)
                .await
                .unwrap()
                .finish(Duration::from_secs(60))
                .await;
            assert_eq!(f.stdout_text(), format!("exec-{i}\n"));
            assert_eq!(f.exit_code(), Some(0));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }

    // Clients that vanish while their command runs: the command is killed, nothing else.
    for i in 0..10 {
        let url = e.exec_url(&c, &["sleep", "1000"], OUT_ERR).await;
        let proto = if i % 2 == 0 {
            Proto::Spdy("v4.channel.k8s.io")
        } else {
            Proto::Ws("v5.channel.k8s.io")
        };
        let s = RemoteCommand::connect(&url, proto, OUT_ERR).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(s);
    }

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = (
            e.cgroup_pids(&c).await,
            open_fds(e.d.pid() as i32),
            open_fds(shim),
        );
        if (now.0.len() <= before.len() && now.1 <= skiffd_fds && now.2 <= shim_fds)
            || Instant::now() > deadline
        {
            assert_eq!(now.0, before, "processes left in the container");
            assert!(
                now.1 <= skiffd_fds,
                "skiffd: {} fds, {skiffd_fds} before",
                now.1
            );
            assert!(now.2 <= shim_fds, "shim: {} fds, {shim_fds} before", now.2);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        status(&mut e.rt, &c).await.state,
        ContainerState::ContainerRunning as i32
    );
    teardown_pods(&mut e.rt, vec![e.pod.clone()]).await;
}
