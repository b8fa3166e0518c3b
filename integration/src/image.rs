//! Building test images from Debian's busybox-static and pushing them to a test registry with
//! the distribution API (monolithic blob uploads, manifest and index PUTs).

use std::io::Write;

use sha2::{Digest, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// `len` bytes that gzip barely shrinks (a multiplicative hash of the index, shifted right by
/// `shift`; different shifts give different data), for layers whose size must survive compression.
pub fn noise(len: usize, shift: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2654435761) >> shift) as u8)
        .collect()
}

/// Writes tar layers entry by entry, with full control of owners, modes, times and xattrs.
pub struct Layer {
    b: tar::Builder<Vec<u8>>,
}

impl Default for Layer {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer {
    pub fn new() -> Layer {
        Layer {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: tar::EntryType, mode: u32, uid: u64, gid: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(1_600_000_000);
        h.set_size(0);
        h
    }

    pub fn dir(mut self, path: &str, mode: u32) -> Self {
        let mut h = Self::header(tar::EntryType::Directory, mode, 0, 0);
        self.b.append_data(&mut h, path, &[][..]).expect("tar dir");
        self
    }

    pub fn file(self, path: &str, data: &[u8], mode: u32) -> Self {
        self.file_owned(path, data, mode, 0, 0, 1_600_000_000)
    }

    pub fn file_owned(
        mut self,
        path: &str,
        data: &[u8],
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
    ) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, mode, uid, gid);
        h.set_mtime(mtime);
        h.set_size(data.len() as u64);
        self.b.append_data(&mut h, path, data).expect("tar file");
        self
    }

    /// A file carrying an xattr, as a PAX `SCHILY.xattr.` record.
    pub fn file_with_xattr(mut self, path: &str, data: &[u8], name: &str, value: &[u8]) -> Self {
        let key = format!("SCHILY.xattr.{name}");
        self.b
            .append_pax_extensions([(key.as_str(), value)])
            .expect("pax");
        let mut h = Self::header(tar::EntryType::Regular, 0o644, 0, 0);
        h.set_size(data.len() as u64);
        self.b.append_data(&mut h, path, data).expect("tar file");
        self
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0, 0);
        self.b
            .append_link(&mut h, path, target)
            .expect("tar symlink");
        self
    }

    pub fn hardlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Link, 0o644, 0, 0);
        self.b
            .append_link(&mut h, path, target)
            .expect("tar hardlink");
        self
    }

    pub fn char_device(mut self, path: &str, major: u32, minor: u32, mode: u32) -> Self {
        let mut h = Self::header(tar::EntryType::Char, mode, 0, 0);
        h.set_device_major(major).expect("major");
        h.set_device_minor(minor).expect("minor");
        self.b
            .append_data(&mut h, path, &[][..])
            .expect("tar char dev");
        self
    }

    /// busybox-static as `/bin/busybox` with `/bin/sh` and a few applets linked to it.
    pub fn busybox() -> Layer {
        let bin = std::fs::read("/bin/busybox")
            .expect("/bin/busybox missing: install Debian's busybox-static");
        let mut l = Layer::new()
            .dir("bin", 0o755)
            .file("bin/busybox", &bin, 0o755)
            .dir("etc", 0o755)
            .file(
                "etc/passwd",
                b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\napp:x:1000:1000::/home/app:/bin/sh\n",
                0o644,
            )
            .file(
                "etc/group",
                b"root:x:0:\nnogroup:x:65534:\napp:x:1000:\nextra:x:2000:app\n",
                0o644,
            )
            .dir("tmp", 0o1777);
        for applet in [
            "sh", "ls", "cat", "echo", "sleep", "id", "env", "true", "false",
        ] {
            l = l.symlink(&format!("bin/{applet}"), "busybox");
        }
        l
    }

    /// `/bin/sysprobe` (integration/probes/sysprobe.c, built static once per test process) with
    /// busybox's `chmod`, `touch` and `grep` applets: a layer to stack on [`Layer::busybox`].
    pub fn sysprobe() -> Layer {
        static PROBE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let bin = PROBE.get_or_init(|| {
            let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("probes/sysprobe.c");
            let out = tempfile::tempdir().expect("probe dir");
            let exe = out.path().join("sysprobe");
            let st = std::process::Command::new("cc")
                .args(["-static", "-O2", "-o"])
                .arg(&exe)
                .arg(&src)
                .status()
                .expect("cc: install build-essential");
            assert!(st.success(), "building {}", src.display());
            std::fs::read(&exe).expect("built probe")
        });
        let mut l = Layer::new()
            .dir("bin", 0o755)
            .file("bin/sysprobe", bin, 0o755);
        for applet in ["chmod", "touch", "grep"] {
            l = l.symlink(&format!("bin/{applet}"), "busybox");
        }
        l
    }

    /// An entry exactly as given, with none of the tar crate's checks on its name or link
    /// (`..`, absolute paths): what a hostile image carries. `name` and `link` must fit the
    /// 100-byte ustar fields.
    pub fn raw(mut self, kind: tar::EntryType, name: &[u8], link: &[u8], data: &[u8]) -> Self {
        let mut h = Self::header(kind, 0o644, 0, 0);
        {
            let old = h.as_old_mut();
            old.name = [0; 100];
            old.name[..name.len()].copy_from_slice(name);
            old.linkname = [0; 100];
            old.linkname[..link.len()].copy_from_slice(link);
        }
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.b.append(&h, data).expect("tar raw entry");
        self
    }

    /// A GNU sparse file (type 'S') of `real_size` bytes whose only data are `segments`
    /// (offset, bytes; in order, each but the last a multiple of 512 bytes long); everything
    /// else is a hole. Sizes past what octal holds are written in base-256, as GNU tar does.
    pub fn sparse(mut self, path: &str, real_size: u64, segments: &[(u64, &[u8])]) -> Self {
        assert!(segments.len() <= 4, "one header holds four segments");
        fn num12(v: u64) -> [u8; 12] {
            let mut out = [0u8; 12];
            if v < 8u64.pow(11) {
                out[..11].copy_from_slice(format!("{v:011o}").as_bytes());
            } else {
                out[0] = 0x80;
                out[4..].copy_from_slice(&v.to_be_bytes());
            }
            out
        }
        let mut h = Self::header(tar::EntryType::GNUSparse, 0o644, 0, 0);
        let data: Vec<u8> = segments
            .iter()
            .flat_map(|(_, d)| d.iter().copied())
            .collect();
        {
            let gnu = h.as_gnu_mut().expect("a GNU header");
            gnu.name = [0; 100];
            gnu.name[..path.len()].copy_from_slice(path.as_bytes());
            for (slot, (off, d)) in gnu.sparse.iter_mut().zip(segments) {
                slot.offset = num12(*off);
                slot.numbytes = num12(d.len() as u64);
            }
            gnu.realsize = num12(real_size);
        }
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.b.append(&h, &data[..]).expect("tar sparse entry");
        self
    }

    pub fn into_tar(self) -> Vec<u8> {
        self.b.into_inner().expect("tar finish")
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Compression {
    Gzip,
    Zstd,
    None,
}

fn compress(tar: &[u8], c: Compression) -> Vec<u8> {
    match c {
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar).expect("gzip");
            e.finish().expect("gzip")
        }
        Compression::Zstd => zstd::encode_all(tar, 3).expect("zstd"),
        Compression::None => tar.to_vec(),
    }
}

/// An image to build: layers, the config's `config` section, and its platform.
pub struct ImageBuilder {
    layers: Vec<(Vec<u8>, Compression)>,
    config: serde_json::Map<String, serde_json::Value>,
    arch: String,
    oci: bool,
    annotations: serde_json::Map<String, serde_json::Value>,
}

/// Everything needed to push an image and to check what skiffd made of it.
#[derive(Clone, Debug)]
pub struct BuiltImage {
    pub config: Vec<u8>,
    pub config_digest: String,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    pub manifest_type: String,
    /// (digest, compressed bytes, media type) per layer.
    pub layers: Vec<(String, Vec<u8>, String)>,
    pub diff_ids: Vec<String>,
    pub arch: String,
}

#[derive(Clone, Debug)]
pub struct PushedImage {
    /// `host/repo:tag`.
    pub reference: String,
    pub built: BuiltImage,
    /// The digest a pull by tag resolves to first (the index's when pushed as an index).
    pub top_digest: String,
}

impl PushedImage {
    pub fn id(&self) -> &str {
        &self.built.config_digest
    }
}

impl Default for ImageBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ImageBuilder {
    pub fn new() -> Self {
        ImageBuilder {
            layers: vec![],
            config: serde_json::Map::new(),
            arch: "amd64".into(),
            oci: true,
            annotations: serde_json::Map::new(),
        }
    }

    pub fn layer(mut self, l: Layer, c: Compression) -> Self {
        self.layers.push((l.into_tar(), c));
        self
    }

    pub fn raw_layer(mut self, tar: Vec<u8>, c: Compression) -> Self {
        self.layers.push((tar, c));
        self
    }

    pub fn config(mut self, key: &str, value: serde_json::Value) -> Self {
        self.config.insert(key.into(), value);
        self
    }

    /// A manifest annotation.
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }

    pub fn arch(mut self, a: &str) -> Self {
        self.arch = a.into();
        self
    }

    /// Docker schema 2 media types instead of OCI ones.
    pub fn docker(mut self) -> Self {
        self.oci = false;
        self
    }

    pub fn build(self) -> BuiltImage {
        let mut layers = vec![];
        let mut diff_ids = vec![];
        for (tar, c) in &self.layers {
            diff_ids.push(sha256(tar));
            let blob = compress(tar, *c);
            let mt = match (self.oci, c) {
                (false, _) => DOCKER_LAYER_GZIP.to_string(),
                (true, Compression::Gzip) => "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                (true, Compression::Zstd) => "application/vnd.oci.image.layer.v1.tar+zstd".into(),
                (true, Compression::None) => "application/vnd.oci.image.layer.v1.tar".into(),
            };
            layers.push((sha256(&blob), blob, mt));
        }
        let config = serde_json::json!({
            "architecture": self.arch,
            "os": "linux",
            "config": self.config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [],
        });
        let config = serde_json::to_vec(&config).expect("config json");
        let config_digest = sha256(&config);
        let (manifest_type, config_type) = if self.oci {
            (OCI_MANIFEST, OCI_CONFIG)
        } else {
            (DOCKER_MANIFEST, DOCKER_CONFIG)
        };
        let mut manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": {"mediaType": config_type, "digest": config_digest, "size": config.len()},
            "layers": layers.iter().map(|(d, b, mt)| serde_json::json!({
                "mediaType": mt, "digest": d, "size": b.len()
            })).collect::<Vec<_>>(),
        });
        if !self.annotations.is_empty() {
            manifest["annotations"] = serde_json::Value::Object(self.annotations);
        }
        let manifest = serde_json::to_vec(&manifest).expect("manifest json");
        BuiltImage {
            manifest_digest: sha256(&manifest),
            manifest,
            manifest_type: manifest_type.into(),
            config,
            config_digest,
            layers,
            diff_ids,
            arch: self.arch,
        }
    }

    pub async fn push(self, host: &str, repo: &str, tag: &str) -> PushedImage {
        self.push_auth(host, repo, tag, None).await
    }

    pub async fn push_auth(
        self,
        host: &str,
        repo: &str,
        tag: &str,
        auth: Option<(&str, &str)>,
    ) -> PushedImage {
        let built = self.build();
        let p = Pusher::new(host, repo, auth);
        p.push_image(&built).await;
        p.put_manifest(tag, &built.manifest, &built.manifest_type)
            .await;
        PushedImage {
            reference: format!("{host}/{repo}:{tag}"),
            top_digest: built.manifest_digest.clone(),
            built,
        }
    }
}

/// Pushes `images` (each for its arch) under one OCI index tagged `tag`.
pub async fn push_index(host: &str, repo: &str, tag: &str, images: &[BuiltImage]) -> String {
    let p = Pusher::new(host, repo, None);
    for img in images {
        p.push_image(img).await;
        p.put_manifest(&img.manifest_digest, &img.manifest, &img.manifest_type)
            .await;
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": images.iter().map(|i| serde_json::json!({
            "mediaType": i.manifest_type, "digest": i.manifest_digest, "size": i.manifest.len(),
            "platform": {"architecture": i.arch, "os": "linux"},
        })).collect::<Vec<_>>(),
    });
    let index = serde_json::to_vec(&index).expect("index json");
    p.put_manifest(tag, &index, OCI_INDEX).await;
    sha256(&index)
}

struct Pusher {
    http: reqwest::Client,
    base: String,
    auth: Option<(String, String)>,
}

impl Pusher {
    fn new(host: &str, repo: &str, auth: Option<(&str, &str)>) -> Pusher {
        Pusher {
            http: reqwest::Client::new(),
            base: format!("http://{host}/v2/{repo}"),
            auth: auth.map(|(u, p)| (u.to_string(), p.to_string())),
        }
    }

    fn req(&self, m: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(m, url);
        match &self.auth {
            Some((u, p)) => r.basic_auth(u, Some(p)),
            None => r,
        }
    }

    async fn push_image(&self, img: &BuiltImage) {
        for (d, b, _) in &img.layers {
            self.push_blob(d, b).await;
        }
        self.push_blob(&img.config_digest, &img.config).await;
    }

    async fn push_blob(&self, digest: &str, data: &[u8]) {
        let head = self
            .req(
                reqwest::Method::HEAD,
                &format!("{}/blobs/{digest}", self.base),
            )
            .send()
            .await
            .expect("HEAD blob");
        if head.status().is_success() {
            return;
        }
        let start = self
            .req(
                reqwest::Method::POST,
                &format!("{}/blobs/uploads/", self.base),
            )
            .send()
            .await
            .expect("start upload");
        assert_eq!(start.status(), 202, "start upload: {}", start.status());
        let loc = start
            .headers()
            .get("location")
            .expect("upload location")
            .to_str()
            .expect("location text")
            .to_string();
        let loc = if loc.starts_with("http") {
            loc
        } else {
            let host = self.base.split("/v2/").next().unwrap_or_default();
            format!("{host}{loc}")
        };
        let sep = if loc.contains('?') { '&' } else { '?' };
        let put = self
            .req(reqwest::Method::PUT, &format!("{loc}{sep}digest={digest}"))
            .header("content-type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .expect("upload blob");
        assert_eq!(put.status(), 201, "upload {digest}: {}", put.status());
    }

    async fn put_manifest(&self, reference: &str, body: &[u8], media_type: &str) {
        let r = self
            .req(
                reqwest::Method::PUT,
                &format!("{}/manifests/{reference}", self.base),
            )
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .expect("PUT manifest");
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        assert_eq!(status, 201, "PUT manifest {reference}: {status} {text}");
    }
}
