//! Talking to OCI distribution registries: which hosts to try (mirrors, then the registry), over
//! which scheme (HTTPS; unverified TLS then plain HTTP for insecure registries), with which
//! credentials (the request's `AuthConfig`), and turning every registry failure into an
//! [`Error`] that names the registry and the reference.
//!
//! The wire protocol (manifest and blob requests, the bearer-token challenge flow) is the
//! `oci-client` crate's. It keeps credentials per client, so a [`Session`] builds fresh clients for
//! each pull: credentials given to one pull never serve another. The one flow it lacks, trading an
//! identity (refresh) token for an access token, is done here with the same HTTP stack.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use skiff_proto::cri::AuthConfig;

use super::reference::ImageRef;
use crate::config::Config;
use crate::error::{Error, Result};

pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const ACCEPTED_MANIFESTS: &[&str] = &[
    MEDIA_OCI_MANIFEST,
    MEDIA_OCI_INDEX,
    MEDIA_DOCKER_MANIFEST,
    MEDIA_DOCKER_LIST,
];

const USER_AGENT: &str = concat!("skiff/", env!("CARGO_PKG_VERSION"));

/// One way of reaching the image: a host (mirror or the registry itself) over one scheme.
struct Endpoint {
    host: String,
    scheme: &'static str,
    client: Client,
    reference: Reference,
    auth: RegistryAuth,
}

/// The credentials of one pull, from the CRI `AuthConfig`.
#[derive(Clone, Default)]
pub struct Credentials {
    basic: Option<(String, String)>,
    identity_token: Option<String>,
    registry_token: Option<String>,
    /// The host the credentials are for, when the request names one.
    server: Option<String>,
}

impl Credentials {
    /// Reads `AuthConfig`: `username`/`password`, or `auth` (base64 of `user:password`), an
    /// `identity_token` (traded for an access token) or a `registry_token` (sent as it is).
    pub fn from_cri(auth: Option<&AuthConfig>) -> Result<Credentials> {
        let Some(a) = auth else {
            return Ok(Credentials::default());
        };
        let mut c = Credentials {
            server: normalize_server(&a.server_address),
            ..Default::default()
        };
        if !a.registry_token.is_empty() {
            if !bearer_ok(&a.registry_token) {
                return Err(Error::InvalidArgument(
                    "auth.registry_token: holds characters an HTTP header cannot carry".into(),
                ));
            }
            c.registry_token = Some(a.registry_token.clone());
        }
        if !a.identity_token.is_empty() {
            c.identity_token = Some(a.identity_token.clone());
        }
        if !a.username.is_empty() || !a.password.is_empty() {
            c.basic = Some((a.username.clone(), a.password.clone()));
        } else if !a.auth.is_empty() {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(a.auth.trim())
                .map_err(|e| Error::InvalidArgument(format!("auth.auth is not base64: {e}")))?;
            let text = String::from_utf8(raw)
                .map_err(|_| Error::InvalidArgument("auth.auth is not UTF-8".into()))?;
            let (u, p) = text.split_once(':').ok_or_else(|| {
                Error::InvalidArgument("auth.auth does not decode to user:password".into())
            })?;
            c.basic = Some((u.to_string(), p.to_string()));
        }
        Ok(c)
    }

    fn applies_to(&self, host: &str) -> bool {
        match &self.server {
            None => true,
            Some(s) => s == host || (is_docker_hub(s) && is_docker_hub(host)),
        }
    }

    fn is_empty(&self) -> bool {
        self.basic.is_none() && self.identity_token.is_none() && self.registry_token.is_none()
    }
}

fn is_docker_hub(host: &str) -> bool {
    matches!(
        host,
        "docker.io" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com"
    )
}

/// `https://index.docker.io/v1/` → `index.docker.io`; empty → None.
fn normalize_server(s: &str) -> Option<String> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    Some(s.split('/').next().unwrap_or(s).to_string())
}

/// What one registry request session needs to reach the image behind one reference.
pub struct Session {
    image: ImageRef,
    endpoints: Vec<Endpoint>,
    /// Index of the endpoint that answered the first manifest request; later requests go there.
    chosen: Option<usize>,
}

/// A manifest as the registry sent it.
pub struct FetchedManifest {
    pub bytes: Bytes,
    pub digest: String,
}

impl Session {
    /// Plans the endpoints for `image`: each configured mirror of its registry, then the registry.
    pub async fn open(cfg: &Config, image: &ImageRef, creds: &Credentials) -> Result<Session> {
        let registry = image.registry().to_string();
        let mut hosts: Vec<String> = cfg
            .registry_mirrors
            .get(&registry)
            .cloned()
            .unwrap_or_default();
        // Docker Hub's name for its API host.
        let origin = if registry == "docker.io" {
            "registry-1.docker.io".to_string()
        } else {
            registry.clone()
        };
        hosts.push(origin.clone());
        let mut endpoints = Vec::new();
        for host in hosts {
            let insecure = cfg.is_insecure(&host) || (host == origin && cfg.is_insecure(&registry));
            let schemes: &[&'static str] = if insecure {
                &["https", "http"]
            } else {
                &["https"]
            };
            for &scheme in schemes {
                let client = new_client(cfg, scheme, &host, insecure)?;
                let reference = Reference::with_tag(
                    host.clone(),
                    image.repository().to_string(),
                    "latest".into(),
                );
                let auth = if creds.applies_to(&host) || creds.applies_to(&registry) {
                    resolve_auth(creds, scheme, &host, image, insecure).await?
                } else {
                    RegistryAuth::Anonymous
                };
                endpoints.push(Endpoint {
                    host: host.clone(),
                    scheme,
                    client,
                    reference,
                    auth,
                });
            }
        }
        Ok(Session {
            image: image.clone(),
            endpoints,
            chosen: None,
        })
    }

    /// Fetches the manifest (or index) named by `tag_or_digest`, trying the endpoints in order
    /// until one answers. A manifest fetched by digest is checked against that digest.
    pub async fn fetch_manifest(&mut self, tag_or_digest: &str) -> Result<FetchedManifest> {
        let order: Vec<usize> = match self.chosen {
            Some(i) => vec![i],
            None => (0..self.endpoints.len()).collect(),
        };
        let mut last: Option<Error> = None;
        for i in order {
            let ep = &self.endpoints[i];
            let r = reference_for(&ep.reference, tag_or_digest);
            match ep
                .client
                .pull_manifest_raw(&r, &ep.auth, ACCEPTED_MANIFESTS)
                .await
            {
                Ok((bytes, digest)) => {
                    let digest = verify_manifest_digest(&bytes, &digest, tag_or_digest)
                        .map_err(|e| e.context(format!("manifest of {}", self.image)))?;
                    self.chosen = Some(i);
                    return Ok(FetchedManifest { bytes, digest });
                }
                Err(e) => {
                    let err = map_error(e, &format!("{}://{}", ep.scheme, ep.host), &self.image);
                    tracing::debug!(endpoint = %ep.host, scheme = ep.scheme, error = %err, "manifest request failed");
                    let is_last_host = self.endpoints[i + 1..].iter().all(|o| o.host == ep.host);
                    // An HTTP answer from the registry itself is final; a mirror that fails, or
                    // a scheme that does not connect, falls through to the next endpoint.
                    let transport = matches!(err, Error::Unavailable(_));
                    last = Some(err);
                    if is_last_host && !transport {
                        break;
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::Internal("no registry endpoint".into())))
    }

    /// Streams the blob `digest` of `size` bytes from the endpoint that served the manifest.
    pub async fn fetch_blob(
        &self,
        digest: &str,
        size: i64,
        media_type: &str,
    ) -> Result<BoxStream<'static, std::io::Result<Bytes>>> {
        let i = self
            .chosen
            .unwrap_or(self.endpoints.len().saturating_sub(1));
        let ep = self
            .endpoints
            .get(i)
            .ok_or_else(|| Error::Internal("no registry endpoint".into()))?;
        let desc = OciDescriptor {
            media_type: media_type.to_string(),
            digest: digest.to_string(),
            size,
            ..Default::default()
        };
        // The client stores credentials on first use; blob requests rely on that.
        ep.client
            .store_auth_if_needed(ep.reference.resolve_registry(), &ep.auth)
            .await;
        let r = reference_for(&ep.reference, digest);
        let stream = ep
            .client
            .pull_blob_stream(&r, &desc)
            .await
            .map_err(|e| map_error(e, &format!("{}://{}", ep.scheme, ep.host), &self.image))
            .map_err(|e| e.context(format!("blob {digest}")))?;
        Ok(stream.stream.boxed())
    }
}

fn reference_for(base: &Reference, tag_or_digest: &str) -> Reference {
    if tag_or_digest.starts_with("sha256:") {
        Reference::with_digest(
            base.registry().to_string(),
            base.repository().to_string(),
            tag_or_digest.to_string(),
        )
    } else {
        Reference::with_tag(
            base.registry().to_string(),
            base.repository().to_string(),
            tag_or_digest.to_string(),
        )
    }
}

fn verify_manifest_digest(bytes: &[u8], reported: &str, requested: &str) -> Result<String> {
    use sha2::{Digest, Sha256};
    let actual = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
    if requested.starts_with("sha256:") && actual != requested {
        return Err(Error::Corrupt(format!(
            "digest mismatch: asked for {requested}, content is {actual}"
        )));
    }
    if reported.starts_with("sha256:") && reported != actual {
        return Err(Error::Corrupt(format!(
            "digest mismatch: registry said {reported}, content is {actual}"
        )));
    }
    Ok(actual)
}

/// Whether `token` can be sent as `Authorization: Bearer <token>` (oci-client would panic on
/// one that cannot).
fn bearer_ok(token: &str) -> bool {
    reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).is_ok()
}

/// Whether an HTTP client with TLS can be made here (probed once): without CA certificates the
/// platform verifier cannot start, and oci-client would panic making its default client.
fn tls_setup() -> &'static std::result::Result<(), String> {
    static PROBE: std::sync::OnceLock<std::result::Result<(), String>> = std::sync::OnceLock::new();
    PROBE.get_or_init(|| {
        reqwest::Client::builder()
            .build()
            .map(|_| ())
            .map_err(|e| format!("{e}: {:?}", std::error::Error::source(&e)))
    })
}

/// A registry client for `host` over `scheme`. Refused by name on a node where TLS cannot be set
/// up (no CA certificates), for every registry: the client library needs it even for plain HTTP.
fn new_client(cfg: &Config, scheme: &str, host: &str, insecure: bool) -> Result<Client> {
    if let Err(why) = tls_setup() {
        return Err(Error::FailedPrecondition(format!(
            "pulling from {host}: TLS cannot be set up on this node ({why}); install CA \
             certificates (Debian: ca-certificates)"
        )));
    }
    let config = |accept_invalid_certificates| ClientConfig {
        protocol: if scheme == "http" {
            ClientProtocol::HttpsExcept(vec![host.to_string()])
        } else {
            ClientProtocol::Https
        },
        accept_invalid_certificates,
        platform_resolver: None,
        connect_timeout: Some(Duration::from_secs(15)),
        // No byte for this long cancels the pull (image_pull_progress_timeout).
        read_timeout: cfg.image_pull_progress_timeout,
        user_agent: USER_AGENT,
        ..Default::default()
    };
    Client::try_from(config(insecure))
        .map_err(|e| Error::Internal(format!("registry client for {host}: {e}")))
}

/// Chooses what `oci-client` gets: basic credentials (it runs the bearer challenge with them), a
/// registry token as it is, or an access token traded for the identity token.
async fn resolve_auth(
    creds: &Credentials,
    scheme: &str,
    host: &str,
    image: &ImageRef,
    insecure: bool,
) -> Result<RegistryAuth> {
    if creds.is_empty() {
        return Ok(RegistryAuth::Anonymous);
    }
    if let Some(t) = &creds.registry_token {
        return Ok(RegistryAuth::Bearer(t.clone()));
    }
    if let Some(t) = &creds.identity_token {
        return match exchange_identity_token(t, scheme, host, image, insecure).await {
            Ok(access) if !bearer_ok(&access) => Err(Error::Unauthenticated(format!(
                "registry {host}: the access token it gave for the identity token holds \
                 characters an HTTP header cannot carry"
            ))),
            Ok(access) => Ok(RegistryAuth::Bearer(access)),
            // The host may simply be unreachable over this scheme; the pull reports that.
            Err(Error::Unavailable(m)) => {
                tracing::debug!(host, "identity token exchange: {m}");
                Ok(RegistryAuth::Anonymous)
            }
            Err(e) => Err(e),
        };
    }
    match &creds.basic {
        Some((u, p)) => Ok(RegistryAuth::Basic(u.clone(), p.clone())),
        None => Ok(RegistryAuth::Anonymous),
    }
}

/// Docker's OAuth2 flow for identity tokens: read the bearer challenge at `/v2/`, then POST
/// `grant_type=refresh_token` to its realm and use the access token that comes back.
async fn exchange_identity_token(
    refresh: &str,
    scheme: &str,
    host: &str,
    image: &ImageRef,
    insecure: bool,
) -> Result<String> {
    let http = reqwest::Client::builder()
        .danger_accept_invalid_certs(insecure)
        .connect_timeout(Duration::from_secs(15))
        .timeout(Duration::from_secs(60))
        .user_agent(USER_AGENT)
        .build()
        .map_err(|e| Error::Internal(format!("http client: {e}")))?;
    let ping = http
        .get(format!("{scheme}://{host}/v2/"))
        .send()
        .await
        .map_err(|e| Error::Unavailable(format!("registry {host}: {e}")))?;
    let challenge = ping
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .map(parse_bearer_challenge)
        .ok_or_else(|| {
            Error::Unauthenticated(format!(
                "registry {host} sent no bearer challenge to trade the identity token at"
            ))
        })?;
    let realm = challenge.get("realm").ok_or_else(|| {
        Error::Unauthenticated(format!("registry {host}: bearer challenge without realm"))
    })?;
    let scope = format!("repository:{}:pull", image.repository());
    let mut form = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh),
        ("client_id", "skiff"),
        ("scope", scope.as_str()),
    ];
    if let Some(s) = challenge.get("service") {
        form.push(("service", s.as_str()));
    }
    let resp = http
        .post(realm.as_str())
        .form(&form)
        .send()
        .await
        .map_err(|e| Error::Unavailable(format!("token server {realm}: {e}")))?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        return Err(Error::Unauthenticated(format!(
            "token server {realm} refused the identity token ({status}): {}",
            body.trim()
        )));
    }
    let body: serde_json::Value = resp
        .json()
        .await
        .map_err(|e| Error::Unauthenticated(format!("token server {realm}: bad answer: {e}")))?;
    body.get("access_token")
        .or_else(|| body.get("token"))
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .ok_or_else(|| {
            Error::Unauthenticated(format!("token server {realm}: answer has no access_token"))
        })
}

/// Parses `Bearer realm="…",service="…",scope="…"` into its parameters.
pub fn parse_bearer_challenge(header: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let Some(rest) = header
        .trim()
        .strip_prefix("Bearer ")
        .or_else(|| header.trim().strip_prefix("bearer "))
    else {
        return out;
    };
    let mut s = rest.trim();
    while !s.is_empty() {
        let Some(eq) = s.find('=') else { break };
        let key = s[..eq].trim().trim_start_matches(',').trim().to_lowercase();
        s = &s[eq + 1..];
        let value;
        if let Some(q) = s.strip_prefix('"') {
            let end = q.find('"').unwrap_or(q.len());
            value = q[..end].to_string();
            s = q.get(end + 1..).unwrap_or("");
        } else {
            let end = s.find(',').unwrap_or(s.len());
            value = s[..end].trim().to_string();
            s = &s[end..];
        }
        s = s.trim_start_matches([',', ' ']);
        out.insert(key, value);
    }
    out
}

/// Turns an `oci-client` failure into an [`Error`] of the right kind, naming the endpoint and
/// the reference.
fn map_error(e: OciDistributionError, endpoint: &str, image: &ImageRef) -> Error {
    use OciDistributionError as E;
    let at = format!("pulling {image} from {endpoint}");
    match e {
        E::AuthenticationFailure(m) => {
            Error::Unauthenticated(format!("{at}: authentication failed: {}", m.trim()))
        }
        E::UnauthorizedError { .. } => Error::Unauthenticated(format!(
            "{at}: the registry refused access (401 Unauthorized): wrong or missing credentials"
        )),
        E::ImageManifestNotFoundError(m) => Error::NotFound(format!("{at}: not found: {m}")),
        E::RegistryError { envelope, .. } => {
            let codes: Vec<String> = envelope
                .errors
                .iter()
                .map(|e| format!("{:?}: {}", e.code, e.message))
                .collect();
            let text = codes.join("; ");
            let not_found = envelope.errors.iter().any(|e| {
                use oci_client::errors::OciErrorCode as C;
                matches!(
                    e.code,
                    C::ManifestUnknown | C::NameUnknown | C::BlobUnknown | C::NotFound
                )
            });
            let denied = envelope.errors.iter().any(|e| {
                use oci_client::errors::OciErrorCode as C;
                matches!(e.code, C::Unauthorized | C::Denied)
            });
            if not_found {
                Error::NotFound(format!("{at}: not found: {text}"))
            } else if denied {
                Error::Unauthenticated(format!("{at}: access denied: {text}"))
            } else {
                Error::Unavailable(format!("{at}: registry error: {text}"))
            }
        }
        E::ServerError { code, message, .. } => {
            let msg = format!("{at}: HTTP {code}: {}", message.trim());
            match code {
                404 => Error::NotFound(msg),
                401 | 403 => Error::Unauthenticated(msg),
                _ => Error::Unavailable(msg),
            }
        }
        E::RequestError(r) => {
            let mut text = r.to_string();
            let mut src = std::error::Error::source(&r);
            while let Some(s) = src {
                text.push_str(": ");
                text.push_str(&s.to_string());
                src = s.source();
            }
            Error::Unavailable(format!("{at}: {text}"))
        }
        E::DigestError(d) => Error::Corrupt(format!("{at}: {d}")),
        E::UnsupportedMediaTypeError(m) => {
            Error::Unsupported(format!("{at}: unsupported manifest media type {m}"))
        }
        E::UnsupportedSchemaVersionError(v) => Error::Unsupported(format!(
            "{at}: manifest schema version {v} is not supported (only schema 2 and OCI)"
        )),
        other => Error::Unavailable(format!("{at}: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_parse() {
        let c = parse_bearer_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
        );
        assert_eq!(c["realm"], "https://auth.example/token");
        assert_eq!(c["service"], "registry.example");
        assert_eq!(c["scope"], "repository:a/b:pull");
        assert!(parse_bearer_challenge("Basic realm=x").is_empty());
    }

    #[test]
    fn auth_config_credentials() {
        let c = Credentials::from_cri(Some(&AuthConfig {
            auth: base64::engine::general_purpose::STANDARD.encode("u:p:w"),
            server_address: "https://index.docker.io/v1/".into(),
            ..Default::default()
        }))
        .unwrap();
        assert_eq!(c.basic, Some(("u".into(), "p:w".into())));
        assert!(c.applies_to("registry-1.docker.io"));
        assert!(!c.applies_to("quay.io"));
        let err = Credentials::from_cri(Some(&AuthConfig {
            auth: "!!!".into(),
            ..Default::default()
        }))
        .err()
        .unwrap();
        assert!(err.to_string().contains("auth.auth"));
    }

    #[test]
    fn manifest_digest_is_checked() {
        let body = b"{}";
        let good = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
        assert_eq!(verify_manifest_digest(body, "", good).unwrap(), good);
        let bad = format!("sha256:{}", "0".repeat(64));
        assert!(matches!(
            verify_manifest_digest(body, "", &bad),
            Err(Error::Corrupt(_))
        ));
    }
}
