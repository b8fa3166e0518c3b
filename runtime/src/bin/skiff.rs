//! `skiff`: skiffd's admin CLI, for operators without crictl. It speaks CRI to skiffd over its
//! socket, as kubelet and crictl do:
//!
//! - `skiff checkpoint CONTAINER --export=ARCHIVE`: CheckpointContainer (the container runs on).
//! - `skiff restore --import=ARCHIVE --pod POD`: CreateContainer of the archive in the pod, then
//!   StartContainer; prints the new container's id. The bind mounts the archive records are
//!   given again from where they were, unless `--mount HOST:CONTAINER[:ro]` says otherwise.
//! - `skiff events`: follows GetContainerEvents, one line per event.
//! - `skiff top`: pods and their containers with CPU and memory (ListPodSandboxStats),
//!   refreshed every `--interval` seconds, or printed once with `--once`.
//! - `skiff check`: the node preflight (`skiff_runtime::check`), with skiffd's configuration
//!   and flags; `--json` for tooling; exits 1 when a check finds an error. Needs no skiffd.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use skiff_proto::cri::runtime_service_client::RuntimeServiceClient;
use skiff_proto::cri::{
    CheckpointContainerRequest, ContainerConfig, ContainerEventResponse, ContainerEventType,
    ContainerMetadata, CreateContainerRequest, GetEventsRequest, ImageSpec,
    ListPodSandboxStatsRequest, Mount, PodSandboxStats, StartContainerRequest,
};

#[derive(Parser)]
#[command(
    name = "skiff",
    about = "skiffd's admin CLI: checkpoint and restore containers, follow events, watch usage"
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
    /// Follows container and pod events (GetContainerEvents), one line each:
    /// TIME EVENT KIND ID POD[/CONTAINER] STATE.
    Events {
        /// Exit after this many events.
        #[arg(long)]
        count: Option<usize>,
    },
    /// Pods and their containers with CPU (millicores) and memory (working set), refreshed.
    Top {
        /// Print once (after one interval, for the CPU rate) and exit.
        #[arg(long)]
        once: bool,
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 2)]
        interval: u64,
    },
    /// Checks this node for what skiffd needs (kernel, cgroups, systemd, user namespaces,
    /// overlayfs, seccomp, AppArmor/SELinux, CRIU, CNI, permissions, clock, entropy), with
    /// skiffd's config file and flags. Exits 1 when a check finds an error.
    Check {
        /// Prints the findings as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        flags: skiff_runtime::config::Flags,
    },
}

/// `skiff check`: prints the findings; Ok(true) when none is an error.
fn check(json: bool, flags: skiff_runtime::config::Flags) -> Result<bool, String> {
    use skiff_runtime::check::{config, render, run, Level};
    let file = flags
        .config
        .clone()
        .unwrap_or_else(|| skiff_runtime::config::DEFAULT_CONFIG.into());
    // A configuration skiffd refuses is the one finding: the others depend on it.
    let findings = match skiff_runtime::config::Config::load(flags) {
        Ok(cfg) => {
            let mut all = vec![config(&file, None)];
            all.extend(run(&cfg));
            all
        }
        Err(e) => vec![config(&file, Some(e.to_string()))],
    };
    if json {
        let text = serde_json::to_string_pretty(&findings).map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        print!("{}", render(&findings));
    }
    Ok(!findings.iter().any(|f| f.level == Level::Error))
}

/// One event as `skiff events` prints it.
fn event_line(ev: &ContainerEventResponse) -> String {
    let kind = ContainerEventType::try_from(ev.container_event_type)
        .map(|k| match k {
            ContainerEventType::ContainerCreatedEvent => "CREATED",
            ContainerEventType::ContainerStartedEvent => "STARTED",
            ContainerEventType::ContainerStoppedEvent => "STOPPED",
            ContainerEventType::ContainerDeletedEvent => "DELETED",
        })
        .unwrap_or("UNKNOWN");
    let pod = ev.pod_sandbox_status.as_ref();
    let pod_name = pod
        .and_then(|p| p.metadata.as_ref())
        .map(|m| format!("{}/{}", m.namespace, m.name))
        .unwrap_or_else(|| "-".into());
    let is_pod = pod.is_some_and(|p| p.id == ev.container_id)
        || (pod.is_none() && ev.containers_statuses.is_empty());
    let (what, name, state) = if is_pod {
        let state = pod
            .map(|p| {
                skiff_proto::cri::PodSandboxState::try_from(p.state)
                    .map(|s| s.as_str_name().to_string())
                    .unwrap_or_default()
            })
            .unwrap_or_else(|| "GONE".into());
        ("pod", pod_name, state)
    } else {
        let c = ev
            .containers_statuses
            .iter()
            .find(|c| c.id == ev.container_id);
        let cname = c
            .and_then(|c| c.metadata.as_ref())
            .map(|m| m.name.clone())
            .unwrap_or_else(|| "-".into());
        let state = match c {
            Some(c) => {
                let s = skiff_proto::cri::ContainerState::try_from(c.state)
                    .map(|s| s.as_str_name().to_string())
                    .unwrap_or_default();
                if c.finished_at > 0 {
                    format!("{s} exit={}", c.exit_code)
                } else {
                    s
                }
            }
            None => "GONE".into(),
        };
        ("container", format!("{pod_name}/{cname}"), state)
    };
    let id: String = ev.container_id.chars().take(13).collect();
    format!(
        "{} {kind} {what} {id} {name} {state}",
        rfc3339(ev.created_at)
    )
}

/// Unix nanoseconds as UTC RFC 3339 with milliseconds.
fn rfc3339(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let ms = ns.rem_euclid(1_000_000_000) / 1_000_000;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The table `skiff top` prints.
fn top_table(stats: &[PodSandboxStats]) -> String {
    let cores = |c: Option<&skiff_proto::cri::CpuUsage>| {
        c.and_then(|c| c.usage_nano_cores.as_ref())
            .map(|v| format!("{}m", v.value / 1_000_000))
            .unwrap_or_else(|| "-".into())
    };
    let mem = |m: Option<&skiff_proto::cri::MemoryUsage>| {
        m.and_then(|m| m.working_set_bytes.as_ref())
            .map(|v| format!("{:.1}Mi", v.value as f64 / 1048576.0))
            .unwrap_or_else(|| "-".into())
    };
    let mut rows = vec![format!(
        "{:<40} {:>8} {:>10}",
        "POD / CONTAINER", "CPU", "MEMORY"
    )];
    let mut stats: Vec<&PodSandboxStats> = stats.iter().collect();
    stats.sort_by_key(|p| {
        p.attributes
            .as_ref()
            .and_then(|a| a.metadata.as_ref())
            .map(|m| (m.namespace.clone(), m.name.clone()))
    });
    for p in stats {
        let name = p
            .attributes
            .as_ref()
            .and_then(|a| a.metadata.as_ref())
            .map(|m| format!("{}/{}", m.namespace, m.name))
            .unwrap_or_default();
        let l = p.linux.as_ref();
        rows.push(format!(
            "{:<40} {:>8} {:>10}",
            name,
            cores(l.and_then(|l| l.cpu.as_ref())),
            mem(l.and_then(|l| l.memory.as_ref()))
        ));
        for c in l.map(|l| l.containers.as_slice()).unwrap_or_default() {
            let cname = c
                .attributes
                .as_ref()
                .and_then(|a| a.metadata.as_ref())
                .map(|m| m.name.clone())
                .unwrap_or_default();
            rows.push(format!(
                "  {:<38} {:>8} {:>10}",
                cname,
                cores(c.cpu.as_ref()),
                mem(c.memory.as_ref())
            ));
        }
    }
    rows.join("\n") + "\n"
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
        // Answered in main, without skiffd.
        Command::Check { .. } => return Err("check needs no socket".into()),
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
        Command::Events { count } => {
            let mut events = rt
                .get_container_events(GetEventsRequest {})
                .await
                .map_err(|s| status("GetContainerEvents", s))?
                .into_inner();
            let mut seen = 0;
            while count.is_none_or(|n| seen < n) {
                match events.message().await {
                    Ok(Some(ev)) => {
                        println!("{}", event_line(&ev));
                        seen += 1;
                    }
                    Ok(None) => return Err("skiffd ended the event stream".into()),
                    Err(s) => return Err(status("GetContainerEvents", s)),
                }
            }
        }
        Command::Top { once, interval } => {
            let interval = std::time::Duration::from_secs(interval.max(1));
            // The first reading gives skiffd a CPU sample to rate the next one against.
            let mut first = true;
            loop {
                let stats = rt
                    .list_pod_sandbox_stats(ListPodSandboxStatsRequest { filter: None })
                    .await
                    .map_err(|s| status("ListPodSandboxStats", s))?
                    .into_inner()
                    .stats;
                if !first {
                    if !once {
                        // Clear the terminal and go home, as top does.
                        print!("\x1b[2J\x1b[H");
                    }
                    print!("{}", top_table(&stats));
                    if once {
                        break;
                    }
                }
                first = false;
                tokio::time::sleep(interval).await;
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Check { json, flags } = cli.command {
        return match check(json, flags) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                eprintln!("skiff check: {e}");
                ExitCode::from(2)
            }
        };
    }
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
    fn times_print_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(1_796_224_726_333_408_275),
            "2026-12-02T15:18:46.333Z"
        );
    }

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
