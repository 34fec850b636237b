//! PDF to plain text: the text layer, extracted without letting a bad file panic the run.
//!
//! pdf-extract (on lopdf) reads real-world PDFs well but panics on some malformed ones
//! (`unwrap`s and `panic!`s on unexpected objects). Extraction runs inside
//! [`catch_quietly`], and a panic becomes the document's error, printed nowhere else.

use crate::panic_guard::catch_quietly;

/// The text layer of a PDF, tidied (see [`tidy`]); a PDF without one gives an empty text.
/// The error says why the file could not be read (it does not name the file).
pub fn pdf_to_text(bytes: &[u8]) -> Result<String, String> {
    // The extractor holds no state of ours, so nothing can be seen half-updated after a panic.
    match catch_quietly(|| pdf_extract::extract_text_from_mem(bytes)) {
        Ok(Ok(text)) => Ok(tidy(&text)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(message) => Err(format!("the PDF reader failed: {message}")),
    }
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
    fn a_truncated_pdf_is_an_error() {
        let bytes = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/sample-data/docs/fhs-3.0.pdf"
        ))
        .expect("sample PDF present");
        for cut in [10, 1000, bytes.len() / 2] {
            // A reader's panic is caught and becomes an error too.
            let err = pdf_to_text(&bytes[..cut]).expect_err("a cut PDF has no text layer");
            assert!(!err.is_empty(), "cut at {cut}");
        }
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
