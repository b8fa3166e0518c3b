//! Image references as users write them, normalised the way Docker and the other CRI runtimes do:
//! `busybox` is `docker.io/library/busybox:latest`; `host:5000/app@sha256:…` names a digest.

use std::fmt;

use crate::error::{Error, Result};

/// A parsed, normalised image reference.
#[derive(Debug, Clone)]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

/// Longest repository name (`registry/` excluded), as Docker's.
const NAME_MAX: usize = 255;

impl ImageRef {
    /// Parses `s`, refusing anything that is not a valid reference with a message naming it.
    /// The grammar is Docker's (`distribution/reference`), ASCII only as Go's regexp is: tags
    /// are `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`, path components lower-case alphanumerics
    /// joined by `.`, `_`, `__` or dashes, and a first component naming a host (it has a `.`
    /// or a `:`, or is `localhost`) is the registry. Only sha256 digests are accepted.
    pub fn parse(s: &str) -> Result<ImageRef> {
        if s.trim().is_empty() {
            return Err(Error::InvalidArgument("image reference is empty".into()));
        }
        if s.trim() != s {
            return Err(Error::InvalidArgument(format!(
                "image reference {s:?} has surrounding white space"
            )));
        }
        let bad = |m: &str| Error::InvalidArgument(format!("invalid image reference {s:?}: {m}"));
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                check_digest(d).map_err(|m| bad(&m))?;
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        // A tag follows the last `:` after the last `/` (a registry's port comes before it).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let tag = &rest[last_slash + i + 1..];
                if !valid_tag(tag) {
                    return Err(bad(&format!(
                        "tag {tag:?} is not [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}"
                    )));
                }
                (&rest[..last_slash + i], Some(tag.to_string()))
            }
            None => (rest, None),
        };
        let (registry, path) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                if !valid_host(first) {
                    return Err(bad(&format!("registry {first:?} is not a host[:port]")));
                }
                (first, path)
            }
            _ => ("docker.io", name),
        };
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad("repository name must be lowercase"));
        }
        if path.is_empty() || !path.split('/').all(valid_path_component) {
            return Err(bad(&format!(
                "repository {path:?} is not lower-case alphanumerics joined by '.', '_', '__' or '-'"
            )));
        }
        let registry = if registry == "index.docker.io" {
            "docker.io"
        } else {
            registry
        };
        let repository = if registry == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        if repository.len() > NAME_MAX {
            return Err(bad(&format!(
                "repository name is longer than {NAME_MAX} characters"
            )));
        }
        Ok(ImageRef {
            registry: registry.to_string(),
            repository,
            tag,
            digest,
        })
    }

    /// The registry host as named (`docker.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path inside the registry (`library/busybox`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// `registry/repository`, the name images are recorded under.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry(), self.repository())
    }

    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// The tag, `latest` when neither a tag nor a digest was given.
    pub fn tag(&self) -> Option<&str> {
        match (self.tag.as_deref(), self.digest()) {
            (Some(t), _) => Some(t),
            (None, Some(_)) => None,
            (None, None) => Some("latest"),
        }
    }

    /// `name:tag`, when the reference has a tag and no digest (a digest pins the content, so a
    /// tag given beside it is not recorded, as Docker does).
    pub fn tagged_name(&self) -> Option<String> {
        if self.digest().is_some() {
            return None;
        }
        self.tag().map(|t| format!("{}:{t}", self.name()))
    }

    /// `name@digest` for the given digest.
    pub fn digested_name(&self, digest: &str) -> String {
        format!("{}@{digest}", self.name())
    }

    /// The tag or digest to ask the registry for.
    pub fn tag_or_digest(&self) -> &str {
        match self.digest() {
            Some(d) => d,
            None => self.tag().unwrap_or("latest"),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.digest() {
            Some(d) => write!(f, "{}@{d}", self.name()),
            None => write!(f, "{}:{}", self.name(), self.tag().unwrap_or("latest")),
        }
    }
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn valid_tag(t: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    (1..=128).contains(&t.len())
        && t.bytes().next().is_some_and(word)
        && t.bytes().all(|b| word(b) || b == b'.' || b == b'-')
}

/// `[a-z0-9]+` components joined by one `.`, one `_`, `__`, or any number of `-`.
fn valid_path_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let b = c.as_bytes();
    if b.first().is_none_or(|&x| !alnum(x)) || b.last().is_none_or(|&x| !alnum(x)) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

/// `domain-component('.'domain-component)*(:port)?`, a component being alphanumerics with
/// inner dashes; `[v6 address]` for IPv6.
fn valid_host(h: &str) -> bool {
    let (host, port) = match h.rsplit_once(':') {
        Some((host, port))
            if !host.ends_with(':') && (!host.starts_with('[') || host.ends_with(']')) =>
        {
            (host, Some(port))
        }
        _ => (h, None),
    };
    if port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
        return false;
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !host.is_empty()
        && host.split('.').all(|c| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !c.starts_with('-')
                && !c.ends_with('-')
        })
}

/// Checks that `d` is a `sha256:` digest of 64 lower-case hex digits, the only kind skiff stores.
pub fn check_digest(d: &str) -> std::result::Result<(), String> {
    let hex = d
        .strip_prefix("sha256:")
        .ok_or_else(|| format!("digest {d:?} is not sha256"))?;
    if hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(format!("digest {d:?} is not 64 lower-case hex digits"))
    }
}

/// The hex part of a checked `sha256:` digest.
pub fn digest_hex(d: &str) -> &str {
    d.strip_prefix("sha256:").unwrap_or(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_names_are_normalised() {
        let r = ImageRef::parse("busybox").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(r.tagged_name().unwrap(), "docker.io/library/busybox:latest");
        let r = ImageRef::parse("me/app:1.2").unwrap();
        assert_eq!(r.to_string(), "docker.io/me/app:1.2");
    }

    #[test]
    fn registry_hosts_and_digests() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("127.0.0.1:5000/x/y@{d}")).unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "x/y");
        assert_eq!(r.digest(), Some(d.as_str()));
        assert_eq!(r.tagged_name(), None);
        assert_eq!(r.tag_or_digest(), d);
        let r = ImageRef::parse("localhost:5000/y:v1").unwrap();
        assert_eq!(r.to_string(), "localhost:5000/y:v1");
    }

    #[test]
    fn the_grammar_of_docker_references() {
        let d = format!("sha256:{}", "f".repeat(64));
        for (input, registry, repository, tag) in [
            ("test.com/repo:tag", "test.com", "repo", Some("tag")),
            ("test:5000/repo", "test:5000", "repo", Some("latest")),
            (
                "lowercase:Uppercase",
                "docker.io",
                "library/lowercase",
                Some("Uppercase"),
            ),
            (
                "sub-dom1.foo.com/bar/baz/quux:some-long-tag",
                "sub-dom1.foo.com",
                "bar/baz/quux",
                Some("some-long-tag"),
            ),
            (
                "b.gcr.io/test.example.com/my-app:test.example.com",
                "b.gcr.io",
                "test.example.com/my-app",
                Some("test.example.com"),
            ),
            (
                "xn--n3h.com/myimage:xn--n3h.com",
                "xn--n3h.com",
                "myimage",
                Some("xn--n3h.com"),
            ),
            (
                "foo_bar.com:8080",
                "docker.io",
                "library/foo_bar.com",
                Some("8080"),
            ),
            (
                "foo/foo_bar.com:8080",
                "docker.io",
                "foo/foo_bar.com",
                Some("8080"),
            ),
            (
                "index.docker.io/busybox",
                "docker.io",
                "library/busybox",
                Some("latest"),
            ),
            (
                "localhost/a__b/c---d:_t",
                "localhost",
                "a__b/c---d",
                Some("_t"),
            ),
            ("[::1]:5000/a", "[::1]:5000", "a", Some("latest")),
            ("127.0.0.1:5000/a:v1", "127.0.0.1:5000", "a", Some("v1")),
        ] {
            let r = ImageRef::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(
                (r.registry(), r.repository(), r.tag()),
                (registry, repository, tag),
                "{input}"
            );
        }
        let r = ImageRef::parse(&format!("test:5000/repo:tag@{d}")).unwrap();
        assert_eq!((r.repository(), r.digest()), ("repo", Some(d.as_str())));
        assert_eq!(r.to_string(), format!("test:5000/repo@{d}"));
        assert!(ImageRef::parse(&format!("a:{}", "t".repeat(128))).is_ok());
        assert!(ImageRef::parse(&format!("a:{}", "t".repeat(129))).is_err());
        assert!(ImageRef::parse(&format!("x.io/{}", "a".repeat(255))).is_ok());
        assert!(ImageRef::parse(&format!("x.io/{}", "a".repeat(256))).is_err());
    }

    #[test]
    fn malformed_references_are_refused_by_name() {
        for bad in [
            "",
            " busybox",
            "UPPER/case",
            "busybox:",
            "a@sha256:xyz",
            "a@md5:0123",
            "x:5000/y@sha256:ABCDEF",
            ":justtag",
            "aa/asdf$$^/aa",
            "a/b:t\u{e9}g",
            "a/-b",
            "a/b-",
            "a/b..c",
            "a//b",
            "a/b___c",
            "-x.com/a",
            "x.com:/a",
            "x.com:5000a/a",
            "[::1/a",
            "test:5000/Uppercase/lowercase:tag",
        ] {
            let err = ImageRef::parse(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{bad:?}: {err}");
        }
    }
}
