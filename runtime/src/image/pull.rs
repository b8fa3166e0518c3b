//! PullImage: resolve the reference to a platform manifest, fetch the config, download and unpack
//! the layers concurrently (each at most once, however many pulls want it), then record the image.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use futures_util::StreamExt;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use skiff_proto::cri::AuthConfig;

use super::layer::{unpack_stream, LayerSpec};
use super::reference::{check_digest, ImageRef};
use super::registry::{
    Credentials, Session, MEDIA_DOCKER_LIST, MEDIA_DOCKER_MANIFEST, MEDIA_OCI_INDEX,
    MEDIA_OCI_MANIFEST,
};
use super::store::ImageRecord;
use super::unpack::UnpackStats;
use super::Images;
use crate::error::{Error, Result};

#[derive(Debug, Deserialize)]
struct Platform {
    architecture: String,
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    size: i64,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    #[serde(rename = "schemaVersion")]
    schema_version: i64,
    #[serde(rename = "mediaType", default)]
    media_type: String,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// Layer media types skiff unpacks (tar, gzip- or zstd-compressed, OCI or Docker).
fn is_layer_type(m: &str) -> bool {
    m.starts_with("application/vnd.oci.image.layer.")
        || m.starts_with("application/vnd.docker.image.rootfs.")
}

/// This host's platform in OCI terms.
pub fn host_platform() -> (&'static str, Option<&'static str>) {
    match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "aarch64" => ("arm64", Some("v8")),
        "arm" => ("arm", Some("v7")),
        "x86" => ("386", None),
        "powerpc64" => ("ppc64le", None),
        "s390x" => ("s390x", None),
        "riscv64" => ("riscv64", None),
        other => (other, None),
    }
}

/// Picks the manifest for this host from an index: os `linux`, the host's architecture, and its
/// variant when the index distinguishes variants.
fn choose_platform<'a>(image: &ImageRef, entries: &'a [Descriptor]) -> Result<&'a Descriptor> {
    let (arch, variant) = host_platform();
    let candidates: Vec<&Descriptor> = entries
        .iter()
        .filter(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == arch)
        })
        .collect();
    let exact = candidates.iter().find(|d| {
        let v = d.platform.as_ref().and_then(|p| p.variant.as_deref());
        v.is_none() || v == variant
    });
    match exact.or(candidates.first()) {
        Some(d) => Ok(d),
        None => {
            let offered: Vec<String> = entries
                .iter()
                .filter_map(|d| d.platform.as_ref())
                .map(|p| match &p.variant {
                    Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                    None => format!("{}/{}", p.os, p.architecture),
                })
                .collect();
            Err(Error::NotFound(format!(
                "image {image} has no manifest for linux/{arch} (it offers: {})",
                offered.join(", ")
            )))
        }
    }
}

fn parse_manifest(image: &ImageRef, bytes: &[u8]) -> Result<Manifest> {
    let m: Manifest = serde_json::from_slice(bytes).map_err(|e| {
        Error::Unsupported(format!(
            "manifest of {image} is not a valid image manifest: {e}"
        ))
    })?;
    if m.schema_version != 2 {
        return Err(Error::Unsupported(format!(
            "manifest of {image} has schema version {} (only Docker schema 2 and OCI are supported)",
            m.schema_version
        )));
    }
    Ok(m)
}

/// What a pull decides from a manifest's bytes alone, for fuzzing: it parses, and for an
/// index, the entry for this host is chosen and its digest checked.
pub fn check_manifest(image: &ImageRef, bytes: &[u8]) -> Result<()> {
    let m = parse_manifest(image, bytes)?;
    if let Some(entries) = m.manifests.as_deref() {
        let chosen = choose_platform(image, entries)?;
        check_digest(&chosen.digest).map_err(Error::Unsupported)?;
    }
    Ok(())
}

/// Chain ids as the OCI image spec defines them: ChainID(L0) = DiffID(L0),
/// ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln)).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{prev} {d}").as_bytes()))
            ),
        };
        out.push(next);
    }
    out
}

impl Images {
    /// Pulls `reference` with the request's credentials and returns the recorded image.
    pub async fn pull(&self, reference: &str, auth: Option<&AuthConfig>) -> Result<ImageRecord> {
        let started = Instant::now();
        let image = ImageRef::parse(reference)?;
        let creds = Credentials::from_cri(auth)?;
        let mut session = Session::open(&self.cfg, &image, &creds).await?;

        let top = session.fetch_manifest(image.tag_or_digest()).await?;
        let top_manifest = parse_manifest(&image, &top.bytes)?;
        let is_index = top_manifest.manifests.is_some()
            || top_manifest.media_type == MEDIA_OCI_INDEX
            || top_manifest.media_type == MEDIA_DOCKER_LIST;
        let mut keep_blobs = vec![(top.digest.clone(), top.bytes.clone())];
        let (manifest, manifest_digest) = if is_index {
            let entries = top_manifest.manifests.as_deref().unwrap_or(&[]);
            let chosen = choose_platform(&image, entries)?;
            check_digest(&chosen.digest)
                .map_err(|m| Error::Unsupported(format!("index of {image}: {m}")))?;
            let child = session.fetch_manifest(&chosen.digest).await?;
            let m = parse_manifest(&image, &child.bytes)?;
            keep_blobs.push((child.digest.clone(), child.bytes.clone()));
            (m, child.digest)
        } else {
            (top_manifest, top.digest.clone())
        };
        if !manifest.media_type.is_empty()
            && manifest.media_type != MEDIA_OCI_MANIFEST
            && manifest.media_type != MEDIA_DOCKER_MANIFEST
        {
            return Err(Error::Unsupported(format!(
                "{image}: manifest {manifest_digest} has media type {}, not an image manifest",
                manifest.media_type
            )));
        }
        let config_desc = manifest.config.as_ref().ok_or_else(|| {
            Error::Unsupported(format!("{image}: manifest {manifest_digest} has no config"))
        })?;
        check_digest(&config_desc.digest)
            .map_err(|m| Error::Unsupported(format!("{image}: config: {m}")))?;
        for l in &manifest.layers {
            check_digest(&l.digest)
                .map_err(|m| Error::Unsupported(format!("{image}: layer: {m}")))?;
            if !is_layer_type(&l.media_type) {
                return Err(Error::Unsupported(format!(
                    "{image}: layer {} has media type {:?}, not a container image layer",
                    l.digest, l.media_type
                )));
            }
            if l.size < 0 {
                return Err(Error::Corrupt(format!(
                    "{image}: layer {} has a negative size",
                    l.digest
                )));
            }
        }

        let config_bytes = self.fetch_config(&session, &image, config_desc).await?;
        let config: serde_json::Value = serde_json::from_slice(&config_bytes).map_err(|e| {
            Error::Corrupt(format!(
                "{image}: config {} is not JSON: {e}",
                config_desc.digest
            ))
        })?;
        let diff_ids: Vec<String> = config
            .pointer("/rootfs/diff_ids")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if diff_ids.len() != manifest.layers.len() {
            return Err(Error::Corrupt(format!(
                "{image}: config lists {} diff ids for {} layers",
                diff_ids.len(),
                manifest.layers.len()
            )));
        }
        for d in &diff_ids {
            check_digest(d).map_err(|m| Error::Unsupported(format!("{image}: diff id: {m}")))?;
        }
        let chains = chain_ids(&diff_ids);
        keep_blobs.push((config_desc.digest.clone(), config_bytes.clone().into()));

        // Nothing this pull uses may be collected by a concurrent RemoveImage.
        let _pin = self.store.pin(
            chains
                .iter()
                .cloned()
                .chain(keep_blobs.iter().map(|(d, _)| d.clone())),
        );
        let specs: Vec<(LayerSpec, String, String)> = manifest
            .layers
            .iter()
            .zip(diff_ids.iter())
            .zip(chains.iter())
            .map(|((l, diff), chain)| {
                let spec = LayerSpec {
                    digest: l.digest.clone(),
                    size: l.size as u64,
                    diff_id: diff.clone(),
                    limits: self.cfg.layer_limits,
                };
                (spec, chain.clone(), l.media_type.clone())
            })
            .collect();
        let (session_ref, image_ref) = (&session, &image);
        let cancel = AtomicBool::new(false);
        let first_error: Mutex<Option<Error>> = Mutex::new(None);
        let jobs: Vec<_> = specs
            .into_iter()
            .map(|(spec, chain, media_type)| {
                let (cancel, first_error) = (&cancel, &first_error);
                async move {
                    let r = self
                        .ensure_layer(session_ref, image_ref, spec, chain, media_type, cancel)
                        .await;
                    if let Err(e) = r {
                        // The first failure stops the other downloads; their own (cancelled)
                        // failures are not the story.
                        if !cancel.swap(true, Ordering::Relaxed) {
                            *first_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        }
                    }
                }
            })
            .collect();
        // Every layer job runs to its end (cleaned up) before the pull answers.
        futures_util::stream::iter(jobs)
            .buffer_unordered(self.cfg.max_concurrent_downloads)
            .collect::<Vec<()>>()
            .await;
        if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }

        for (d, b) in &keep_blobs {
            let store = self.store.clone();
            let (d, b) = (d.clone(), b.clone());
            tokio::task::spawn_blocking(move || store.write_blob(&d, &b))
                .await
                .map_err(|e| Error::Internal(format!("blob write task: {e}")))??;
        }
        let user = config
            .pointer("/config/User")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        let size = config_desc.size.max(0) as u64
            + manifest.layers.iter().map(|l| l.size as u64).sum::<u64>();
        let rec = ImageRecord {
            id: config_desc.digest.clone(),
            repo_tags: vec![],
            repo_digests: vec![],
            manifest_digest: manifest_digest.clone(),
            blobs: keep_blobs.iter().map(|(d, _)| d.clone()).collect(),
            chain_ids: chains,
            size,
            user,
            annotations: manifest.annotations.clone(),
        };
        let store = self.store.clone();
        let tag = image.tagged_name();
        let repo_digest = image.digested_name(&top.digest);
        let rec = tokio::task::spawn_blocking(move || store.commit_image(rec, tag, repo_digest))
            .await
            .map_err(|e| Error::Internal(format!("image record task: {e}")))??;
        tracing::info!(image = %image, id = %rec.id, elapsed_ms = started.elapsed().as_millis() as u64, "pulled image");
        Ok(rec)
    }

    async fn fetch_config(
        &self,
        session: &Session,
        image: &ImageRef,
        desc: &Descriptor,
    ) -> Result<Vec<u8>> {
        if let Some(b) = self.store.read_blob(&desc.digest)? {
            return Ok(b);
        }
        const MAX_CONFIG: i64 = 8 << 20;
        if desc.size > MAX_CONFIG || desc.size < 0 {
            return Err(Error::Unsupported(format!(
                "{image}: config {} is {} bytes, over the {MAX_CONFIG} bytes skiff accepts",
                desc.digest, desc.size
            )));
        }
        let mut stream = session
            .fetch_blob(&desc.digest, desc.size, &desc.media_type)
            .await?;
        let mut buf = Vec::with_capacity(desc.size as usize);
        // A stream that fails (the client's own digest check, a cut connection) ends the read;
        // what arrived is then checked against the descriptor, which names what is wrong.
        let mut stream_error = None;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => {
                    buf.extend_from_slice(&c);
                    if buf.len() as i64 > desc.size {
                        break;
                    }
                }
                Err(e) => {
                    tracing::debug!("config stream ended with: {e}");
                    stream_error = Some(e);
                    break;
                }
            }
        }
        let actual = format!("sha256:{}", hex::encode(Sha256::digest(&buf)));
        if buf.len() as i64 != desc.size || actual != desc.digest {
            let why = match (&stream_error, buf.len() as i64) {
                (Some(e), n) if n < desc.size => format!(" (the download failed: {e})"),
                _ => String::new(),
            };
            return Err(Error::Corrupt(format!(
                "{image}: config blob {}: got {} bytes with digest {actual}, expected {} bytes{why}",
                desc.digest,
                buf.len(),
                desc.size
            )));
        }
        Ok(buf)
    }

    /// Makes sure the layer `chain` is unpacked, downloading it unless it already is. Concurrent
    /// pulls that need the same layer wait for the one that fetches it.
    async fn ensure_layer(
        &self,
        session: &Session,
        image: &ImageRef,
        spec: LayerSpec,
        chain: String,
        media_type: String,
        cancel: &AtomicBool,
    ) -> Result<()> {
        let lock = self.store.layer_lock(&chain);
        let _held = lock.lock().await;
        if self.store.has_layer(&chain) || cancel.load(Ordering::Relaxed) {
            return Ok(());
        }
        let stream = session
            .fetch_blob(&spec.digest, spec.size as i64, &media_type)
            .await
            .map_err(|e| e.context(format!("pulling {image}")))?;
        let t = Instant::now();
        let tmp = self.store.new_layer_tmp(&chain)?;
        let store = self.store.clone();
        let (tmp2, chain2) = (tmp.clone(), chain.clone());
        // Runs on the unpacking thread, whether or not this future is still awaited.
        let finish = move |unpacked: Result<UnpackStats>| {
            let committed = unpacked.and_then(|s| store.commit_layer(&tmp2, &chain2).map(|_| s));
            if committed.is_err() {
                if let Err(e) = crate::store::remove_durably(&tmp2) {
                    tracing::warn!(dir = %tmp2.display(), error = %e, "removing failed layer");
                }
            }
            committed
        };
        let stats = unpack_stream(stream, spec.clone(), &tmp, cancel, finish)
            .await
            .map_err(|e| e.context(format!("pulling {image}")))?;
        tracing::debug!(layer = %spec.digest, entries = stats.entries, bytes = stats.bytes,
            ms = t.elapsed().as_millis() as u64, "unpacked layer");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let c = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(c[0], a);
        let want = hex::encode(Sha256::digest(format!("{a} {b}").as_bytes()));
        assert_eq!(c[1], format!("sha256:{want}"));
    }

    #[test]
    fn platform_is_chosen_or_named_in_the_error() {
        let image = ImageRef::parse("x").unwrap();
        let (arch, _) = host_platform();
        let entries: Vec<Descriptor> = serde_json::from_value(serde_json::json!([
            {"mediaType": MEDIA_OCI_MANIFEST, "digest": "sha256:1", "size": 1,
             "platform": {"os": "linux", "architecture": "s390x-other"}},
            {"mediaType": MEDIA_OCI_MANIFEST, "digest": "sha256:2", "size": 1,
             "platform": {"os": "linux", "architecture": arch}},
        ]))
        .unwrap();
        assert_eq!(
            choose_platform(&image, &entries).unwrap().digest,
            "sha256:2"
        );
        let err = choose_platform(&image, &entries[..1]).unwrap_err();
        assert!(err.to_string().contains("linux/s390x-other"), "{err}");
    }
}
