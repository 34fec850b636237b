//! PDF to plain text: the text layer, extracted without letting a bad file panic the run.
//!
//! pdf-extract (on lopdf) reads real-world PDFs well but panics on some malformed ones
//! (`unwrap`s and `panic!`s on unexpected objects). Extraction runs inside `catch_unwind`, and a
//! panic becomes the document's error. The panic message is captured by a panic hook that is
//! silent only on a thread that is extracting, so a caught panic does not print a backtrace
//! notice over the progress bar while every other panic is reported as before.

use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// `Some` while this thread extracts a PDF: the message of a panic raised meanwhile.
    static CAUGHT_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// The text layer of a PDF, tidied (see [`tidy`]); a PDF without one gives an empty text.
/// The error says why the file could not be read (it does not name the file).
pub fn pdf_to_text(bytes: &[u8]) -> Result<String, String> {
    install_quiet_hook();
    CAUGHT_PANIC.with(|c| *c.borrow_mut() = Some(String::new()));
    // The extractor holds no state of ours, so nothing can be seen half-updated after a panic.
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        pdf_extract::extract_text_from_mem(bytes)
    }));
    let caught = CAUGHT_PANIC.with(|c| c.borrow_mut().take());
    match result {
        Ok(Ok(text)) => Ok(tidy(&text)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(payload) => {
            let message = caught
                .filter(|m| !m.is_empty())
                .or_else(|| payload_message(payload.as_ref()))
                .unwrap_or_else(|| "unknown error".to_string());
            Err(format!("the PDF reader failed: {message}"))
        }
    }
}

/// Chains a hook in front of the current one, once per process: while [`CAUGHT_PANIC`] is
/// armed on the panicking thread, the message is stored there instead of printed.
fn install_quiet_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let stored = CAUGHT_PANIC
                .try_with(|c| match c.try_borrow_mut() {
                    Ok(mut slot) => match slot.as_mut() {
                        Some(message) => {
                            *message = info.payload_as_str().unwrap_or_default().to_string();
                            if let Some(at) = info.location() {
                                // `…/registry/src/index…/crate-1.2.3/src/x.rs` → `crate-1.2.3/src/x.rs`
                                let file = at.file();
                                let file = file
                                    .split_once("/registry/src/")
                                    .and_then(|(_, rest)| rest.split_once('/'))
                                    .map_or(file, |(_, short)| short);
                                message.push_str(&format!(" (at {file}:{})", at.line()));
                            }
                            true
                        }
                        None => false,
                    },
                    Err(_) => false,
                })
                .unwrap_or(false);
            if !stored {
                previous(info);
            }
        }));
    });
}

fn payload_message(payload: &(dyn std::any::Any + Send)) -> Option<String> {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
}

/// Makes extracted text read like text: runs of spaces and tabs (PDF layout spacing) become
/// one space, lines lose trailing blanks, form feeds become paragraph breaks, and there is
/// at most one blank line in a row.
fn tidy(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut blank_lines = 0usize;
    for line in raw.replace('\x0c', "\n\n").split('\n') {
        let mut words = line.split([' ', '\t', '\r']).filter(|w| !w.is_empty());
        let Some(first) = words.next() else {
            blank_lines += 1;
            continue;
        };
        if !out.is_empty() {
            out.push_str(if blank_lines > 0 { "\n\n" } else { "\n" });
        }
        blank_lines = 0;
        out.push_str(first);
        for w in words {
            out.push(' ');
            out.push_str(w);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let err = pdf_to_text(b"this is not a pdf").unwrap_err();
        assert!(!err.is_empty());
    }

    #[test]
    fn a_truncated_pdf_is_an_error_not_a_panic() {
        let bytes = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/sample-data/docs/fhs-3.0.pdf"
        ))
        .expect("sample PDF present");
        for cut in [10, 1000, bytes.len() / 2] {
            // Either an error or some text; what matters is that it returns.
            let _ = pdf_to_text(&bytes[..cut]);
        }
    }

    #[test]
    fn panics_inside_extraction_become_errors() {
        install_quiet_hook();
        CAUGHT_PANIC.with(|c| *c.borrow_mut() = Some(String::new()));
        let result = panic::catch_unwind(|| panic!("boom {}", 7));
        let caught = CAUGHT_PANIC.with(|c| c.borrow_mut().take());
        assert!(result.is_err());
        let caught = caught.expect("the hook stored the message");
        assert!(caught.starts_with("boom 7 (at "), "{caught}");
    }

    #[test]
    fn the_sample_pdf_has_text() {
        let bytes = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/sample-data/docs/fhs-3.0.pdf"
        ))
        .expect("sample PDF present");
        let text = pdf_to_text(&bytes).expect("extracts");
        assert!(text.contains("Filesystem Hierarchy Standard"));
        assert!(text.contains("This standard consists of a set of requirements"));
    }

    #[test]
    fn tidy_collapses_layout_spacing() {
        assert_eq!(tidy("  a  b\t c  \n\n\n\nd\x0ce\n"), "a b c\n\nd\n\ne");
    }
}
