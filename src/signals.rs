//! SIGINT/SIGTERM: the first one asks the run to stop admitting documents, a second one ends
//! the process at once.
//!
//! The handlers only store atomics (async-signal-safe); the pipeline polls [`StopRequest`]
//! each time it is about to hand the engine a new job. The jobs already in flight (at most
//! `--sequences` of them, each at most `--max-tokens` tokens long) finish and are written, the
//! report is printed, and the run exits with 128 + the signal number. A second signal calls
//! `_exit` from the handler: records already written stay whole, because each one reaches the
//! file in one `write` (see `output`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use signal_hook::consts::{SIGINT, SIGTERM};

/// The signal that asked the run to stop, if any. Cheap to clone; all clones see the same.
#[derive(Debug, Clone, Default)]
pub struct StopRequest {
    signal: Arc<AtomicUsize>,
}

/// A signal that stops a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    Interrupt,
    Terminate,
}

impl StopSignal {
    fn number(self) -> i32 {
        match self {
            StopSignal::Interrupt => SIGINT,
            StopSignal::Terminate => SIGTERM,
        }
    }

    fn from_number(n: usize) -> Option<Self> {
        match i32::try_from(n).ok()? {
            SIGINT => Some(Self::Interrupt),
            SIGTERM => Some(Self::Terminate),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Interrupt => "SIGINT",
            StopSignal::Terminate => "SIGTERM",
        }
    }

    /// The shell's convention: 128 + the signal number (130 for SIGINT, 143 for SIGTERM).
    pub fn exit_code(self) -> u8 {
        // Both numbers are small (2 and 15), so the sum fits.
        (128 + self.number()) as u8
    }
}

impl StopRequest {
    /// A request no signal will ever set (bench, tests); [`StopRequest::request`] still works.
    pub fn never() -> Self {
        Self::default()
    }

    /// Installs the handlers for SIGINT and SIGTERM. The first signal of either kind is
    /// recorded; any later one exits the process at once with that signal's exit code.
    pub fn install() -> std::io::Result<Self> {
        let request = Self::default();
        let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
        for signal in [StopSignal::Interrupt, StopSignal::Terminate] {
            let n = signal.number();
            // Handlers run in the order registered: the exit check must see the flag as it was
            // before this signal sets it.
            signal_hook::flag::register_conditional_shutdown(
                n,
                i32::from(signal.exit_code()),
                stopping.clone(),
            )?;
            signal_hook::flag::register(n, stopping.clone())?;
            // `n` is 2 or 15: a valid usize.
            signal_hook::flag::register_usize(n, request.signal.clone(), n as usize)?;
        }
        Ok(request)
    }

    /// Asks for a stop as if `signal` had arrived (the first one wins).
    pub fn request(&self, signal: StopSignal) {
        let _ = self.signal.compare_exchange(
            0,
            signal.number() as usize,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }

    /// The signal received, if one was.
    pub fn signal(&self) -> Option<StopSignal> {
        StopSignal::from_number(self.signal.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(StopSignal::Interrupt.exit_code(), 130);
        assert_eq!(StopSignal::Terminate.exit_code(), 143);
    }

    #[test]
    fn the_first_request_wins() {
        let stop = StopRequest::never();
        assert_eq!(stop.signal(), None);
        stop.request(StopSignal::Terminate);
        stop.request(StopSignal::Interrupt);
        assert_eq!(stop.signal(), Some(StopSignal::Terminate));
        assert_eq!(stop.clone().signal(), Some(StopSignal::Terminate));
    }
}
