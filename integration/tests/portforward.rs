//! PortForward end to end, as kubectl port-forward reaches the runtime through kubelet: the URL
//! from the CRI call, the HTTP upgrade to SPDY/3.1 with `portforward.k8s.io`, a pair of streams
//! per connection, bytes to and from a server listening on localhost inside the pod's network
//! namespace, errors on the error stream, single-use URLs, and no descriptor left behind by a
//! client that vanishes.

use std::time::{Duration, Instant};

use skiff_integration::cri::*;
use skiff_integration::image::Compression;
use skiff_integration::{require_root, stream, ImageBuilder, Layer, Registry, Skiffd};
use skiff_proto::cri::*;
use skiff_runtime::streaming::spdy::{Frame, HeaderDecoder, HeaderEncoder, FLAG_FIN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PAGE: &[u8] = b"hello from inside the pod\n";

/// Connects to a streaming URL and upgrades to SPDY: the connection, or the HTTP status and
/// body.
async fn upgrade(url: &str) -> Result<stream::Conn, String> {
    let (c, head) = stream::upgrade(url, &stream::spdy_headers("portforward.k8s.io")).await?;
    assert!(
        head.contains("X-Stream-Protocol-Version: portforward.k8s.io"),
        "{head}"
    );
    Ok(c)
}

/// One forwarded connection to the pod's `port` over WebSocket (`protocol`): the port
/// announced on each channel, then `payload` sent; returns what came back on the data and
/// error channels until skiffd closed the session.
async fn ws_forward_once(
    url: &str,
    protocol: &str,
    port: u16,
    payload: &[u8],
) -> (Vec<u8>, String) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{protocol::Role, Message};
    let (c, head) = stream::upgrade(url, &stream::ws_headers(protocol))
        .await
        .expect("WebSocket upgrade");
    assert!(
        head.contains(&format!("Sec-WebSocket-Protocol: {protocol}")),
        "{head}"
    );
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(c, Role::Client, None).await;
    let p = port.to_le_bytes();
    for ch in [0u8, 1] {
        let m = ws.next().await.expect("a message").expect("a message");
        assert_eq!(
            m,
            Message::binary(vec![ch, p[0], p[1]]),
            "port on channel {ch}"
        );
    }
    ws.send(Message::binary([&[0u8][..], payload].concat()))
        .await
        .unwrap();
    let (mut data, mut err) = (vec![], vec![]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next())
            .await
            .expect("session ends within 10 s")
        {
            Some(Ok(Message::Binary(b))) => match b.first() {
                Some(0) => data.extend_from_slice(&b[1..]),
                Some(1) => err.extend_from_slice(&b[1..]),
                _ => panic!("message on an unknown channel: {b:?}"),
            },
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => {}
        }
    }
    (data, String::from_utf8_lossy(&err).into_owned())
}

/// Opens the error (1) and data (3) streams of one forwarded connection to `port`.
async fn open_pair(c: &mut stream::Conn, enc: &mut HeaderEncoder, port: u16, request: &str) {
    for (id, kind) in [(1, "error"), (3, "data")] {
        let f = Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers: vec![
                ("streamtype".to_string(), kind.to_string()),
                ("port".to_string(), port.to_string()),
                ("requestid".to_string(), request.to_string()),
            ],
        };
        c.write_all(&f.encode(enc).unwrap()).await.unwrap();
    }
}

/// One forwarded connection to `port`: sends `payload` and ends its side, then collects what
/// comes back on the data and error streams until both end.
async fn forward_once(url: &str, port: u16, payload: &[u8]) -> (Vec<u8>, String) {
    let mut c = upgrade(url).await.expect("upgrade");
    let mut enc = HeaderEncoder::new();
    let mut dec = HeaderDecoder::new();
    open_pair(&mut c, &mut enc, port, "0").await;
    let data = Frame::Data {
        stream_id: 3,
        flags: FLAG_FIN,
        data: payload.to_vec(),
    };
    c.write_all(&data.encode(&mut enc).unwrap()).await.unwrap();
    let (mut got, mut err) = (vec![], vec![]);
    let (mut data_done, mut err_done) = (false, false);
    let mut buf = vec![];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(data_done && err_done) {
        while let Some((f, n)) = Frame::parse(&buf, &mut dec).unwrap() {
            buf.drain(..n);
            if let Frame::Data {
                stream_id,
                flags,
                data,
            } = f
            {
                let fin = flags & FLAG_FIN != 0;
                if stream_id == 3 {
                    got.extend(data);
                    data_done |= fin;
                } else if stream_id == 1 {
                    err.extend(data);
                    err_done |= fin;
                }
            }
        }
        if data_done && err_done {
            break;
        }
        let mut chunk = [0u8; 4096];
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, c.read(&mut chunk))
            .await
            .expect("streams end within 10 s")
            .unwrap();
        assert!(n > 0, "skiffd closed the connection early");
        buf.extend_from_slice(&chunk[..n]);
    }
    (got, String::from_utf8_lossy(&err).into_owned())
}

async fn port_forward_url(rt: &mut Rt, pod: &str, port: i32) -> Result<String, tonic::Status> {
    rt.port_forward(PortForwardRequest {
        pod_sandbox_id: pod.into(),
        port: vec![port],
    })
    .await
    .map(|r| r.into_inner().url)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_reaches_a_server_in_the_pod() {
    require_root();
    let reg = Registry::start();
    let site = Layer::new()
        .dir("bin", 0o755)
        .symlink("bin/httpd", "busybox")
        .dir("www", 0o755)
        .file("www/index.html", PAGE, 0o644);
    let img = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .layer(site, Compression::Gzip)
        .push(&reg.host, "test/httpd", "v1")
        .await;
    let d = Skiffd::start(&[&reg.host]);
    pull(&mut d.images().await, &img.reference).await;
    let mut rt = d.runtime().await;
    let logs = tempfile::tempdir().unwrap();
    let pcfg = pod_config("pf", logs.path().to_str().unwrap());
    let pod = run_pod(&mut rt, &pcfg).await;
    run(
        &mut rt,
        &pod,
        &pcfg,
        container_config(
            "web",
            &img.reference,
            &["httpd", "-f", "-p", "8080", "-h", "/www"],
        ),
    )
    .await;

    // The server is only in the pod's network namespace: the node has nothing on 8080 (the
    // forward below reaches it all the same).
    assert!(std::net::TcpStream::connect("127.0.0.1:8080").is_err());
    let request = b"GET /index.html HTTP/1.0\r\n\r\n";
    let deadline = Instant::now() + Duration::from_secs(10);
    let (body, err) = loop {
        let url = port_forward_url(&mut rt, &pod, 8080)
            .await
            .expect("PortForward");
        let (body, err) = forward_once(&url, 8080, request).await;
        if err.is_empty() || Instant::now() > deadline {
            break (body, err);
        }
        tokio::time::sleep(Duration::from_millis(100)).await; // httpd still starting
    };
    assert_eq!(err, "");
    let text = String::from_utf8_lossy(&body);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.ends_with(std::str::from_utf8(PAGE).unwrap()), "{text}");

    // The same over WebSocket, as kubelet's streaming server offers it: the port from the
    // request on both channels, then the exchange; the session ends with the connection.
    let url = port_forward_url(&mut rt, &pod, 8080).await.unwrap();
    let (body, err) = ws_forward_once(&url, "v4.channel.k8s.io", 8080, request).await;
    assert_eq!(err, "");
    let text = String::from_utf8_lossy(&body);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.ends_with(std::str::from_utf8(PAGE).unwrap()), "{text}");
    let url = port_forward_url(&mut rt, &pod, 9999).await.unwrap();
    let (body, err) = ws_forward_once(&url, "v4.channel.k8s.io", 9999, b"x").await;
    assert!(body.is_empty());
    assert!(err.contains("error forwarding port 9999"), "{err}");

    // Nothing listens on 9999: the error stream says so and the data stream ends.
    let url = port_forward_url(&mut rt, &pod, 9999).await.unwrap();
    let (body, err) = forward_once(&url, 9999, b"x").await;
    assert!(body.is_empty());
    assert!(err.contains("error forwarding port 9999"), "{err}");
    assert!(err.contains("Connection refused"), "{err}");

    // A URL serves once.
    let url = port_forward_url(&mut rt, &pod, 8080).await.unwrap();
    let _ = forward_once(&url, 8080, request).await;
    let again = upgrade(&url).await.expect_err("a used URL is refused");
    assert!(again.starts_with("HTTP/1.1 404"), "{again}");

    // Bad requests are refused by field.
    let err = port_forward_url(&mut rt, "nosuchpod", 80)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = port_forward_url(&mut rt, &pod, 70000).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("port"), "{}", err.message());

    // A host-network pod's ports are the node's: a server of the test's on the node's
    // loopback is reached.
    let node_server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let node_port = node_server.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        if let Ok((mut c, _)) = node_server.accept() {
            let mut got = vec![];
            let _ = c.read_to_end(&mut got);
            let _ = c.write_all(&[b"node heard: ", &got[..]].concat());
        }
    });
    let hcfg = with_namespaces(
        pod_config("pfhost", logs.path().to_str().unwrap()),
        NamespaceMode::Node,
        NamespaceMode::Pod,
        NamespaceMode::Pod,
    );
    let host_pod = run_pod(&mut rt, &hcfg).await;
    let url = port_forward_url(&mut rt, &host_pod, node_port as i32)
        .await
        .unwrap();
    let (body, err) = forward_once(&url, node_port, b"ping").await;
    assert_eq!(err, "");
    assert_eq!(body, b"node heard: ping");

    // Clients that vanish mid-connection leave no descriptor in skiffd.
    let before = open_fds(d.pid());
    for _ in 0..5 {
        let url = port_forward_url(&mut rt, &pod, 8080).await.unwrap();
        let mut c = upgrade(&url).await.unwrap();
        let mut enc = HeaderEncoder::new();
        open_pair(&mut c, &mut enc, 8080, "7").await;
        // Half a request, then gone.
        let f = Frame::Data {
            stream_id: 3,
            flags: 0,
            data: b"GET / HTT".to_vec(),
        };
        c.write_all(&f.encode(&mut enc).unwrap()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(c);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while open_fds(d.pid()) > before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        open_fds(d.pid()) <= before,
        "skiffd holds {} descriptors, {before} before",
        open_fds(d.pid())
    );
}
