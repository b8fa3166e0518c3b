//! Version, Status and RuntimeConfig: what the runtime is and whether it is ready.

use std::collections::HashMap;

use skiff_proto::cri::{
    CgroupDriver, LinuxRuntimeConfiguration, RuntimeCondition, RuntimeConfigResponse,
    RuntimeFeatures, RuntimeHandler, RuntimeHandlerFeatures, RuntimeStatus, StatusRequest,
    StatusResponse, VersionResponse,
};

use super::Cri;
use crate::config::UsernsRootfs;

pub const RUNTIME_NAME: &str = "skiff";
pub const RUNTIME_API_VERSION: &str = "v1";
/// The kubelet runtime API version string every CRI runtime answers with.
const KUBE_API_VERSION: &str = "0.1.0";

pub fn version() -> VersionResponse {
    VersionResponse {
        version: KUBE_API_VERSION.into(),
        runtime_name: RUNTIME_NAME.into(),
        runtime_version: env!("CARGO_PKG_VERSION").into(),
        runtime_api_version: RUNTIME_API_VERSION.into(),
    }
}

pub fn status(cri: &Cri, req: &StatusRequest) -> StatusResponse {
    let runtime_ready = RuntimeCondition {
        r#type: "RuntimeReady".into(),
        status: true,
        reason: String::new(),
        message: String::new(),
    };
    // Read afresh on every call: a configuration that appears later is picked up.
    let network_ready = match cri.node.network.current() {
        Ok(_) => RuntimeCondition {
            r#type: "NetworkReady".into(),
            status: true,
            reason: String::new(),
            message: String::new(),
        },
        Err(why) => RuntimeCondition {
            r#type: "NetworkReady".into(),
            status: false,
            reason: "NetworkPluginNotReady".into(),
            message: format!("skiff: network plugin not ready: cni config uninitialized: {why}"),
        },
    };
    let mut info = HashMap::new();
    if req.verbose {
        let c = &cri.cfg;
        let cfg = serde_json::json!({
            "listen": c.listen,
            "root": c.root,
            "runRoot": c.run_root,
            "insecureRegistries": c.insecure_registries,
            "registryMirrors": c.registry_mirrors,
            "maxConcurrentDownloads": c.max_concurrent_downloads,
            "maxConcurrentStarts": c.max_concurrent_starts,
        });
        info.insert("config".to_string(), cfg.to_string());
        let criu = match &cri.node.criu {
            Ok(v) => serde_json::json!({"version": v}),
            Err(why) => serde_json::json!({"error": why}),
        };
        info.insert("criu".to_string(), criu.to_string());
        let apparmor = match crate::container::apparmor::availability() {
            Ok(()) => serde_json::json!({"enabled": true}),
            Err(why) => serde_json::json!({"enabled": false, "reason": why}),
        };
        info.insert("apparmor".to_string(), apparmor.to_string());
    }
    StatusResponse {
        status: Some(RuntimeStatus {
            conditions: vec![runtime_ready, network_ready],
        }),
        info,
        // Every handler (the default "" first), with what it really has on this node.
        runtime_handlers: cri
            .cfg
            .handlers
            .iter()
            .map(|h| RuntimeHandler {
                name: h.name.clone(),
                features: Some(RuntimeHandlerFeatures {
                    recursive_read_only_mounts: mount_setattr_available(),
                    user_namespaces: match h.userns_rootfs {
                        // Once the start-up probe showed idmapped mounts work here.
                        UsernsRootfs::Idmap => cri.node.userns.is_ok(),
                        // Chowned copies need only the kernel's user namespaces.
                        UsernsRootfs::Chown => std::path::Path::new("/proc/self/ns/user").exists(),
                    },
                }),
            })
            .collect(),
        features: Some(RuntimeFeatures {
            supplemental_groups_policy: true,
            // A pod user namespace with the node's network is refused by RunPodSandbox.
            user_namespaces_host_network: false,
        }),
    }
}

pub fn runtime_config(cri: &Cri) -> RuntimeConfigResponse {
    let driver = match cri.cfg.cgroup_driver {
        crate::config::CgroupDriver::Systemd => CgroupDriver::Systemd,
        crate::config::CgroupDriver::Cgroupfs => CgroupDriver::Cgroupfs,
    };
    RuntimeConfigResponse {
        linux: Some(LinuxRuntimeConfiguration {
            cgroup_driver: driver as i32,
        }),
    }
}

/// Whether the kernel has mount_setattr(2) (Linux 5.12), which recursive read-only mounts
/// need. Probed once: called with no attributes it fails with ENOSYS only where it is missing.
fn mount_setattr_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        // SAFETY: a bad descriptor, an empty path and no attributes: the kernel reads nothing
        // and fails; only which error matters.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                -1,
                c"".as_ptr(),
                0,
                std::ptr::null::<u8>(),
                0,
            )
        };
        rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOSYS)
    })
}
