//! skiff-shim: the per-pod supervisor (`pod`) and its single-threaded helpers (`init`, `exec`).
//! See the library documentation for what each does.

// Grouped by the process the code runs in: the pod's supervisor (`pod` mode and everything it
// serves), the container's init (`init` mode, up to the container's exec), and the other
// single-threaded helpers (`exec`, `restore`).
mod helpers;
mod init;
mod selfexe;
mod supervisor;

use skiff_shim::podshm::PodShm;
use std::path::Path;

fn usage() -> ! {
    eprintln!(
        "usage: skiff-shim pod POD.json | init BUNDLE [NS=FD...] [pod-shm=FD:DIR] | restore BUNDLE IMAGES CRIU [pod-shm=FD:DIR] | exec[-tty] BUNDLE PID -- CMD... | version\n\
         skiff-shim is started by skiffd; it is not meant to be run by hand."
    );
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        // What skiffd checks before it starts any pod with this binary.
        Some("version") if args.len() == 2 => println!(
            "skiff-shim {} protocol {}",
            env!("CARGO_PKG_VERSION"),
            skiff_shim::api::PROTOCOL
        ),
        Some("pod") if args.len() == 3 => supervisor::pod::main(Path::new(&args[2])),
        Some("init") if args.len() >= 3 => {
            // NAME=FD: the runtime's namespaces, inherited descriptors (see `hooks`);
            // pod-shm=FD:DIR, the pod's /dev/shm (see `skiff_shim::podshm`).
            let (shm, ns): (Vec<&String>, Vec<&String>) =
                args[3..].iter().partition(|a| PodShm::parse(a).is_some());
            let ns = ns
                .iter()
                .map(|a| {
                    a.split_once('=')
                        .and_then(|(n, fd)| Some((n.to_string(), fd.parse().ok()?)))
                        .unwrap_or_else(|| usage())
                })
                .collect();
            init::main(
                Path::new(&args[2]),
                false,
                ns,
                shm.first().and_then(|a| PodShm::parse(a)),
            )
        }
        Some("restore") if args.len() == 5 || args.len() == 6 => helpers::restore::main(
            Path::new(&args[2]),
            Path::new(&args[3]),
            Path::new(&args[4]),
            args.get(5)
                .map(|a| PodShm::parse(a).unwrap_or_else(|| usage())),
        ),
        Some(mode @ ("exec" | "exec-tty")) if args.len() >= 6 && args[4] == "--" => {
            let pid: i32 = args[3].parse().unwrap_or_else(|_| usage());
            let tty = mode == "exec-tty";
            helpers::exec::helper_main(Path::new(&args[2]), pid, tty, args[5..].to_vec())
        }
        _ => usage(),
    }
}
