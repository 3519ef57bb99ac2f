//! The fake's terminal: whatever is written to `input` comes back on `output` (a terminal's
//! echo, with nothing behind it), so a test can round-trip keystrokes; resizes are recorded.

use async_trait::async_trait;
use futures::StreamExt;
use tokio::io::AsyncReadExt;

use super::FakeRuntime;
use crate::{RuntimeError, TtyResize, TtySession};

/// Bytes in flight between `input` and `output` before a writer waits.
const PIPE_CAPACITY: usize = 64 * 1024;

struct FakeResize(FakeRuntime);

#[async_trait]
impl TtyResize for FakeResize {
    async fn resize(&self, cols: u16, rows: u16) -> Result<(), RuntimeError> {
        self.0.state().tty_sizes.push((cols, rows));
        Ok(())
    }
}

/// A session whose output echoes its input and ends when the input is dropped.
pub(super) fn echo_session(rt: FakeRuntime) -> TtySession {
    let (input, echo) = tokio::io::duplex(PIPE_CAPACITY);
    // The state is `None` after an error, which ends the stream.
    let output = futures::stream::unfold(Some(echo), |echo| async move {
        let mut echo = echo?;
        let mut buf = vec![0u8; 4096];
        match echo.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(buf), Some(echo)))
            }
            Err(e) => Some((
                Err(RuntimeError::Backend(format!("terminal output: {e}"))),
                None,
            )),
        }
    });
    TtySession {
        output: output.boxed(),
        input: Box::pin(input),
        resizer: Box::new(FakeResize(rt)),
    }
}
