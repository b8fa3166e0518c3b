//! Pod-level resources (KEP-2837): the pod cgroup's limits are the sum of its containers'
//! (`linux.resources`, as kubelet computes it) and the pod's `overhead` (RuntimeClass), applied
//! at RunPodSandbox and again, live, on UpdatePodSandboxResources, on cgroup v1 and v2.

use skiff_proto::cri::LinuxContainerResources;

use super::{PodRecord, PodState};
use crate::container::resources;
use crate::error::{Error, Result};
use crate::node::Node;

fn overflow(field: &str) -> Error {
    Error::InvalidArgument(format!(
        "resources.{field}: with the overhead it is past what a cgroup can hold"
    ))
}

/// What the pod's cgroup is limited to: `resources` plus `overhead`, field by field (a limit
/// the containers do not set stays unset: an overhead alone limits nothing). None when kubelet
/// sent no pod-level resources.
pub fn pod_limits(
    resources: Option<&LinuxContainerResources>,
    overhead: Option<&LinuxContainerResources>,
) -> Result<Option<LinuxContainerResources>> {
    let Some(r) = resources else {
        return Ok(None);
    };
    let o = overhead.cloned().unwrap_or_default();
    let mut out = r.clone();
    let add = |a: i64, b: i64, field: &str| -> Result<i64> {
        if a <= 0 {
            return Ok(a);
        }
        a.checked_add(b.max(0)).ok_or_else(|| overflow(field))
    };
    out.cpu_shares = add(r.cpu_shares, o.cpu_shares, "cpu_shares")?;
    out.memory_limit_in_bytes = add(
        r.memory_limit_in_bytes,
        o.memory_limit_in_bytes,
        "memory_limit_in_bytes",
    )?;
    out.memory_swap_limit_in_bytes = add(
        r.memory_swap_limit_in_bytes,
        o.memory_swap_limit_in_bytes.max(o.memory_limit_in_bytes),
        "memory_swap_limit_in_bytes",
    )?;
    if r.cpu_quota > 0 && o.cpu_quota > 0 {
        // The overhead's quota over the pod's period.
        let period = if r.cpu_period > 0 {
            r.cpu_period
        } else {
            100_000
        };
        let o_period = if o.cpu_period > 0 {
            o.cpu_period
        } else {
            100_000
        };
        let extra = o
            .cpu_quota
            .checked_mul(period)
            .map(|x| x / o_period)
            .ok_or_else(|| overflow("cpu_quota"))?;
        out.cpu_quota = r
            .cpu_quota
            .checked_add(extra)
            .ok_or_else(|| overflow("cpu_quota"))?;
        out.cpu_period = period;
    }
    for h in &mut out.hugepage_limits {
        if let Some(oh) = o
            .hugepage_limits
            .iter()
            .find(|x| x.page_size == h.page_size)
        {
            if h.limit > 0 {
                h.limit = h
                    .limit
                    .checked_add(oh.limit)
                    .ok_or_else(|| overflow("hugepage_limits"))?;
            }
        }
    }
    // A pod cgroup has no process of its own to adjust.
    out.oom_score_adj = 0;
    Ok(Some(out))
}

impl Node {
    /// Writes the pod's limits into its cgroup.
    pub fn apply_pod_resources(
        &self,
        rec: &PodRecord,
        resources: Option<&LinuxContainerResources>,
        overhead: Option<&LinuxContainerResources>,
    ) -> Result<()> {
        // Limits that limit nothing (a best-effort pod) cost pod start no cgroup writes.
        if let Some(limits) =
            pod_limits(resources, overhead)?.filter(|l| *l != LinuxContainerResources::default())
        {
            resources::apply(&rec.cgroup, &limits)?;
            tracing::info!(pod = %rec.id, cgroup = %rec.cgroup, "pod resources applied");
        }
        Ok(())
    }

    /// UpdatePodSandboxResources: the pod's new limits (with its overhead or resources as they
    /// were when the request leaves one out) into its cgroup, and into its record.
    pub async fn update_pod_resources(
        &self,
        id: &str,
        resources: Option<LinuxContainerResources>,
        overhead: Option<LinuxContainerResources>,
    ) -> Result<()> {
        let _updating = self.pods.update_lock.lock().await;
        let mut rec = self.pods.find(id)?;
        if rec.state != PodState::Ready {
            return Err(Error::FailedPrecondition(format!(
                "pod sandbox {} is not ready",
                rec.id
            )));
        }
        // What the request leaves out stays as the pod had it.
        let mut cfg = rec.config().clone();
        let linux = cfg.linux.get_or_insert_with(Default::default);
        if resources.is_some() {
            linux.resources = resources;
        }
        if overhead.is_some() {
            linux.overhead = overhead;
        }
        self.apply_pod_resources(&rec, linux.resources.as_ref(), linux.overhead.as_ref())?;
        rec.config = crate::store::Pb::new(cfg);
        self.pods.save(&rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_the_sum_of_resources_and_overhead() {
        let r = LinuxContainerResources {
            cpu_shares: 512,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            memory_limit_in_bytes: 256 << 20,
            ..Default::default()
        };
        let o = LinuxContainerResources {
            cpu_shares: 10,
            cpu_quota: 5_000,
            cpu_period: 50_000,
            memory_limit_in_bytes: 64 << 20,
            ..Default::default()
        };
        let l = pod_limits(Some(&r), Some(&o)).unwrap().unwrap();
        assert_eq!(l.cpu_shares, 522);
        assert_eq!((l.cpu_quota, l.cpu_period), (60_000, 100_000));
        assert_eq!(l.memory_limit_in_bytes, 320 << 20);
        // Unlimited stays unlimited; no resources, no limits.
        let l = pod_limits(Some(&LinuxContainerResources::default()), Some(&o))
            .unwrap()
            .unwrap();
        assert_eq!((l.memory_limit_in_bytes, l.cpu_quota), (0, 0));
        assert!(pod_limits(None, Some(&o)).unwrap().is_none());
        let huge = LinuxContainerResources {
            memory_limit_in_bytes: i64::MAX,
            ..Default::default()
        };
        let err = pod_limits(Some(&huge), Some(&o)).unwrap_err();
        assert!(err.to_string().contains("memory_limit_in_bytes"), "{err}");
    }
}
