//! `skiff`: skiffd's admin CLI, for operators without crictl. It speaks CRI to skiffd over its
//! socket, as kubelet and crictl do:
//!
//! - `skiff checkpoint CONTAINER --export=ARCHIVE`: CheckpointContainer (the container runs on).
//! - `skiff restore --import=ARCHIVE --pod POD`: CreateContainer of the archive in the pod, then
//!   StartContainer; prints the new container's id. The bind mounts the archive records are
//!   given again from where they were, unless `--mount HOST:CONTAINER[:ro]` says otherwise.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use skiff_proto::cri::runtime_service_client::RuntimeServiceClient;
use skiff_proto::cri::{
    CheckpointContainerRequest, ContainerConfig, ContainerMetadata, CreateContainerRequest,
    ImageSpec, Mount, StartContainerRequest,
};

#[derive(Parser)]
#[command(
    name = "skiff",
    about = "skiffd's admin CLI: checkpoint and restore containers"
)]
struct Cli {
    /// skiffd's CRI socket.
    #[arg(long, env = "SKIFF_SOCKET", default_value = skiff_runtime::config::DEFAULT_LISTEN)]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Checkpoints a running container into an archive; the container runs on.
    Checkpoint {
        /// The container's id.
        container: String,
        /// Where the archive is written.
        #[arg(long)]
        export: PathBuf,
        /// Seconds the dump may take (0: skiffd's default).
        #[arg(long, default_value_t = 0)]
        timeout: i64,
    },
    /// Restores a checkpoint archive as a new container of a running pod, and starts it.
    Restore {
        /// The checkpoint archive.
        #[arg(long = "import")]
        archive: PathBuf,
        /// The pod sandbox to restore into.
        #[arg(long)]
        pod: String,
        /// The container's name (default: the checkpointed container's).
        #[arg(long)]
        name: Option<String>,
        /// A bind mount, HOST:CONTAINER or HOST:CONTAINER:ro; the archive's others keep the
        /// source they had.
        #[arg(long = "mount")]
        mounts: Vec<String>,
        /// The container's log file, relative to the pod's log directory.
        #[arg(long, default_value = "")]
        log_path: String,
    },
}

fn absolute(p: &Path) -> Result<PathBuf, String> {
    std::path::absolute(p).map_err(|e| format!("{}: {e}", p.display()))
}

fn parse_mount(s: &str) -> Result<Mount, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let (host, ctr, readonly) = match parts.as_slice() {
        [h, c] => (*h, *c, false),
        [h, c, "ro"] => (*h, *c, true),
        [h, c, "rw"] => (*h, *c, false),
        _ => return Err(format!("--mount {s:?}: expected HOST:CONTAINER[:ro]")),
    };
    if !Path::new(ctr).is_absolute() || host.is_empty() {
        return Err(format!(
            "--mount {s:?}: the container path must be absolute and the host path given"
        ));
    }
    Ok(Mount {
        host_path: absolute(Path::new(host))?.display().to_string(),
        container_path: ctr.to_string(),
        readonly,
        ..Default::default()
    })
}

/// The bind mounts an archive records (`bind.mounts`: destination, source, readonly).
fn recorded_mounts(archive: &Path) -> Result<Vec<Mount>, String> {
    let f = std::fs::File::open(archive).map_err(|e| format!("{}: {e}", archive.display()))?;
    let mut tar = tar::Archive::new(f);
    let entries = tar
        .entries()
        .map_err(|e| format!("{}: {e}", archive.display()))?;
    for e in entries {
        let mut e = e.map_err(|e| format!("{}: {e}", archive.display()))?;
        let name = e
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if name.trim_start_matches("./") != "bind.mounts" {
            continue;
        }
        let mut raw = String::new();
        e.read_to_string(&mut raw)
            .map_err(|e| format!("{}: bind.mounts: {e}", archive.display()))?;
        let list: Vec<serde_json::Value> = serde_json::from_str(&raw)
            .map_err(|e| format!("{}: bind.mounts: {e}", archive.display()))?;
        return Ok(list
            .iter()
            .filter_map(|m| {
                Some(Mount {
                    container_path: m["destination"].as_str()?.to_string(),
                    host_path: m["source"].as_str()?.to_string(),
                    readonly: m["readonly"].as_bool().unwrap_or(false),
                    ..Default::default()
                })
            })
            .collect());
    }
    Ok(vec![])
}

async fn run(cli: Cli) -> Result<(), String> {
    let ch = skiff_runtime::pod::shim_client::unix_channel(&cli.socket)
        .await
        .map_err(|e| format!("skiffd does not answer at {}: {e}", cli.socket.display()))?;
    let mut rt = RuntimeServiceClient::new(ch);
    let status = |what: &str, s: tonic::Status| format!("{what}: {} ({:?})", s.message(), s.code());
    match cli.command {
        Command::Checkpoint {
            container,
            export,
            timeout,
        } => {
            let location = absolute(&export)?;
            rt.checkpoint_container(CheckpointContainerRequest {
                container_id: container.clone(),
                location: location.display().to_string(),
                timeout,
            })
            .await
            .map_err(|s| status("CheckpointContainer", s))?;
            println!("{}", location.display());
        }
        Command::Restore {
            archive,
            pod,
            name,
            mounts,
            log_path,
        } => {
            let archive = absolute(&archive)?;
            let mut given = mounts
                .iter()
                .map(|m| parse_mount(m))
                .collect::<Result<Vec<_>, _>>()?;
            for m in recorded_mounts(&archive)? {
                if !given.iter().any(|g| g.container_path == m.container_path) {
                    given.push(m);
                }
            }
            let config = ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: name.unwrap_or_default(),
                    attempt: 0,
                }),
                image: Some(ImageSpec {
                    image: archive.display().to_string(),
                    ..Default::default()
                }),
                mounts: given,
                log_path,
                ..Default::default()
            };
            let id = rt
                .create_container(CreateContainerRequest {
                    pod_sandbox_id: pod,
                    config: Some(config),
                    sandbox_config: None,
                })
                .await
                .map_err(|s| status("CreateContainer", s))?
                .into_inner()
                .container_id;
            rt.start_container(StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .map_err(|s| status(&format!("StartContainer {id}"), s))?;
            println!("{id}");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("skiff: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("skiff: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_parse() {
        let m = parse_mount("/srv/data:/data:ro").unwrap();
        assert_eq!(
            (m.host_path.as_str(), m.container_path.as_str(), m.readonly),
            ("/srv/data", "/data", true)
        );
        assert!(parse_mount("/srv/data").is_err());
        assert!(parse_mount("/srv:data").is_err());
        assert!(parse_mount("/a:/b:rx").is_err());
    }
}
