//! Generates the CRI v1 server and client from `proto/api.proto`, and skiff's shim API from
//! `proto/shim.proto`. protox parses the .proto files in
//! pure Rust, so building skiff needs no `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/api.proto", "proto/shim.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // RPCs skiff has not built yet answer Unimplemented, never a fake success.
        .generate_default_stubs(true)
        .compile_fds(fds)?;
    Ok(())
}
