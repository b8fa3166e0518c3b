//! Images kubelet must never garbage-collect: the config's `pinned_images`, reported as
//! `Image.pinned`. Patterns are taken as CRI-O takes them: an exact reference (normalized, so
//! `busybox` is `docker.io/library/busybox:latest`), a glob ending in `*` (a prefix of the
//! name as written in `repo_tags`/`repo_digests`), or a keyword between two `*`s.

use super::reference::ImageRef;
use super::store::ImageRecord;

#[derive(Debug, Clone, PartialEq)]
enum Pattern {
    Exact(String),
    Prefix(String),
    Keyword(String),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PinnedImages(Vec<Pattern>);

impl PinnedImages {
    /// The patterns of `pinned_images`; an error names the one that is not a reference or a
    /// glob CRI-O would take.
    pub fn parse(list: &[String]) -> Result<PinnedImages, String> {
        let mut out = vec![];
        for p in list {
            let bad = || format!("pinned_images: {p:?} is not an image reference or a glob");
            let pattern = match (p.strip_prefix('*'), p.strip_suffix('*')) {
                (Some(rest), _) => {
                    let word = rest.strip_suffix('*').ok_or_else(bad)?;
                    if word.is_empty() || word.contains('*') {
                        return Err(bad());
                    }
                    Pattern::Keyword(word.to_string())
                }
                (None, Some(prefix)) => {
                    if prefix.is_empty() || prefix.contains('*') {
                        return Err(bad());
                    }
                    Pattern::Prefix(prefix.to_string())
                }
                (None, None) => {
                    let r = ImageRef::parse(p).map_err(|e| format!("{}: {e}", bad()))?;
                    Pattern::Exact(match r.digest() {
                        Some(d) => r.digested_name(d),
                        None => r.tagged_name().ok_or_else(bad)?,
                    })
                }
            };
            out.push(pattern);
        }
        Ok(PinnedImages(out))
    }

    /// Whether any name of `rec` (its tags and digests) matches a pattern.
    pub fn matches(&self, rec: &ImageRecord) -> bool {
        if self.0.is_empty() {
            return false;
        }
        rec.repo_tags
            .iter()
            .chain(rec.repo_digests.iter())
            .any(|name| {
                self.0.iter().any(|p| match p {
                    Pattern::Exact(e) => name == e,
                    Pattern::Prefix(pre) => name.starts_with(pre.as_str()),
                    Pattern::Keyword(w) => name.contains(w.as_str()),
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(tags: &[&str]) -> ImageRecord {
        ImageRecord {
            id: "sha256:x".into(),
            repo_tags: tags.iter().map(|s| s.to_string()).collect(),
            repo_digests: vec![],
            manifest_digest: String::new(),
            blobs: vec![],
            chain_ids: vec![],
            size: 0,
            user: String::new(),
            annotations: Default::default(),
        }
    }

    #[test]
    fn exact_glob_and_keyword() {
        let p = PinnedImages::parse(&[
            "busybox".into(),
            "registry.k8s.io/pause*".into(),
            "*agent*".into(),
        ])
        .unwrap();
        assert!(p.matches(&rec(&["docker.io/library/busybox:latest"])));
        assert!(!p.matches(&rec(&["docker.io/library/busybox:1.36"])));
        assert!(p.matches(&rec(&["registry.k8s.io/pause:3.10"])));
        assert!(p.matches(&rec(&["quay.io/x/node-agent:v1"])));
        assert!(!p.matches(&rec(&["quay.io/x/nginx:v1"])));
        assert!(!PinnedImages::default().matches(&rec(&["busybox"])));
        for bad in ["*", "**", "a*b", "*a", "UPPER/case", "a**"] {
            assert!(PinnedImages::parse(&[bad.to_string()]).is_err(), "{bad}");
        }
    }
}
