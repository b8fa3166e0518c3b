//! Attach: a client connected to the stdio of a container's main process. Output reaches it
//! from the container's output pumps (beside the CRI log) from the moment it attaches; its
//! input goes to the container's stdin (a pipe, or the pty of a tty container) when the
//! container was created with stdin. With `stdin_once`, the container's stdin closes when the
//! first session that had stdin ends.

use std::sync::Arc;

use skiff_proto::shim::{stdio_in, StdioIn, StdioOut, StdioStart};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::supervisor::container::{resize, Container};

pub async fn attach(
    c: Arc<Container>,
    start: StdioStart,
    mut input: tonic::Streaming<StdioIn>,
) -> Result<ReceiverStream<Result<StdioOut, Status>>, Status> {
    if !c.is_running() {
        return Err(Status::failed_precondition(format!(
            "container {} is not running",
            c.id
        )));
    }
    if start.tty != c.pty.is_some() {
        return Err(Status::invalid_argument(format!(
            "tty: {} does not match container {}, created with tty {}",
            start.tty,
            c.id,
            c.pty.is_some()
        )));
    }
    if start.stdin && c.stdin.lock().await.is_none() {
        return Err(Status::failed_precondition(format!(
            "stdin: container {} has no stdin to attach to (created without stdin, or its \
             stdin_once input has ended)",
            c.id
        )));
    }
    let (tx, rx) = mpsc::channel(256);
    // A tty container's output is all stdout.
    let tap = c.taps.add(start.stdout, start.stderr && !start.tty, tx);
    tokio::spawn(async move {
        let mut stdin_open = start.stdin;
        loop {
            match input.message().await {
                Ok(Some(StdioIn { msg: Some(m) })) => match m {
                    stdio_in::Msg::Stdin(data) if stdin_open => {
                        let mut w = c.stdin.lock().await;
                        if let Some(writer) = w.as_ref() {
                            if writer.write_all(&data).await.is_err() {
                                *w = None;
                            }
                        }
                    }
                    stdio_in::Msg::CloseStdin(_) if stdin_open => {
                        stdin_open = false;
                        if c.stdin_once {
                            close_stdin(&c).await;
                        }
                    }
                    stdio_in::Msg::Resize(sz) => {
                        if let Some(p) = &c.pty {
                            resize(p, sz.width, sz.height);
                        }
                    }
                    _ => {}
                },
                Ok(Some(_)) => {}
                // The client detached or went away: the container runs on.
                Ok(None) | Err(_) => break,
            }
        }
        if stdin_open && c.stdin_once {
            close_stdin(&c).await;
        }
        c.taps.remove(tap);
    });
    Ok(ReceiverStream::new(rx))
}

/// Ends the container's stdin: the pipe closes; a pty gets its EOF character and the shim stops
/// writing to it.
async fn close_stdin(c: &Container) {
    let mut w = c.stdin.lock().await;
    if let (Some(writer), true) = (w.as_ref(), c.pty.is_some()) {
        let _ = writer.write_all(&[4]).await;
    }
    *w = None;
}
