//! A registry that serves whatever bytes a test gives it: manifests and indexes that no real
//! registry would store (not JSON, lying digests, nested indexes, absurd sizes), and blobs
//! whose content does not match their digest. Plain HTTP on 127.0.0.1, one connection per
//! request (`Connection: close`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// One canned answer.
#[derive(Clone)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
    /// The `Docker-Content-Digest` header; the body's sha256 when `None`.
    pub digest: Option<String>,
    /// Send only this many bytes of the body, then nothing more for an hour (a stalled
    /// download).
    pub stall_after: Option<usize>,
}

impl Answer {
    pub fn ok(content_type: &str, body: impl Into<Vec<u8>>) -> Answer {
        Answer {
            status: 200,
            content_type: content_type.into(),
            body: body.into(),
            digest: None,
            stall_after: None,
        }
    }
}

pub fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

pub struct RawRegistry {
    pub host: String,
    routes: Arc<Mutex<HashMap<String, Answer>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RawRegistry {
    /// Serves `/v2/` and whatever [`RawRegistry::set`] puts at a path; 404 elsewhere.
    pub async fn start() -> RawRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let host = listener.local_addr().expect("addr").to_string();
        let routes: Arc<Mutex<HashMap<String, Answer>>> = Arc::default();
        let r = routes.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let routes = r.clone();
                tokio::spawn(async move {
                    // A TLS client hello (a client trying https first) is closed at once, as
                    // a plain-HTTP registry's refusal would be.
                    let mut first = [0u8; 1];
                    if matches!(sock.peek(&mut first).await, Ok(1)) && first[0] == 0x16 {
                        return;
                    }
                    let Some((method, target, _, _)) = crate::token::read_request(&mut sock).await
                    else {
                        return;
                    };
                    let path = target.split('?').next().unwrap_or("").to_string();
                    let answer = if path == "/v2/" || path == "/v2" {
                        Some(Answer::ok("application/json", "{}"))
                    } else {
                        routes.lock().unwrap().get(&path).cloned()
                    };
                    let a = answer.unwrap_or(Answer {
                        status: 404,
                        content_type: "application/json".into(),
                        body: br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"not here"}]}"#
                            .to_vec(),
                        digest: Some(String::new()),
                        stall_after: None,
                    });
                    let digest = a.digest.clone().unwrap_or_else(|| sha256(&a.body));
                    let mut head = format!(
                        "HTTP/1.1 {} X\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
                        a.status,
                        a.content_type,
                        a.body.len()
                    );
                    if !digest.is_empty() {
                        head.push_str(&format!("Docker-Content-Digest: {digest}\r\n"));
                    }
                    head.push_str("\r\n");
                    let _ = sock.write_all(head.as_bytes()).await;
                    if method != "HEAD" {
                        let n = a.stall_after.unwrap_or(a.body.len()).min(a.body.len());
                        let _ = sock.write_all(&a.body[..n]).await;
                        if n < a.body.len() {
                            tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                        }
                    }
                    let _ = sock.shutdown().await;
                });
            }
        });
        RawRegistry { host, routes, task }
    }

    /// Answers GET and HEAD of `/v2/<repo>/manifests/<reference>`.
    pub fn manifest(&self, repo: &str, reference: &str, a: Answer) {
        self.set(&format!("/v2/{repo}/manifests/{reference}"), a);
    }

    /// Answers GET and HEAD of `/v2/<repo>/blobs/<digest>`.
    pub fn blob(&self, repo: &str, digest: &str, a: Answer) {
        self.set(&format!("/v2/{repo}/blobs/{digest}"), a);
    }

    pub fn set(&self, path: &str, a: Answer) {
        self.routes.lock().unwrap().insert(path.to_string(), a);
    }
}

impl Drop for RawRegistry {
    fn drop(&mut self) {
        self.task.abort();
    }
}
