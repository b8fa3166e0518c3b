//! A token server for registries with bearer-token auth: it checks basic credentials (GET) or a
//! refresh token (POST, the identity-token flow) and issues ES256 JWTs the registry trusts
//! through its `rootcertbundle` (the signing certificate travels in the `x5c` header).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub const SERVICE: &str = "skiff-test-registry";
pub const ISSUER: &str = "skiff-test-issuer";

pub struct TokenServer {
    pub realm: String,
    pub cert_pem: PathBuf,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

struct Issuer {
    key: jsonwebtoken::EncodingKey,
    cert_der_b64: String,
    user: String,
    password: String,
    refresh_token: String,
}

impl TokenServer {
    /// Serves `/token` on 127.0.0.1: basic `user`/`password`, or `refresh_token` by POST.
    pub async fn start(user: &str, password: &str, refresh_token: &str) -> TokenServer {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let cert = rcgen::CertificateParams::new(vec!["skiff-token-issuer".to_string()])
            .expect("cert params")
            .self_signed(&key)
            .expect("self-signed cert");
        let dir = tempfile::tempdir().expect("token dir");
        let cert_pem = dir.path().join("issuer.pem");
        std::fs::write(&cert_pem, cert.pem()).expect("write cert");
        let issuer = Arc::new(Issuer {
            key: jsonwebtoken::EncodingKey::from_ec_pem(key.serialize_pem().as_bytes())
                .expect("encoding key"),
            cert_der_b64: base64::engine::general_purpose::STANDARD.encode(cert.der()),
            user: user.into(),
            password: password.into(),
            refresh_token: refresh_token.into(),
        });
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind token server");
        let realm = format!("http://{}/token", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let issuer = issuer.clone();
                tokio::spawn(async move {
                    let Some((method, target, headers, body)) = read_request(&mut sock).await
                    else {
                        return;
                    };
                    let (status, body) = issuer.answer(&method, &target, &headers, &body);
                    let resp = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                });
            }
        });
        TokenServer {
            realm,
            cert_pem,
            _dir: dir,
            task,
        }
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn query(s: &str) -> HashMap<String, String> {
    s.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), percent_decode(v)))
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(h, 16).unwrap_or(b'?'));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Issuer {
    fn answer(
        &self,
        method: &str,
        target: &str,
        headers: &HashMap<String, String>,
        body: &[u8],
    ) -> (&'static str, String) {
        let (path, q) = target.split_once('?').unwrap_or((target, ""));
        if path != "/token" {
            return ("404 Not Found", "{}".into());
        }
        let params = if method == "POST" {
            query(&String::from_utf8_lossy(body))
        } else {
            query(q)
        };
        let allowed = if method == "POST" {
            params.get("grant_type").map(String::as_str) == Some("refresh_token")
                && params.get("refresh_token") == Some(&self.refresh_token)
        } else {
            let want = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", self.user, self.password));
            headers.get("authorization") == Some(&format!("Basic {want}"))
        };
        if !allowed {
            return (
                "401 Unauthorized",
                r#"{"details":"bad credentials"}"#.into(),
            );
        }
        let scope = params.get("scope").cloned().unwrap_or_default();
        let access: Vec<serde_json::Value> = scope
            .split(' ')
            .filter_map(|s| {
                let mut parts = s.splitn(3, ':');
                let (t, n, a) = (parts.next()?, parts.next()?, parts.next()?);
                Some(serde_json::json!({"type": t, "name": n, "actions": a.split(',').collect::<Vec<_>>()}))
            })
            .collect();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let claims = serde_json::json!({
            "iss": ISSUER, "sub": self.user, "aud": SERVICE,
            "exp": now + 300, "nbf": now - 10, "iat": now - 10,
            "jti": format!("{now}-{}", access.len()), "access": access,
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.x5c = Some(vec![self.cert_der_b64.clone()]);
        let token = jsonwebtoken::encode(&header, &claims, &self.key).expect("sign token");
        let body = serde_json::json!({"token": token, "access_token": token, "expires_in": 300});
        ("200 OK", body.to_string())
    }
}

/// An HTTP/1.1 request as read: method, target, headers (lower-cased names), body.
pub(crate) type Request = (String, String, HashMap<String, String>, Vec<u8>);

pub(crate) async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let target = first.next()?.to_string();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((method, target, headers, body))
}
