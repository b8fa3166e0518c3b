//! The one place skiff errors become gRPC statuses.

use tonic::{Code, Status};

use crate::error::Error;

pub fn to_status(e: Error) -> Status {
    let code = match &e {
        Error::InvalidArgument(_) => Code::InvalidArgument,
        Error::NotFound(_) => Code::NotFound,
        Error::AlreadyExists(_) => Code::AlreadyExists,
        Error::Unauthenticated(_) => Code::Unauthenticated,
        Error::Unavailable(_) => Code::Unavailable,
        Error::FailedPrecondition(_) => Code::FailedPrecondition,
        Error::Corrupt(_) => Code::DataLoss,
        Error::DeadlineExceeded(_) => Code::DeadlineExceeded,
        Error::ResourceExhausted(_) => Code::ResourceExhausted,
        Error::Unsupported(_) => Code::InvalidArgument,
        Error::Io { .. } | Error::Internal(_) => Code::Internal,
    };
    Status::new(code, e.to_string())
}
