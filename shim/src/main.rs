//! skiff-shim: the per-pod supervisor (one process per pod).
//!
//! It will own the pod's namespaces, run the pod's containers from OCI bundles written by `skiffd`,
//! reap them and record their exits. It owns no policy: `skiffd` decides what runs. Until the pods
//! work lands this binary only says so and exits non-zero, so nothing mistakes it for a working shim.

fn main() {
    eprintln!("skiff-shim: pod supervision is not built yet");
    std::process::exit(1);
}
