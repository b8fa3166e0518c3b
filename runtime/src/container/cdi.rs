//! CDI devices (KEP-4009): the devices a container asks for by fully qualified CDI name
//! (`vendor.com/class=name`), in `ContainerConfig.cdi_devices` and in `cdi.k8s.io/*`
//! annotations (device plugins), resolved in the CDI specs of `cdi_spec_dirs` with the
//! `container-device-interface` crate, whose container edits (device nodes with their device
//! cgroup rules, mounts, environment, additional groups, OCI hooks) are applied to the
//! container's OCI spec, which the shim carries out. Edits it cannot carry out (network devices,
//! Intel RDT) are refused naming the device, as is a device no spec defines.

use std::collections::HashMap;
use std::path::PathBuf;

use oci_spec::runtime::Spec;
use skiff_proto::cri::ContainerConfig;

use crate::error::{Error, Result};

/// The annotation prefix of device plugins' CDI requests.
pub const ANNOTATION_PREFIX: &str = "cdi.k8s.io/";

/// The CDI device names `cfg` asks for, each with the field or annotation that names it, in
/// request order (fields first, then annotations by key).
pub fn requested(cfg: &ContainerConfig) -> Result<Vec<(String, String)>> {
    let mut out = vec![];
    for (i, d) in cfg.cdi_devices.iter().enumerate() {
        if d.name.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "config.cdi_devices[{i}].name: is empty"
            )));
        }
        out.push((format!("config.cdi_devices[{i}]"), d.name.clone()));
    }
    let mut keys: Vec<&String> = cfg
        .annotations
        .keys()
        .filter(|k| k.starts_with(ANNOTATION_PREFIX))
        .collect();
    keys.sort();
    for k in keys {
        for name in cfg.annotations[k].split(',') {
            let name = name.trim();
            if name.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "annotation {k:?}: an empty CDI device name"
                )));
            }
            out.push((format!("annotation {k:?}"), name.to_string()));
        }
    }
    Ok(out)
}

/// Applies the container edits of the `devices` (from [`requested`]) to `spec`, reading the
/// CDI specs in `dirs` afresh.
pub fn inject(dirs: &[PathBuf], devices: &[(String, String)], spec: &mut Spec) -> Result<()> {
    use container_device_interface::cache;
    if devices.is_empty() {
        return Ok(());
    }
    let dir_list: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    let dir_refs: Vec<&str> = dir_list.iter().map(String::as_str).collect();
    let cache = cache::new_cache(vec![
        container_device_interface::spec_dirs::with_spec_dirs(&dir_refs),
        cache::with_auto_refresh(false),
    ]);
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    // A spec that does not parse spoils the whole scan: said when a device is then missing.
    let scan_error = cache.refresh().err().map(|e| e.to_string());
    let mut names = vec![];
    for (field, name) in devices {
        let Some(dev) = cache.get_device(name) else {
            return Err(match &scan_error {
                Some(e) => Error::FailedPrecondition(format!(
                    "{field}: CDI device {name:?} not found; reading the CDI specs in {} \
                     failed: {e}",
                    dir_list.join(", ")
                )),
                None => Error::NotFound(format!(
                    "{field}: CDI device {name:?} is defined by no CDI spec in {}",
                    dir_list.join(", ")
                )),
            });
        };
        // Some edit fields are private to the crate: looked at as the spec's JSON has them.
        let edits = [
            serde_json::to_value(dev.edits().container_edits).ok(),
            dev.get_spec()
                .edits()
                .and_then(|e| serde_json::to_value(e.container_edits).ok()),
        ];
        for e in edits.iter().flatten() {
            let set = |k: &str| {
                e.get(k)
                    .is_some_and(|v| !v.is_null() && v != &serde_json::json!([]))
            };
            if let Some(what) = ["netDevices", "intelRdt"].into_iter().find(|k| set(k)) {
                return Err(Error::FailedPrecondition(format!(
                    "{field}: CDI device {name:?} asks for {what}, which this skiff does not \
                     carry out"
                )));
            }
        }
        names.push(name.clone());
    }
    if spec.mounts().is_none() {
        spec.set_mounts(Some(vec![]));
    }
    cache
        .inject_devices(Some(spec), names)
        .map_err(|e| Error::FailedPrecondition(format!("injecting CDI devices: {e}")))?;
    dedupe_env(spec);
    Ok(())
}

/// The environment with one entry per name, the last value winning (a CDI spec's variable
/// replaces the image's), in the order names first appeared.
fn dedupe_env(spec: &mut Spec) {
    let Some(process) = spec.process_mut() else {
        return;
    };
    let Some(env) = process.env().clone() else {
        return;
    };
    let mut order: Vec<String> = vec![];
    let mut value: HashMap<String, String> = HashMap::new();
    for e in env {
        let name = e.split('=').next().unwrap_or("").to_string();
        if value.insert(name.clone(), e).is_none() {
            order.push(name);
        }
    }
    let env = order.into_iter().filter_map(|n| value.remove(&n)).collect();
    process.set_env(Some(env));
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::ProcessBuilder;

    #[test]
    fn later_values_replace_earlier_ones_in_place() {
        let mut spec = Spec::default();
        let p = ProcessBuilder::default()
            .env(vec!["A=1".into(), "B=2".into(), "A=3".into(), "C".into()])
            .build()
            .unwrap();
        spec.set_process(Some(p));
        dedupe_env(&mut spec);
        assert_eq!(
            spec.process().as_ref().unwrap().env().as_deref().unwrap(),
            ["A=3", "B=2", "C"]
        );
    }

    #[test]
    fn annotations_and_fields_are_both_requests() {
        let cfg = ContainerConfig {
            cdi_devices: vec![skiff_proto::cri::CdiDevice {
                name: "a.com/x=1".into(),
            }],
            annotations: [
                (
                    "cdi.k8s.io/p".to_string(),
                    "b.com/y=2,b.com/y=3".to_string(),
                ),
                ("other".to_string(), "c.com/z=9".to_string()),
            ]
            .into(),
            ..Default::default()
        };
        let r = requested(&cfg).unwrap();
        let names: Vec<&str> = r.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(names, ["a.com/x=1", "b.com/y=2", "b.com/y=3"]);
        assert_eq!(r[1].0, "annotation \"cdi.k8s.io/p\"");
    }
}
