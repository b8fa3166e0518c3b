//! ListMetricDescriptors: every metric ListPodSandboxMetrics sends, with its label keys
//! (cAdvisor's names; see `pod::metrics`). The list never changes while skiffd runs.

use skiff_proto::cri::{ListMetricDescriptorsRequest, ListMetricDescriptorsResponse};

pub fn list_metric_descriptors(
    _req: ListMetricDescriptorsRequest,
) -> ListMetricDescriptorsResponse {
    ListMetricDescriptorsResponse {
        descriptors: crate::pod::metrics::descriptors(),
    }
}
