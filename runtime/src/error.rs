//! The one error type of skiffd. Every failure a request or the system can cause is one of these;
//! `cri::status` turns them into gRPC statuses in one place.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed: a bad reference, field or path.
    #[error("{0}")]
    InvalidArgument(String),
    /// The named thing (image, pod, container) does not exist, here or at the registry.
    #[error("{0}")]
    NotFound(String),
    /// The name or thing is already taken (a pod or container name reserved by another).
    #[error("{0}")]
    AlreadyExists(String),
    /// The registry refused the credentials, or asked for some and none were given.
    #[error("{0}")]
    Unauthenticated(String),
    /// The registry (or another peer) could not be reached or failed; trying later may work.
    #[error("{0}")]
    Unavailable(String),
    /// Something this node lacks or a state that does not allow the request.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Content did not match its digest or size: corrupt or truncated data.
    #[error("{0}")]
    Corrupt(String),
    /// A deadline passed (an exec'd command's timeout).
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The disk or a quota is full.
    #[error("{0}")]
    ResourceExhausted(String),
    /// What the registry or an image holds is valid but not something skiff supports.
    #[error("{0}")]
    Unsupported(String),
    /// A system call failed; `context` says what skiff was doing and on which path.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error with what skiff was doing when it happened. A full disk becomes
    /// [`Error::ResourceExhausted`] so the caller sees it for what it is.
    pub fn io(context: impl Into<String>, source: io::Error) -> Error {
        let context = context.into();
        match source.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => {
                Error::ResourceExhausted(format!("{context}: {source}"))
            }
            _ => Error::Io { context, source },
        }
    }

    /// Prefixes the message with more context, keeping the kind.
    pub fn context(self, what: impl std::fmt::Display) -> Error {
        match self {
            Error::InvalidArgument(m) => Error::InvalidArgument(format!("{what}: {m}")),
            Error::NotFound(m) => Error::NotFound(format!("{what}: {m}")),
            Error::AlreadyExists(m) => Error::AlreadyExists(format!("{what}: {m}")),
            Error::Unauthenticated(m) => Error::Unauthenticated(format!("{what}: {m}")),
            Error::Unavailable(m) => Error::Unavailable(format!("{what}: {m}")),
            Error::FailedPrecondition(m) => Error::FailedPrecondition(format!("{what}: {m}")),
            Error::Corrupt(m) => Error::Corrupt(format!("{what}: {m}")),
            Error::DeadlineExceeded(m) => Error::DeadlineExceeded(format!("{what}: {m}")),
            Error::ResourceExhausted(m) => Error::ResourceExhausted(format!("{what}: {m}")),
            Error::Unsupported(m) => Error::Unsupported(format!("{what}: {m}")),
            Error::Io { context, source } => Error::Io {
                context: format!("{what}: {context}"),
                source,
            },
            Error::Internal(m) => Error::Internal(format!("{what}: {m}")),
        }
    }
}

/// Adds context to I/O results: `fs::read(p).ctx(|| format!("reading {}", p.display()))`.
pub trait IoContext<T> {
    fn ctx<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| Error::io(what(), e))
    }
}

impl<T> IoContext<T> for nix::Result<T> {
    fn ctx<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| Error::io(what(), io::Error::from(e)))
    }
}

/// Refuses request strings holding a NUL byte, naming the field: no name, path, argument or
/// environment variable the kernel or a plugin takes can carry one. `fields` are (field, value).
pub fn no_nul<'a>(fields: impl IntoIterator<Item = (String, &'a str)>) -> Result<()> {
    for (field, value) in fields {
        if value.contains('\0') {
            return Err(Error::InvalidArgument(format!("{field}: holds a NUL byte")));
        }
    }
    Ok(())
}
