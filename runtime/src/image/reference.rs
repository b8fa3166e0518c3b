//! Image references as users write them, normalised the way Docker and the other CRI runtimes do:
//! `busybox` is `docker.io/library/busybox:latest`; `host:5000/app@sha256:…` names a digest.

use std::fmt;

use crate::error::{Error, Result};

/// A parsed, normalised image reference.
#[derive(Debug, Clone)]
pub struct ImageRef {
    inner: oci_client::Reference,
}

impl ImageRef {
    /// Parses `s`, refusing anything that is not a valid reference with a message naming it.
    pub fn parse(s: &str) -> Result<ImageRef> {
        if s.trim().is_empty() {
            return Err(Error::InvalidArgument("image reference is empty".into()));
        }
        if s.trim() != s {
            return Err(Error::InvalidArgument(format!(
                "image reference {s:?} has surrounding white space"
            )));
        }
        let inner: oci_client::Reference = s
            .parse()
            .map_err(|e| Error::InvalidArgument(format!("invalid image reference {s:?}: {e}")))?;
        if inner.repository().bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(Error::InvalidArgument(format!(
                "invalid image reference {s:?}: repository name must be lowercase"
            )));
        }
        if let Some(d) = inner.digest() {
            check_digest(d).map_err(|m| {
                Error::InvalidArgument(format!("invalid image reference {s:?}: {m}"))
            })?;
        }
        Ok(ImageRef { inner })
    }

    /// The registry host as named (`docker.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        self.inner.registry()
    }

    /// The repository path inside the registry (`library/busybox`).
    pub fn repository(&self) -> &str {
        self.inner.repository()
    }

    /// `registry/repository`, the name images are recorded under.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry(), self.repository())
    }

    pub fn digest(&self) -> Option<&str> {
        self.inner.digest()
    }

    /// The tag, `latest` when neither a tag nor a digest was given.
    pub fn tag(&self) -> Option<&str> {
        match (self.inner.tag(), self.inner.digest()) {
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
    fn malformed_references_are_refused_by_name() {
        for bad in [
            "",
            " busybox",
            "UPPER/case",
            "busybox:",
            "a@sha256:xyz",
            "a@md5:0123",
            "x:5000/y@sha256:ABCDEF",
        ] {
            let err = ImageRef::parse(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{bad:?}: {err}");
        }
    }
}
