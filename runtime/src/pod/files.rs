//! The pod's /etc/hosts, /etc/resolv.conf and /etc/hostname, written into its run directory and
//! bind-mounted into each container.

use std::path::Path;

use skiff_proto::cri::DnsConfig;

use crate::error::{IoContext, Result};
use crate::store;

pub const HOSTS: &str = "hosts";
pub const RESOLV_CONF: &str = "resolv.conf";
pub const HOSTNAME: &str = "hostname";

const DEFAULT_HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n";

/// resolv.conf text for a DNSConfig; None means "use the host's".
pub fn resolv_conf(dns: Option<&DnsConfig>) -> Option<String> {
    let d = dns?;
    if d.servers.is_empty() && d.searches.is_empty() && d.options.is_empty() {
        return None;
    }
    let mut s = String::new();
    if !d.searches.is_empty() {
        s.push_str(&format!("search {}\n", d.searches.join(" ")));
    }
    for n in &d.servers {
        s.push_str(&format!("nameserver {n}\n"));
    }
    if !d.options.is_empty() {
        s.push_str(&format!("options {}\n", d.options.join(" ")));
    }
    Some(s)
}

/// Writes the three files into `dir`.
pub fn write(
    dir: &Path,
    hostname: &str,
    dns: Option<&DnsConfig>,
    host_network: bool,
) -> Result<()> {
    let hosts = if host_network {
        std::fs::read_to_string("/etc/hosts").unwrap_or_else(|_| DEFAULT_HOSTS.to_string())
    } else {
        DEFAULT_HOSTS.to_string()
    };
    let resolv = match resolv_conf(dns) {
        Some(r) => r,
        None => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    };
    for (name, text) in [
        (HOSTS, hosts),
        (RESOLV_CONF, resolv),
        (HOSTNAME, format!("{hostname}\n")),
    ] {
        let p = dir.join(name);
        store::write_atomic_volatile(&p, text.as_bytes())
            .ctx(|| format!("writing {}", p.display()))?;
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .ctx(|| format!("setting mode of {}", p.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_from_dns_config() {
        let d = DnsConfig {
            servers: vec!["10.0.0.10".into()],
            searches: vec!["ns.svc.cluster.local".into(), "svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            resolv_conf(Some(&d)).unwrap(),
            "search ns.svc.cluster.local svc.cluster.local\nnameserver 10.0.0.10\noptions ndots:5\n"
        );
        assert!(resolv_conf(Some(&DnsConfig::default())).is_none());
        assert!(resolv_conf(None).is_none());
    }
}
