//! Bounded extraction: a document's file may be a bomb (a PDF whose streams inflate to
//! gigabytes, a file that sends a parser into a loop), so HTML and PDF text is extracted in a
//! child process of docanalyze itself (`docanalyze extract-text`, hidden) under a memory limit
//! and a deadline. A document over a bound becomes its own error record; the run goes on, and
//! `--resume` can finish, since the same bound stops the same document the same way.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use wait_timeout::ChildExt;

use super::text::{extract_in_process, TextKind};
use crate::byte_size::ByteSize;

/// Exit code of an extraction child whose document could not be read (message on stderr).
const EXIT_UNREADABLE: u8 = 3;
/// How much of a child's stderr is kept for the error message.
const STDERR_KEPT: u64 = 16 * 1024;

/// Bounds on reading one document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtractLimits {
    /// Largest input file, and largest extracted text (`--max-document-bytes`).
    pub max_document_bytes: ByteSize,
    /// Address space of an extraction child (`--extract-memory`).
    pub memory: ByteSize,
    /// Wall-clock time of an extraction child (`--extract-timeout`).
    pub timeout: Duration,
}

impl ExtractLimits {
    pub const DEFAULT_MAX_DOCUMENT_BYTES: ByteSize = ByteSize(64 << 20);
    pub const DEFAULT_MEMORY: ByteSize = ByteSize(512 << 20);
    pub const DEFAULT_TIMEOUT_S: u64 = 60;
}

impl Default for ExtractLimits {
    fn default() -> Self {
        Self {
            max_document_bytes: Self::DEFAULT_MAX_DOCUMENT_BYTES,
            memory: Self::DEFAULT_MEMORY,
            timeout: Duration::from_secs(Self::DEFAULT_TIMEOUT_S),
        }
    }
}

/// How files become text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extractor {
    pub limits: ExtractLimits,
    /// The docanalyze binary that extracts HTML and PDF in a child process; `None` extracts
    /// in this process, bounded by the input size only (for tests and library callers).
    pub worker: Option<PathBuf>,
}

impl Extractor {
    pub fn in_process(limits: ExtractLimits) -> Self {
        Self {
            limits,
            worker: None,
        }
    }

    /// Extraction in children of the running binary (falls back to this process, with a
    /// warning, if the binary cannot be found).
    pub fn child_processes(limits: ExtractLimits) -> Self {
        match std::env::current_exe() {
            Ok(exe) => Self {
                limits,
                worker: Some(exe),
            },
            Err(e) => {
                tracing::warn!(
                    "cannot find the docanalyze binary ({e}): HTML and PDF are extracted without memory and time limits"
                );
                Self::in_process(limits)
            }
        }
    }

    /// The text of `path`; errors are messages naming the file.
    pub fn read(&self, path: &Path, kind: TextKind) -> Result<String, String> {
        let max = self.limits.max_document_bytes;
        let size = std::fs::metadata(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?
            .len();
        if size > max.0 {
            return Err(format!(
                "{}: the file is {size} bytes, over the --max-document-bytes limit of {max}",
                path.display()
            ));
        }
        let text = match (&self.worker, kind) {
            (Some(exe), TextKind::Html | TextKind::Pdf) => self.read_in_child(exe, path, kind)?,
            _ => extract_in_process(path, kind)?,
        };
        check_text_size(path, &text, max)?;
        Ok(text)
    }

    fn read_in_child(&self, exe: &Path, path: &Path, kind: TextKind) -> Result<String, String> {
        let limits = self.limits;
        let mut child = Command::new(exe)
            .arg("extract-text")
            .arg("--kind")
            .arg(kind.name())
            .arg("--max-document-bytes")
            .arg(limits.max_document_bytes.0.to_string())
            .arg("--memory")
            .arg(limits.memory.0.to_string())
            .arg("--cpu-seconds")
            .arg((limits.timeout.as_secs() + 1).to_string())
            .arg("--")
            .arg(path)
            .env("DOCANALYZE_LOG", "error")
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                format!(
                    "{}: cannot start the text extractor {}: {e}",
                    path.display(),
                    exe.display()
                )
            })?;
        let stdout = child.stdout.take().map(|out| {
            let cap = limits.max_document_bytes.0.saturating_add(1);
            std::thread::spawn(move || read_capped(out, cap))
        });
        let stderr = child
            .stderr
            .take()
            .map(|err| std::thread::spawn(move || read_capped(err, STDERR_KEPT)));
        let waited = child.wait_timeout(limits.timeout);
        if !matches!(waited, Ok(Some(_))) {
            // Past the deadline (or the wait failed): the child must not outlive its document.
            let _ = child.kill();
            let _ = child.wait();
        }
        let name = path.display();
        let timed_out = || {
            format!(
                "{name}: cannot extract text: it exceeds the extraction time limit of {} s (--extract-timeout)",
                limits.timeout.as_secs()
            )
        };
        // The child has ended: its pipes are closed and the readers finish.
        let text = stdout.and_then(|t| t.join().ok()).unwrap_or_default();
        let message = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
        let message = String::from_utf8_lossy(&message);
        let message = message.trim();
        let status = waited
            .map_err(|e| format!("{name}: waiting for the text extractor: {e}"))?
            .ok_or_else(timed_out)?;
        if status.success() {
            return String::from_utf8(text)
                .map_err(|_| format!("{name}: the text extractor wrote invalid UTF-8"));
        }
        if message.contains("memory allocation of") || message.contains("out of memory") {
            return Err(format!(
                "{name}: cannot extract text: it exceeds the extraction limit of {} of memory (--extract-memory)",
                limits.memory
            ));
        }
        if status.code() == Some(i32::from(EXIT_UNREADABLE)) && !message.is_empty() {
            return Err(message.to_string());
        }
        if cpu_time_exceeded(&status) {
            return Err(timed_out());
        }
        Err(format!(
            "{name}: cannot extract text: the extractor failed ({status}){}",
            if message.is_empty() {
                String::new()
            } else {
                format!(": {message}")
            }
        ))
    }
}

fn check_text_size(path: &Path, text: &str, max: ByteSize) -> Result<(), String> {
    if text.len() as u64 > max.0 {
        return Err(format!(
            "{}: its text is over the --max-document-bytes limit of {max}",
            path.display()
        ));
    }
    Ok(())
}

fn read_capped(reader: impl Read, cap: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    let _ = reader.take(cap).read_to_end(&mut bytes);
    bytes
}

#[cfg(unix)]
fn cpu_time_exceeded(status: &std::process::ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.signal() == Some(libc::SIGXCPU)
}

#[cfg(not(unix))]
fn cpu_time_exceeded(_: &std::process::ExitStatus) -> bool {
    false
}

/// The child's side (`docanalyze extract-text`): limits itself, extracts, writes the text.
pub fn worker_main(
    path: &Path,
    kind: TextKind,
    max_document_bytes: ByteSize,
    memory: ByteSize,
    cpu_seconds: u64,
) -> ExitCode {
    if let Err(e) = limit_self(memory.0, cpu_seconds) {
        eprintln!("{}: cannot limit the text extractor: {e}", path.display());
        return ExitCode::from(EXIT_UNREADABLE);
    }
    let extractor = Extractor::in_process(ExtractLimits {
        max_document_bytes,
        memory,
        timeout: Duration::from_secs(cpu_seconds),
    });
    match extractor.read(path, kind) {
        Ok(text) => {
            let mut out = std::io::stdout().lock();
            match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::from(EXIT_UNREADABLE),
            }
        }
        Err(message) => {
            eprintln!("{message}");
            ExitCode::from(EXIT_UNREADABLE)
        }
    }
}

/// Caps this process's address space and CPU time.
#[cfg(unix)]
fn limit_self(memory: u64, cpu_seconds: u64) -> std::io::Result<()> {
    let set = |resource, value: u64| {
        let limit = libc::rlimit {
            rlim_cur: value as libc::rlim_t,
            rlim_max: value as libc::rlim_t,
        };
        // SAFETY: setrlimit reads the struct it is given and changes only this process's limits.
        if unsafe { libc::setrlimit(resource, &limit) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    set(libc::RLIMIT_AS, memory)?;
    set(libc::RLIMIT_CPU, cpu_seconds)
}

#[cfg(not(unix))]
fn limit_self(_: u64, _: u64) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_over_the_size_limit_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("big.txt");
        std::fs::write(&path, vec![b'a'; 2000]).expect("write");
        let limits = ExtractLimits {
            max_document_bytes: ByteSize(1000),
            ..ExtractLimits::default()
        };
        let err = Extractor::in_process(limits)
            .read(&path, TextKind::Plain)
            .unwrap_err();
        assert!(
            err.ends_with(
                "the file is 2000 bytes, over the --max-document-bytes limit of 1000 bytes"
            ),
            "{err}"
        );
        let ok = Extractor::in_process(ExtractLimits::default()).read(&path, TextKind::Plain);
        assert_eq!(ok.map(|t| t.len()), Ok(2000));
    }

    #[test]
    fn extracted_text_over_the_limit_is_refused() {
        let path = Path::new("page.html");
        let err = check_text_size(path, &"x".repeat(1001), ByteSize(1000)).unwrap_err();
        assert_eq!(
            err,
            "page.html: its text is over the --max-document-bytes limit of 1000 bytes"
        );
        assert!(check_text_size(path, &"x".repeat(1000), ByteSize(1000)).is_ok());
    }
}
