//! Version, Status and RuntimeConfig: what the runtime is and whether it is ready.

use std::collections::HashMap;

use skiff_proto::cri::{
    CgroupDriver, LinuxRuntimeConfiguration, RuntimeCondition, RuntimeConfigResponse,
    RuntimeFeatures, RuntimeHandler, RuntimeHandlerFeatures, RuntimeStatus, StatusRequest,
    StatusResponse, VersionResponse,
};

use super::Cri;

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
        // The default handler only; the features it has are reported as they are built.
        runtime_handlers: vec![RuntimeHandler {
            name: String::new(),
            features: Some(RuntimeHandlerFeatures {
                recursive_read_only_mounts: true,
                // Only once the start-up probe showed idmapped mounts work here.
                user_namespaces: cri.node.userns.is_ok(),
            }),
        }],
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
