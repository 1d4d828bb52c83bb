//! WASI p2 as a guest sees it: clocks and random numbers; stdout and stderr
//! captured up to a byte cap; no preopened directories, environment,
//! arguments, or network (every address denied).

use std::sync::{Arc, Mutex};

use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxView};

/// One delivery's WASI state. The context is built on the guest's first
/// WASI call: many handlers never make one.
pub(crate) struct Wasi {
    ctx: Option<WasiCtx>,
    table: ResourceTable,
    pub output: CapturedOutput,
}

impl Wasi {
    pub(crate) fn new(max_output_bytes: usize) -> Wasi {
        Wasi {
            ctx: None,
            table: ResourceTable::new(),
            output: CapturedOutput::new(max_output_bytes),
        }
    }

    pub(crate) fn view(&mut self) -> WasiCtxView<'_> {
        let output = &self.output;
        WasiCtxView {
            ctx: self.ctx.get_or_insert_with(|| sandboxed(output)),
            table: &mut self.table,
        }
    }
}

/// The WASI context a guest gets: its stdout and stderr captured, no
/// preopened directories, no environment, no arguments, and a socket policy
/// that denies every address.
fn sandboxed(output: &CapturedOutput) -> WasiCtx {
    WasiCtx::builder()
        .stdout(output.stream(Stream::Stdout))
        .stderr(output.stream(Stream::Stderr))
        .allow_ip_name_lookup(false)
        .allow_tcp(false)
        .allow_udp(false)
        .build()
}

/// Which guest stream a write came from.
#[derive(Debug, Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

/// How much of the end of stderr is always kept, whatever the cap: a trap's
/// reason quotes it (a panic message, a traceback's last line).
const STDERR_TAIL: usize = 1024;

#[derive(Default)]
struct Captured {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    stderr_tail: std::collections::VecDeque<u8>,
    dropped: u64,
}

/// What a guest wrote to stdout and stderr in one delivery.
#[derive(Debug, Default)]
pub(crate) struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The last bytes written to stderr, kept even past the cap.
    pub stderr_tail: Vec<u8>,
    /// Bytes written past the cap, not kept.
    pub dropped: u64,
}

/// Guest stdout and stderr, kept up to a byte cap shared by both streams;
/// writes past the cap are accepted and counted but not kept, so a guest that
/// floods its output neither grows host memory nor fails.
#[derive(Clone)]
pub(crate) struct CapturedOutput {
    cap: usize,
    inner: Arc<Mutex<Captured>>,
}

impl CapturedOutput {
    fn new(cap: usize) -> CapturedOutput {
        CapturedOutput {
            cap,
            inner: Arc::default(),
        }
    }

    fn stream(&self, which: Stream) -> CapturedStream {
        CapturedStream {
            output: self.clone(),
            which,
        }
    }

    fn write(&self, which: Stream, bytes: &[u8]) {
        let mut c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let used = c.stdout.len() + c.stderr.len();
        let room = self.cap.saturating_sub(used);
        let keep = bytes.len().min(room);
        let buf = match which {
            Stream::Stdout => &mut c.stdout,
            Stream::Stderr => &mut c.stderr,
        };
        buf.extend_from_slice(&bytes[..keep]);
        c.dropped += (bytes.len() - keep) as u64;
        if let Stream::Stderr = which {
            let last = &bytes[bytes.len().saturating_sub(STDERR_TAIL)..];
            c.stderr_tail.extend(last);
            let over = c.stderr_tail.len().saturating_sub(STDERR_TAIL);
            c.stderr_tail.drain(..over);
        }
    }

    /// Takes what was captured, leaving the capture empty.
    pub(crate) fn take(&self) -> Output {
        let mut c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let c = std::mem::take(&mut *c);
        Output {
            stdout: c.stdout,
            stderr: c.stderr,
            stderr_tail: c.stderr_tail.into(),
            dropped: c.dropped,
        }
    }
}

struct CapturedStream {
    output: CapturedOutput,
    which: Stream,
}

impl IsTerminal for CapturedStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(CapturedStream {
            output: self.output.clone(),
            which: self.which,
        })
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(CapturedStream {
            output: self.output.clone(),
            which: self.which,
        })
    }
}

/// Largest single write the guest is told it may make.
const WRITE_BUDGET: usize = 64 * 1024;

impl OutputStream for CapturedStream {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.output.write(self.which, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_BUDGET)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturedStream {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for CapturedStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.output.write(self.which, buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_capped_across_both_streams_and_counts_the_rest() {
        let out = CapturedOutput::new(10);
        out.write(Stream::Stdout, b"123456");
        out.write(Stream::Stderr, b"abcdef");
        out.write(Stream::Stdout, b"zz");
        let got = out.take();
        assert_eq!(got.stdout, b"123456");
        assert_eq!(got.stderr, b"abcd");
        assert_eq!(got.dropped, 4);
        assert_eq!(got.stderr_tail, b"abcdef");
        assert!(out.take().stdout.is_empty());
        out.write(Stream::Stderr, &vec![b'x'; 5000]);
        out.write(Stream::Stderr, b"the end");
        let got = out.take();
        assert_eq!(got.stderr_tail.len(), STDERR_TAIL);
        assert!(got.stderr_tail.ends_with(b"the end"));
    }
}
