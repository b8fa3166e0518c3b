//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use skiff_integration::Skiffd;
use skiff_proto::cri::image_service_client::ImageServiceClient;
use skiff_proto::cri::{AuthConfig, ImageSpec, ImageStatusRequest, PullImageRequest};
use tonic::transport::Channel;

pub fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.to_string(),
        ..Default::default()
    })
}

pub async fn pull(
    c: &mut ImageServiceClient<Channel>,
    image: &str,
    auth: Option<AuthConfig>,
) -> Result<String, tonic::Status> {
    c.pull_image(PullImageRequest {
        image: spec(image),
        auth,
        sandbox_config: None,
    })
    .await
    .map(|r| r.into_inner().image_ref)
}

/// The image's status with verbose info parsed: (Image, info JSON).
pub async fn status(
    c: &mut ImageServiceClient<Channel>,
    image: &str,
) -> Option<(skiff_proto::cri::Image, serde_json::Value)> {
    let r = c
        .image_status(ImageStatusRequest {
            image: spec(image),
            verbose: true,
        })
        .await
        .expect("ImageStatus")
        .into_inner();
    let img = r.image?;
    let info = r
        .info
        .get("info")
        .map(|s| serde_json::from_str(s).expect("info is JSON"))
        .unwrap_or(serde_json::Value::Null);
    Some((img, info))
}

/// A read-only overlay of an image's unpacked layers, the way a container rootfs stacks them.
pub struct Overlay {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Overlay {
    pub async fn of_image(d: &Skiffd, c: &mut ImageServiceClient<Channel>, image: &str) -> Overlay {
        let (_, info) = status(c, image).await.expect("image present");
        let chains: Vec<String> = info["chainIDs"]
            .as_array()
            .expect("chainIDs in verbose info")
            .iter()
            .map(|v| v.as_str().expect("chain id").to_string())
            .collect();
        let layers: Vec<PathBuf> = chains.iter().map(|c| d.layer_dir(c)).collect();
        Overlay::mount(&layers)
    }

    /// `layers` bottom first.
    pub fn mount(layers: &[PathBuf]) -> Overlay {
        let dir = tempfile::tempdir().expect("overlay dir");
        let empty = dir.path().join("empty");
        let path = dir.path().join("merged");
        std::fs::create_dir(&empty).expect("empty");
        std::fs::create_dir(&path).expect("merged");
        let mut lowers: Vec<String> = layers
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect();
        lowers.push(empty.display().to_string());
        let opts = format!("lowerdir={}", lowers.join(":"));
        nix::mount::mount(
            Some("overlay"),
            &path,
            Some("overlay"),
            nix::mount::MsFlags::MS_RDONLY,
            Some(opts.as_str()),
        )
        .expect("mount overlay of the image layers");
        Overlay { path, _dir: dir }
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Every entry below `dir` whose name starts with `.tmp-` (leftovers of an unfinished write).
pub fn temporaries(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().starts_with(".tmp-") {
                out.push(p.clone());
            }
            // Do not descend into layers: their contents are image data.
            if p.is_dir() && !d.ends_with("layers") {
                stack.push(p);
            }
        }
    }
    out
}

/// A network namespace of the test's, deleted on drop.
pub struct Netns(pub String);

impl Netns {
    pub fn new() -> Netns {
        let name = format!("skiff-net-{:08x}", rand::random::<u32>());
        for args in [
            vec!["netns", "add", &name],
            vec!["-n", &name, "link", "set", "lo", "up"],
        ] {
            let st = Command::new("ip").args(&args).status().expect("ip");
            assert!(st.success(), "ip {args:?}: {st}");
        }
        Netns(name)
    }

    /// Runs `cmd` inside the namespace (nsenter keeps /sys and the cgroup mounts).
    pub fn exec(&self, cmd: &[&str]) -> (bool, String) {
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.0))
            .args(cmd)
            .output()
            .expect("nsenter");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A skiffd root holding `reference`, pulled by a skiffd on the node's network (where the
/// test registry listens); a skiffd under test in a network namespace then shares the root.
pub async fn pulled_root(registry: &str, reference: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let flag = root.path().display().to_string();
    let mut d0 = Skiffd::start_with(&[registry], None, &["--root", &flag]);
    pull(&mut d0.images().await, reference, None)
        .await
        .expect("pull");
    d0.terminate();
    root
}
