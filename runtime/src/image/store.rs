//! The image store under `<root>/images`:
//!
//! ```text
//! blobs/sha256/<hex>     manifests, indexes and configs, verified against their digest
//! layers/<chain-hex>/    one unpacked layer each (an overlayfs lower directory), by chain id
//! records/<id-hex>.json  one record per image: names, manifest, chain ids, size
//! ```
//!
//! Everything is committed by rename: a blob or record by `store::write_atomic`, a layer by
//! renaming its finished temporary directory after `syncfs`. Leftover temporaries of a crash are
//! removed at start, and so are layers and blobs no record references (an interrupted pull or
//! removal), so the store on disk always equals its records.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::reference::{digest_hex, ImageRef};
use crate::error::{Error, IoContext, Result};
use crate::store::{self, TMP_PREFIX};

/// One image as recorded on disk.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageRecord {
    /// The config digest, `sha256:<hex>`: the image id.
    pub id: String,
    /// `registry/repo:tag` names pointing at this image.
    pub repo_tags: Vec<String>,
    /// `registry/repo@sha256:<manifest or index digest>` names.
    pub repo_digests: Vec<String>,
    /// Digest of the platform manifest the image was pulled from.
    pub manifest_digest: String,
    /// Every blob this image keeps: index (if any), manifest, config.
    pub blobs: Vec<String>,
    /// Chain ids of the layers, bottom first.
    pub chain_ids: Vec<String>,
    /// Bytes of the image as the registry serves it: config plus compressed layers.
    pub size: u64,
    /// The config's `User`, as written there (`uid`, `name`, `uid:gid` …).
    pub user: String,
    /// Manifest annotations.
    pub annotations: BTreeMap<String, String>,
}

#[derive(Default)]
struct Index {
    images: BTreeMap<String, ImageRecord>,
    /// Chain ids and blob digests held by pulls in flight: never collected.
    pinned: HashMap<String, usize>,
    /// Image ids mounted as image volumes, with how many mounts: not removable.
    volumes: HashMap<String, usize>,
}

pub struct ImageStore {
    dir: PathBuf,
    index: Mutex<Index>,
    layer_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Keeps chain ids and blobs out of garbage collection while a pull works with them.
pub struct Pin<'a> {
    store: &'a ImageStore,
    ids: Vec<String>,
}

impl Drop for Pin<'_> {
    fn drop(&mut self) {
        self.store.release(&self.ids);
    }
}

impl ImageStore {
    /// Opens (creating) the store, cleans what a crash left, and loads the records.
    pub fn open(root: &Path) -> Result<ImageStore> {
        let dir = root.join("images");
        for sub in ["blobs/sha256", "layers", "records"] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).ctx(|| format!("creating {}", p.display()))?;
        }
        for sub in ["blobs/sha256", "layers", "records"] {
            let p = dir.join(sub);
            let n = store::remove_temporaries(&p).ctx(|| format!("cleaning {}", p.display()))?;
            if n > 0 {
                tracing::info!(dir = %p.display(), removed = n, "removed leftovers of an interrupted write");
            }
        }
        let mut images = BTreeMap::new();
        let records = dir.join("records");
        for entry in fs::read_dir(&records).ctx(|| format!("reading {}", records.display()))? {
            let path = entry.ctx(|| "reading image records")?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match store::read_json::<ImageRecord>(&path) {
                Ok(r) => {
                    images.insert(r.id.clone(), r);
                }
                Err(e) => {
                    tracing::error!(record = %path.display(), error = %e, "skipping unreadable image record")
                }
            }
        }
        let s = ImageStore {
            dir,
            index: Mutex::new(Index {
                images,
                pinned: HashMap::new(),
                volumes: HashMap::new(),
            }),
            layer_locks: Mutex::new(HashMap::new()),
        };
        Ok(s)
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        // A panic while holding the lock cannot leave the index half-updated: every update is a
        // single insert or remove after its disk write succeeded.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn layer_path(&self, chain_id: &str) -> PathBuf {
        self.dir.join("layers").join(digest_hex(chain_id))
    }

    pub fn has_layer(&self, chain_id: &str) -> bool {
        self.layer_path(chain_id).is_dir()
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir.join("blobs/sha256").join(digest_hex(digest))
    }

    /// A blob's bytes, if stored.
    pub fn read_blob(&self, digest: &str) -> Result<Option<Vec<u8>>> {
        match fs::read(self.blob_path(digest)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("reading blob {digest}"), e)),
        }
    }

    /// Stores a blob the caller has verified against `digest`.
    pub fn write_blob(&self, digest: &str, data: &[u8]) -> Result<()> {
        let p = self.blob_path(digest);
        store::write_atomic(&p, data).ctx(|| format!("writing blob {digest}"))
    }

    /// Holds `ids` (chain ids and blob digests) out of garbage collection until dropped.
    pub fn pin(&self, ids: impl IntoIterator<Item = String>) -> Pin<'_> {
        let ids: Vec<String> = ids.into_iter().collect();
        self.hold(&ids);
        Pin { store: self, ids }
    }

    /// Holds `ids` out of garbage collection until [`ImageStore::release`]d (containers hold
    /// their layers for as long as they exist).
    pub fn hold(&self, ids: &[String]) {
        let mut idx = self.lock();
        for id in ids {
            *idx.pinned.entry(id.clone()).or_insert(0) += 1;
        }
    }

    pub fn release(&self, ids: &[String]) {
        let mut idx = self.lock();
        for id in ids {
            if let Some(n) = idx.pinned.get_mut(id) {
                *n -= 1;
                if *n == 0 {
                    idx.pinned.remove(id);
                }
            }
        }
    }

    /// Resolves `spec` and, in the same step, holds that image as mounted by an image volume:
    /// [`ImageStore::remove`] refuses it until [`ImageStore::release_volume`].
    pub fn hold_volume(&self, spec: &str) -> Option<ImageRecord> {
        let mut idx = self.lock();
        let rec = resolve_in(&idx.images, spec).cloned()?;
        *idx.volumes.entry(rec.id.clone()).or_insert(0) += 1;
        Some(rec)
    }

    pub fn release_volume(&self, image_id: &str) {
        let mut idx = self.lock();
        if let Some(n) = idx.volumes.get_mut(image_id) {
            *n -= 1;
            if *n == 0 {
                idx.volumes.remove(image_id);
            }
        }
    }

    /// The lock that serialises work on one layer, so concurrent pulls unpack it once.
    pub fn layer_lock(&self, chain_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.layer_locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(chain_id.to_string()).or_default().clone()
    }

    /// A fresh temporary directory to unpack a layer into.
    pub fn new_layer_tmp(&self, chain_id: &str) -> Result<PathBuf> {
        let p = self.dir.join("layers").join(format!(
            "{TMP_PREFIX}{}-{}",
            &digest_hex(chain_id)[..12.min(digest_hex(chain_id).len())],
            rand::random::<u64>()
        ));
        fs::create_dir(&p).ctx(|| format!("creating {}", p.display()))?;
        fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .ctx(|| format!("setting mode of {}", p.display()))?;
        Ok(p)
    }

    /// Makes an unpacked layer durable and visible under its chain id.
    pub fn commit_layer(&self, tmp: &Path, chain_id: &str) -> Result<()> {
        let f = fs::File::open(tmp).ctx(|| format!("opening {}", tmp.display()))?;
        nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&f))
            .ctx(|| format!("syncing {}", tmp.display()))?;
        let dest = self.layer_path(chain_id);
        if dest.is_dir() {
            // Another pull committed the same layer first (its lock was released when a
            // cancelled pull's future was dropped): keep that one.
            return store::remove_durably(tmp).ctx(|| format!("removing {}", tmp.display()));
        }
        fs::rename(tmp, &dest).ctx(|| format!("committing layer {chain_id}"))?;
        store::sync_dir(&self.dir.join("layers")).ctx(|| "syncing layers directory")
    }

    /// Records a pulled image under `tag` (moved away from any other image holding it) and
    /// `repo_digest`, merging with an existing record of the same id.
    pub fn commit_image(
        &self,
        mut rec: ImageRecord,
        tag: Option<String>,
        repo_digest: String,
    ) -> Result<ImageRecord> {
        let mut idx = self.lock();
        if let Some(old) = idx.images.get(&rec.id) {
            rec.repo_tags = old.repo_tags.clone();
            rec.repo_digests = old.repo_digests.clone();
        }
        if let Some(t) = &tag {
            if !rec.repo_tags.contains(t) {
                rec.repo_tags.push(t.clone());
            }
        }
        if !rec.repo_digests.contains(&repo_digest) {
            rec.repo_digests.push(repo_digest);
        }
        // The tag moves: other images lose it.
        let mut changed = Vec::new();
        if let Some(t) = &tag {
            for other in idx.images.values() {
                if other.id != rec.id && other.repo_tags.contains(t) {
                    let mut o = other.clone();
                    o.repo_tags.retain(|x| x != t);
                    changed.push(o);
                }
            }
        }
        self.write_record(&rec)?;
        for o in &changed {
            self.write_record(o)?;
        }
        for o in changed {
            idx.images.insert(o.id.clone(), o);
        }
        idx.images.insert(rec.id.clone(), rec.clone());
        Ok(rec)
    }

    fn write_record(&self, rec: &ImageRecord) -> Result<()> {
        let p = self.record_path(&rec.id);
        store::write_json(&p, rec).ctx(|| format!("writing image record {}", p.display()))
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.dir
            .join("records")
            .join(format!("{}.json", digest_hex(id)))
    }

    pub fn list(&self) -> Vec<ImageRecord> {
        self.lock().images.values().cloned().collect()
    }

    /// Finds an image by id (`sha256:<hex>` or the bare hex), by tag or by digest reference.
    pub fn resolve(&self, spec: &str) -> Option<ImageRecord> {
        let idx = self.lock();
        resolve_in(&idx.images, spec).cloned()
    }

    /// Removes the image `spec` names with all its names, then every layer and blob nothing else
    /// holds. Returns the removed record, or None when there was no such image.
    pub fn remove(&self, spec: &str) -> Result<Option<ImageRecord>> {
        let mut idx = self.lock();
        let Some(rec) = resolve_in(&idx.images, spec).cloned() else {
            return Ok(None);
        };
        if let Some(n) = idx.volumes.get(&rec.id) {
            return Err(Error::FailedPrecondition(format!(
                "image {spec} ({}) is mounted as an image volume by {n} container(s): remove \
                 them first",
                rec.id
            )));
        }
        // The record goes first: a crash after it leaves only orphans, collected at start.
        store::remove_durably(&self.record_path(&rec.id))
            .ctx(|| format!("removing image record of {}", rec.id))?;
        idx.images.remove(&rec.id);
        let (layers, blobs) = held(&idx);
        for c in &rec.chain_ids {
            if !layers.contains(c) {
                self.remove_layer(c)?;
            }
        }
        for b in &rec.blobs {
            if !blobs.contains(b) {
                store::remove_durably(&self.blob_path(b)).ctx(|| format!("removing blob {b}"))?;
            }
        }
        Ok(Some(rec))
    }

    /// Renames the layer to a temporary name (atomic) before deleting its tree, so a crash
    /// midway never leaves a half-deleted layer under its real name.
    fn remove_layer(&self, chain_id: &str) -> Result<()> {
        let p = self.layer_path(chain_id);
        if !p.exists() {
            return Ok(());
        }
        let doomed = self.dir.join("layers").join(format!(
            "{TMP_PREFIX}rm-{}-{}",
            digest_hex(chain_id),
            rand::random::<u32>()
        ));
        fs::rename(&p, &doomed).ctx(|| format!("removing layer {chain_id}"))?;
        store::remove_durably(&doomed).ctx(|| format!("removing layer {chain_id}"))
    }

    /// Deletes layers and blobs that no record references and nothing holds. skiffd calls it
    /// once at start, after containers have taken hold of their layers.
    pub fn collect_orphans(&self) -> Result<()> {
        let idx = self.lock();
        let (layers, blobs) = held(&idx);
        let layers_hex: HashSet<&str> = layers.iter().map(|c| digest_hex(c)).collect();
        let blobs_hex: HashSet<&str> = blobs.iter().map(|c| digest_hex(c)).collect();
        let ldir = self.dir.join("layers");
        for e in fs::read_dir(&ldir).ctx(|| format!("reading {}", ldir.display()))? {
            let name = e.ctx(|| "reading layers")?.file_name();
            let name = name.to_string_lossy();
            if !layers_hex.contains(name.as_ref()) {
                tracing::info!(layer = %name, "removing layer no image references");
                self.remove_layer(&format!("sha256:{name}"))?;
            }
        }
        let bdir = self.dir.join("blobs/sha256");
        for e in fs::read_dir(&bdir).ctx(|| format!("reading {}", bdir.display()))? {
            let e = e.ctx(|| "reading blobs")?;
            let name = e.file_name();
            if !blobs_hex.contains(name.to_string_lossy().as_ref()) {
                store::remove_durably(&e.path()).ctx(|| "removing unreferenced blob")?;
            }
        }
        Ok(())
    }

    /// Bytes (allocated blocks) and inodes the image store uses on disk.
    pub fn usage(&self) -> Result<(u64, u64)> {
        store::disk_usage(&self.dir)
    }
}

fn held(idx: &Index) -> (HashSet<String>, HashSet<String>) {
    let mut layers = HashSet::new();
    let mut blobs = HashSet::new();
    for r in idx.images.values() {
        layers.extend(r.chain_ids.iter().cloned());
        blobs.extend(r.blobs.iter().cloned());
    }
    for p in idx.pinned.keys() {
        layers.insert(p.clone());
        blobs.insert(p.clone());
    }
    (layers, blobs)
}

fn resolve_in<'a>(
    images: &'a BTreeMap<String, ImageRecord>,
    spec: &str,
) -> Option<&'a ImageRecord> {
    if spec.is_empty() {
        return None;
    }
    if let Some(r) = images.get(spec) {
        return Some(r);
    }
    if spec.len() == 64 && spec.bytes().all(|b| b.is_ascii_hexdigit()) {
        if let Some(r) = images.get(&format!("sha256:{spec}")) {
            return Some(r);
        }
    }
    let r = ImageRef::parse(spec).ok()?;
    match r.digest() {
        Some(d) => {
            let want = r.digested_name(d);
            images.values().find(|i| i.repo_digests.contains(&want))
        }
        None => {
            let want = r.tagged_name()?;
            images.values().find(|i| i.repo_tags.contains(&want))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: char, chains: &[&str]) -> ImageRecord {
        ImageRecord {
            id: format!("sha256:{}", id.to_string().repeat(64)),
            repo_tags: vec![],
            repo_digests: vec![],
            manifest_digest: format!("sha256:{}", "9".repeat(64)),
            blobs: vec![format!("sha256:{}", id.to_string().repeat(64))],
            chain_ids: chains
                .iter()
                .map(|c| format!("sha256:{}", c.repeat(64)))
                .collect(),
            size: 1,
            user: String::new(),
            annotations: Default::default(),
        }
    }

    #[test]
    fn tags_move_and_shared_layers_survive_removal() {
        let root = tempfile::tempdir().unwrap();
        let s = ImageStore::open(root.path()).unwrap();
        for c in ["1", "2", "3"] {
            fs::create_dir(s.layer_path(&format!("sha256:{}", c.repeat(64)))).unwrap();
        }
        let a = rec('a', &["1", "2"]);
        let b = rec('b', &["1", "3"]);
        s.commit_image(
            a.clone(),
            Some("docker.io/library/x:latest".into()),
            "docker.io/library/x@sha256:aa".into(),
        )
        .unwrap();
        s.commit_image(
            b.clone(),
            Some("docker.io/library/x:latest".into()),
            "docker.io/library/x@sha256:bb".into(),
        )
        .unwrap();
        assert_eq!(s.resolve("x").unwrap().id, b.id);
        assert!(s.resolve(&a.id).unwrap().repo_tags.is_empty());
        s.remove(&a.id).unwrap().unwrap();
        assert!(s.has_layer(&format!("sha256:{}", "1".repeat(64))));
        assert!(!s.has_layer(&format!("sha256:{}", "2".repeat(64))));
        // Reopening keeps b and collects nothing it holds.
        drop(s);
        let s = ImageStore::open(root.path()).unwrap();
        s.collect_orphans().unwrap();
        assert_eq!(s.list().len(), 1);
        assert!(s.has_layer(&format!("sha256:{}", "3".repeat(64))));
        assert!(s.remove("docker.io/library/x:latest").unwrap().is_some());
        assert!(s.list().is_empty());
        assert_eq!(
            fs::read_dir(root.path().join("images/layers"))
                .unwrap()
                .count(),
            0
        );
    }
}
